"""`engine data download` against a real HTTP server on 127.0.0.1 over the Vision mirror."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from engine.data import import_paths, load_candles
from engine.data.download import download, plan
from engine.errors import RunError, UsageError

from .conftest import run_cli, snapshot

TODAY = dt.date(2026, 4, 15)  # the mirror ends with 2026-03
REL = "data/spot/monthly/klines/{s}/{i}/{s}-{i}-{m}.zip"


def _months(first: str, last: str) -> list[str]:
    out = [first]
    while out[-1] < last:
        y, m = int(out[-1][:4]), int(out[-1][5:])
        out.append(f"{y + (m == 12):04d}-{m % 12 + 1:02d}")
    return out


def test_plan_monthly_then_daily() -> None:
    jan1 = 1_704_067_200_000
    todo = plan(
        ["BTCUSDT"],
        ["5m"],
        start=jan1,
        end=jan1 + 200 * 86_400_000,
        market="usdm",
        today=dt.date(2024, 4, 4),
    )
    names = [rf.name for rf, _ in todo]
    assert names[:3] == [f"BTCUSDT-5m-2024-0{m}.zip" for m in (1, 2, 3)]
    assert names[3:] == [f"BTCUSDT-5m-2024-04-0{d}.zip" for d in (1, 2, 3)]  # up to yesterday
    assert todo[0][0].path == "data/futures/um/monthly/klines/BTCUSDT/5m/BTCUSDT-5m-2024-01.zip"
    assert todo[0][1] == [] and len(todo[2][1]) == 31  # last month falls back to daily files


def test_plan_funding_and_mark_price() -> None:
    jan1 = 1_704_067_200_000
    kw = {"start": jan1, "end": jan1 + 100 * 86_400_000, "market": "usdm"}
    funding = plan(["ETHUSDT"], ["5m"], table="funding", today=dt.date(2024, 3, 5), **kw)
    assert [(rf.path, fb) for rf, fb in funding] == [
        (f"data/futures/um/monthly/fundingRate/ETHUSDT/ETHUSDT-fundingRate-2024-0{m}.zip", [])
        for m in (1, 2)  # no daily funding files: the current month (March) is not planned
    ]
    mark = plan(["ETHUSDT"], ["8h"], table="markprice", today=dt.date(2024, 3, 3), **kw)
    assert [rf.path for rf, _ in mark] == [
        "data/futures/um/monthly/markPriceKlines/ETHUSDT/8h/ETHUSDT-8h-2024-01.zip",
        "data/futures/um/monthly/markPriceKlines/ETHUSDT/8h/ETHUSDT-8h-2024-02.zip",
        "data/futures/um/daily/markPriceKlines/ETHUSDT/8h/ETHUSDT-8h-2024-03-01.zip",
        "data/futures/um/daily/markPriceKlines/ETHUSDT/8h/ETHUSDT-8h-2024-03-02.zip",
    ]
    assert len(mark[1][1]) == 29  # last month falls back to its daily files


def test_download_equals_import_and_resumes_from_cache(
    vision_mirror: Path, vision_server, tmp_path: Path
) -> None:
    store = tmp_path / "dl"
    with vision_server(vision_mirror) as srv:
        r = run_cli(
            "data", "download", "--symbol", "BTCUSDT,ETHUSDT", "--interval", "1h", "--market", "spot",
            "--start", "2024-11-01", "--end", "2025-02-28", "--vision-url", srv.url, "--store", store,
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert len(srv.zip_requests()) == 8 and len(srv.requests) == 16  # zip + CHECKSUM each
        srv.requests.clear()
        again = download(["BTCUSDT", "ETHUSDT"], ["1h"], start="2024-11-01", end="2025-02-28", market="spot",
                         store=store, base_url=srv.url, today=TODAY)  # fmt: skip
        assert srv.requests == [] and len(again.cached) == 8 and again.imported is not None
        assert again.imported.rows_added == 0
    imported = tmp_path / "imp"
    files = [
        vision_mirror / REL.format(s=s, i="1h", m=m)
        for s in ("BTCUSDT", "ETHUSDT")
        for m in _months("2024-11", "2025-02")
    ]
    import_paths(files, store=imported)
    for sym in ("BTCUSDT", "ETHUSDT"):
        a = load_candles(sym, "1h", market="spot", store=store)
        b = load_candles(sym, "1h", market="spot", store=imported)
        assert a.height == (30 + 31 + 31 + 28) * 24 and a.equals(b)
    tables = {k: v for k, v in snapshot(store).items() if not k.startswith(("_downloads", ".lock"))}
    assert tables == {k: v for k, v in snapshot(imported).items() if k != ".lock"}


def test_altered_checksum_is_rejected(vision_mirror: Path, vision_server, tmp_path: Path) -> None:
    root = tmp_path / "mirror"
    month_dir = vision_mirror / "data/spot/monthly/klines/BTCUSDT/1h"
    dst = root / "data/spot/monthly/klines/BTCUSDT/1h"
    dst.mkdir(parents=True)
    for m in ("2023-01", "2023-02", "2023-03"):
        for suffix in ("", ".CHECKSUM"):
            shutil.copy(month_dir / f"BTCUSDT-1h-{m}.zip{suffix}", dst)
    ck = dst / "BTCUSDT-1h-2023-02.zip.CHECKSUM"
    text = ck.read_text()
    ck.write_text(("f" if text[0] != "f" else "e") + text[1:])
    store = tmp_path / "s"
    with vision_server(root) as srv:
        r = run_cli(
            "data", "download", "--symbol", "BTCUSDT", "--interval", "1h", "--market", "spot",
            "--start", "2023-01-01", "--end", "2023-03-31", "--vision-url", srv.url, "--store", store,
        )  # fmt: skip
    assert r.exit_code == 1
    assert "BTCUSDT-1h-2023-02.zip: checksum mismatch" in r.stderr
    assert not (store / "klines").exists()  # nothing imported
    cache = store / "_downloads" / "data/spot/monthly/klines/BTCUSDT/1h"
    assert sorted(p.name for p in cache.iterdir()) == [
        "BTCUSDT-1h-2023-01.zip",
        "BTCUSDT-1h-2023-01.zip.CHECKSUM",
    ]


def test_dropped_connection_is_retried(vision_mirror: Path, vision_server, tmp_path: Path) -> None:
    target = "/" + REL.format(s="BTCUSDT", i="1h", m="2023-02")
    with vision_server(vision_mirror) as srv:
        srv.fail[target] = ["drop", 503]
        rep = download(["BTCUSDT"], ["1h"], start="2023-01-01", end="2023-03-31", market="spot",
                       store=tmp_path / "s", base_url=srv.url, today=TODAY, backoff=0.01)  # fmt: skip
        assert srv.requests.count(target) == 3  # dropped, 503, then whole
    assert len(rep.fetched) == 3
    assert (
        load_candles("BTCUSDT", "1h", market="spot", store=tmp_path / "s").height
        == (31 + 28 + 31) * 24 - 1
    )


def test_interrupted_download_resumes_with_only_the_rest(
    vision_mirror: Path, vision_server, tmp_path: Path
) -> None:
    store = tmp_path / "s"
    months = _months("2023-01", "2023-06")
    third = "/" + REL.format(s="BTCUSDT", i="1h", m=months[2])
    with vision_server(vision_mirror) as srv:
        srv.fail[third] = [500] * 3  # the server breaks down on the third file
        with pytest.raises(
            RunError, match=r"BTCUSDT-1h-2023-03.zip: download failed after 3 attempts: HTTP 500"
        ):
            download(["BTCUSDT"], ["1h"], start="2023-01-01", end="2023-06-30", market="spot",
                     store=store, base_url=srv.url, today=TODAY, retries=3, backoff=0.01)  # fmt: skip
        assert not (store / "klines").exists()
        parts = list(store.rglob("*.part"))
        assert parts == []
        srv.requests.clear()
        rep = download(["BTCUSDT"], ["1h"], start="2023-01-01", end="2023-06-30", market="spot",
                       store=store, base_url=srv.url, today=TODAY, backoff=0.01)  # fmt: skip
        fetched = sorted(p for p in srv.zip_requests())
        assert fetched == sorted("/" + REL.format(s="BTCUSDT", i="1h", m=m) for m in months[2:])
    assert len(rep.cached) == 2 and len(rep.fetched) == 4
    df = load_candles("BTCUSDT", "1h", market="spot", store=store)
    assert (
        df["open_time"][0] == 1_672_531_200_000 and df.height == 181 * 24 - 1
    )  # minus the 2023-03-24 halt


def test_missing_month_is_reported(vision_mirror: Path, vision_server, tmp_path: Path) -> None:
    with vision_server(vision_mirror) as srv:
        r = run_cli(
            "data", "download", "--symbol", "BTCUSDT", "--interval", "15m", "--market", "spot",
            "--start", "2024-11-01", "--end", "2025-01-31", "--vision-url", srv.url, "--store", tmp_path / "s",
        )  # fmt: skip
    assert r.exit_code == 1
    assert "missing on the server (1 file(s))" in r.stderr
    assert "BTCUSDT-15m-2024-11.zip" in r.stderr
    got = load_candles(
        "BTCUSDT", "15m", market="spot", store=tmp_path / "s"
    )  # the rest was imported
    assert got["open_time"][0] == 1_735_516_800_000 and got.height == (2 + 31) * 96


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="download failed after 2 attempts"):
        download(["BTCUSDT"], ["1h"], start="2023-01-01", end="2023-01-31", market="spot", store=tmp_path,
                 base_url="http://127.0.0.1:9", today=TODAY, retries=2, backoff=0.01, timeout=2)  # fmt: skip


def test_bad_options(tmp_path: Path) -> None:
    r = run_cli(
        "data",
        "download",
        "--symbol",
        "BTCUSDT",
        "--interval",
        "7m",
        "--start",
        "2023-01-01",
        "--store",
        tmp_path,
    )
    assert r.exit_code == 2 and "unknown interval '7m'" in r.stderr
    with pytest.raises(UsageError, match="is after --end"):
        download(
            ["BTCUSDT"], ["1h"], start="2023-02-01", end="2023-01-01", store=tmp_path, today=TODAY
        )
    with pytest.raises(UsageError, match="today or later"):
        download(["BTCUSDT"], ["1h"], start="2026-04-15", store=tmp_path, today=TODAY)


def test_cli_downloads_funding_and_mark_price(usdm_vision: Path, vision_server, tmp_path: Path) -> None:
    """``engine data download --data funding|markprice`` (the command the loaders' hints
    name) fetches and imports those tables; --data funding needs no --interval."""
    from engine.data import load_funding, load_mark_price

    store = tmp_path / "st"
    with vision_server(usdm_vision) as srv:
        r = run_cli("data", "download", "--symbol", "BTCUSDT", "--data", "funding",
                     "--start", "2024-01-01", "--end", "2024-01-31", "--vision-url", srv.url,
                     "--store", store)
        assert r.exit_code == 0, r.output
        r = run_cli("data", "download", "--symbol", "BTCUSDT", "--data", "markprice",
                    "--interval", "8h", "--start", "2024-01-01", "--end", "2024-01-31",
                    "--vision-url", srv.url, "--store", store)
        assert r.exit_code == 0, r.output
    f = load_funding("BTCUSDT", start="2024-01-01", end="2024-01-31T16:00", store=store)
    assert f.height == 31 * 3
    m = load_mark_price("BTCUSDT", "8h", start="2024-01-01", end="2024-01-31", store=store)
    assert m.height == 31 * 3
    bad = run_cli("data", "download", "--symbol", "BTCUSDT", "--data", "markprice",
                  "--start", "2024-01-01", "--store", tmp_path / "none")
    assert bad.exit_code == 2 and "--interval is needed for --data markprice" in bad.output
    assert not (tmp_path / "none").exists()
