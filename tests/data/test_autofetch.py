"""The loaders fetch what the store lacks from Binance Vision (ENGINE_VISION_URL), tested
against a real HTTP server on 127.0.0.1 serving the USD-M Vision layout made from the real
recordings (``usdm_vision``): the same files, checksums and code as ``engine data download``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data import import_paths, load_candles, load_funding, load_mark_price
from engine.errors import DataError

from .conftest import snapshot

REPO = Path(__file__).resolve().parents[2]
UM = "data/futures/um/monthly"


def tables(store: Path) -> dict[str, bytes]:
    """The store's tables, byte for byte (the download cache and the lock left out)."""
    return {k: v for k, v in snapshot(store).items() if not k.startswith(("_downloads", ".lock"))}


@pytest.fixture
def vision_env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Point ENGINE_VISION_URL at a server (no local folder named)."""
    monkeypatch.delenv("ENGINE_LOCAL_DATA", raising=False)

    def use(url: str) -> None:
        monkeypatch.setenv("ENGINE_VISION_URL", url)

    return use


def test_missing_bars_are_fetched_checked_and_imported(
    usdm_vision: Path, usdm_store: Path, vision_server, vision_env, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    seen: list[tuple[str, int, int | None]] = []
    with vision_server(usdm_vision) as srv:
        vision_env(srv.url)
        df = load_candles(
            "BTCUSDT",
            "1h",
            start="2023-01-01",
            end="2023-03-31",
            store=store,
            progress=lambda task, done, total: seen.append((task, done, total)),
        )
        names = [f"BTCUSDT-1h-2023-0{m}.zip" for m in (1, 2, 3)]
        assert sorted(srv.requests) == sorted(
            f"/{UM}/klines/BTCUSDT/1h/{n}{suffix}" for n in names for suffix in ("", ".CHECKSUM")
        )
        srv.requests.clear()
        again = load_candles("BTCUSDT", "1h", start="2023-01-01", end="2023-03-31", store=store)
        assert srv.requests == []  # covered now: nothing fetched twice
    expected = load_candles("BTCUSDT", "1h", start="2023-01-01", end="2023-03-31", store=usdm_store)
    assert df.height == (31 + 28 + 31) * 24 and df.equals(expected) and again.equals(expected)
    # progress: the three downloads, then the three imports (file name, done, total)
    assert seen[:4] == [(names[0], 0, 3)] + [(n, k, 3) for k, n in enumerate(names, 1)]
    assert [s[1:] for s in seen[4:]] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    cache = store / "_downloads" / UM / "klines/BTCUSDT/1h"
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        n + suffix for n in names for suffix in ("", ".CHECKSUM")
    )


def test_only_the_missing_edges_are_fetched(
    usdm_vision: Path, vision_server, vision_env, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    feb = usdm_vision / UM / "klines/ETHUSDT/5m/ETHUSDT-5m-2023-02.zip"
    import_paths([feb], store=store)
    with vision_server(usdm_vision) as srv:
        vision_env(srv.url)
        df = load_candles("ETHUSDT", "5m", start="2023-01-01", end="2023-03-31", store=store)
        assert sorted(srv.zip_requests()) == [
            f"/{UM}/klines/ETHUSDT/5m/ETHUSDT-5m-2023-0{m}.zip" for m in (1, 3)
        ]
    assert df.height == (31 + 28 + 31) * 288
    assert df["open_time"].is_sorted() and df["open_time"].n_unique() == df.height


def test_funding_and_mark_price_are_fetched(
    usdm_vision: Path, usdm_store: Path, vision_server, vision_env, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    with vision_server(usdm_vision) as srv:
        vision_env(srv.url)
        f = load_funding("ETHUSDT", start="2024-01-01", end="2024-02-29", store=store)
        m = load_mark_price("ETHUSDT", "8h", start="2024-01-01", end="2024-02-29", store=store)
        assert sorted(srv.zip_requests()) == [
            f"/{UM}/fundingRate/ETHUSDT/ETHUSDT-fundingRate-2024-0{k}.zip" for k in (1, 2)
        ] + [f"/{UM}/markPriceKlines/ETHUSDT/8h/ETHUSDT-8h-2024-0{k}.zip" for k in (1, 2)]
    assert f.height == (31 + 29) * 3 and f.equals(
        load_funding("ETHUSDT", start="2024-01-01", end="2024-02-29", store=usdm_store)
    )
    assert m.height == (31 + 29) * 3 and m.equals(
        load_mark_price("ETHUSDT", "8h", start="2024-01-01", end="2024-02-29", store=usdm_store)
    )


def test_a_file_missing_on_the_site_is_a_data_error_and_changes_no_table(
    usdm_vision: Path, vision_server, vision_env, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    import_paths([usdm_vision / UM / "klines/BTCUSDT/1h/BTCUSDT-1h-2023-02.zip"], store=store)
    before = tables(store)
    with vision_server(usdm_vision) as srv:
        vision_env(srv.url)
        with pytest.raises(DataError) as err:  # March is on the site, April is not
            load_candles("BTCUSDT", "1h", start="2023-02-01", end="2023-04-30", store=store)
    msg, hint = err.value.message, err.value.hint or ""
    assert "no bars from 2023-03-01 00:00 to 2023-04-30 23:00 UTC for usdm BTCUSDT 1h klines" in msg
    assert "fetching it from Binance Vision failed: 1 file(s) not found on" in msg
    assert f"{srv.url}/{UM}/klines/BTCUSDT/1h/BTCUSDT-1h-2023-04.zip" in msg
    assert (
        f"engine data download --market usdm --symbol BTCUSDT --interval 1h --start 2023-03-01"
        f" --end 2023-04-30 --store {store}" in hint
    )
    assert "ENGINE_LOCAL_DATA=DIR" in hint
    assert tables(store) == before  # March was fetched and verified, but not imported
    assert list(store.rglob("*.part")) == []


def test_a_bad_checksum_is_a_data_error_and_changes_no_table(
    usdm_vision: Path, vision_server, vision_env, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    shutil.copytree(usdm_vision / UM / "klines/ETHUSDT/1h", site / UM / "klines/ETHUSDT/1h")
    ck = site / UM / "klines/ETHUSDT/1h/ETHUSDT-1h-2023-02.zip.CHECKSUM"
    text = ck.read_text()
    ck.write_text(("f" if text[0] != "f" else "e") + text[1:])
    store = tmp_path / "s"
    with vision_server(site) as srv:
        vision_env(srv.url)
        with pytest.raises(DataError, match=r"ETHUSDT-1h-2023-02.zip: checksum mismatch"):
            load_candles("ETHUSDT", "1h", start="2023-01-01", end="2023-03-31", store=store)
    assert tables(store) == {}
    cache = store / "_downloads" / UM / "klines/ETHUSDT/1h"
    assert not (cache / "ETHUSDT-1h-2023-02.zip").exists()  # the bad file is deleted


def test_an_unreachable_site_is_a_data_error(vision_env, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vision_env(f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as err:
        load_funding("BTCUSDT", start="2023-01-01", end="2023-01-31", store=tmp_path / "s")
    assert "no bars from 2023-01-01 00:00 to 2023-01-31 23:59 UTC for usdm BTCUSDT funding" in str(
        err.value
    )
    assert "fetching it from Binance Vision failed" in err.value.message
    assert "download failed after 4 attempts" in err.value.message
    assert "engine data download --market usdm --symbol BTCUSDT --data funding" in (
        err.value.hint or ""
    )
    assert tables(tmp_path / "s") == {}


def test_off_never_downloads(
    usdm_vision: Path, vision_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ENGINE_LOCAL_DATA", raising=False)
    monkeypatch.setenv("ENGINE_VISION_URL", "off")
    with vision_server(usdm_vision) as srv:
        with pytest.raises(DataError, match=r"ENGINE_VISION_URL=off: nothing downloaded"):
            load_candles("BTCUSDT", "1h", start="2023-01-01", end="2023-01-31", store=tmp_path)
        assert srv.requests == []


def test_a_local_folder_is_used_instead_and_a_missing_one_falls_back_to_vision(
    usdm_vision: Path,
    usdm_dir: Path,
    vision_server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with vision_server(usdm_vision) as srv:
        monkeypatch.setenv("ENGINE_VISION_URL", srv.url)
        monkeypatch.setenv("ENGINE_LOCAL_DATA", str(usdm_dir))
        a = load_candles(
            "ETHUSDT", "1h", start="2023-01-01", end="2023-01-31", store=tmp_path / "a"
        )
        assert srv.requests == []  # a local folder is named: nothing is downloaded
        absent = tmp_path / "no-such-folder"  # e.g. ../shared/data on a user's machine
        monkeypatch.setenv("ENGINE_LOCAL_DATA", str(absent))
        b = load_candles(
            "ETHUSDT", "1h", start="2023-01-01", end="2023-01-31", store=tmp_path / "b"
        )
        assert srv.zip_requests() == [f"/{UM}/klines/ETHUSDT/1h/ETHUSDT-1h-2023-01.zip"]
        with pytest.raises(DataError) as err:
            load_candles(
                "ETHUSDT", "1h", start="2023-04-01", end="2023-04-02", store=tmp_path / "b"
            )
    assert a.equals(b) and a.height == 31 * 24
    assert f"ENGINE_LOCAL_DATA={absent} is not a folder" in err.value.message


def test_the_backtest_runs_where_no_local_data_exists(
    usdm_vision: Path, usdm_store: Path, vision_server, tmp_path: Path
) -> None:
    """`engine backtest` over an empty store fetches its bars and funding from Vision and gives
    the same metrics as over the store imported from the recordings."""
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_LOCAL_DATA"}

    def backtest(store: Path, results: Path) -> dict[str, object]:
        cmd = [sys.executable, "-m", "engine", "backtest", str(REPO / "strategies/ema_cross.yaml"),
               "--json", "--start", "2024-01-01", "--end", "2024-02-29",
               "--store", str(store), "--results", str(results)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["metrics"]  # type: ignore[no-any-return]

    with vision_server(usdm_vision) as srv:
        env["ENGINE_VISION_URL"] = srv.url
        fetched = backtest(tmp_path / "empty", tmp_path / "r1")
        assert sorted(srv.zip_requests()) == sorted(
            path
            for sym in ("BTCUSDT", "ETHUSDT")
            for m in (1, 2)
            for path in (
                f"/{UM}/klines/{sym}/5m/{sym}-5m-2024-0{m}.zip",
                f"/{UM}/fundingRate/{sym}/{sym}-fundingRate-2024-0{m}.zip",
            )
        )
    assert fetched == backtest(usdm_store, tmp_path / "r2")
