"""Names, funding files, store files re-imported through their Hive paths, damaged partitions."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import polars as pl
import pytest

from engine.data import Store, import_paths, load_candles, load_funding
from engine.data.csvfile import gunzip
from engine.data.naming import PathHints, path_hints
from engine.data.schema import Dataset
from engine.errors import DataError

from .conftest import run_cli, snapshot


@pytest.mark.parametrize(
    ("path", "hints"),
    [
        (
            "binance-usdm/klines/BTCUSDT-1m-2023-07.csv.gz",
            PathHints("klines", "usdm", "BTCUSDT", "1m"),
        ),
        (
            "binance-usdm/fundingRate/ETHUSDT-fundingRate.csv.gz",
            PathHints("funding", "usdm", "ETHUSDT", None),
        ),
        (
            "binance-usdm/markPriceKlines/BTCUSDT-8h.csv.gz",
            PathHints("markprice", "usdm", "BTCUSDT", "8h"),
        ),
        (
            "data/spot/daily/klines/ETHUSDT/15m/ETHUSDT-15m-2025-01-02.zip",
            PathHints("klines", "spot", "ETHUSDT", "15m"),
        ),
        (
            "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip",
            PathHints("funding", "usdm", "BTCUSDT", None),
        ),
        (
            "freqtrade/futures/BTC_USDT_USDT-5m-futures.feather",
            PathHints(None, "usdm", "BTCUSDT", "5m"),
        ),
        (
            "freqtrade/BTC_USDT_USDT-8h-mark.feather",
            PathHints("markprice", "usdm", "BTCUSDT", "8h"),
        ),
        (
            "freqtrade/BTC_USDT_USDT-8h-funding_rate.feather",
            PathHints("funding", "usdm", "BTCUSDT", "8h"),
        ),
        ("freqtrade/ETH_USDT-1h.feather", PathHints(None, None, "ETHUSDT", "1h")),
        (
            "s/klines/market=spot/symbol=BTCUSDT/interval=1h/month=2023-01/data.parquet",
            PathHints("klines", "spot", "BTCUSDT", "1h"),
        ),
        ("notes/prices.csv", PathHints(None, None, None, None)),
    ],
)
def test_path_hints(path: str, hints: PathHints) -> None:
    assert path_hints(Path("/x") / path) == hints


def test_coin_margined_is_refused() -> None:
    with pytest.raises(DataError, match="coin-margined"):
        path_hints(
            Path("/x/data/futures/cm/monthly/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2024-01.zip")
        )


def test_store_files_reimport_through_their_hive_paths(usdm_store: Path, tmp_path: Path) -> None:
    r = run_cli(
        "data",
        "import",
        usdm_store / "klines" / "market=usdm" / "symbol=ETHUSDT",
        "--store",
        tmp_path / "s",
    )
    assert r.exit_code == 0, r.output
    for iv in ("1m", "5m", "15m", "1h"):
        a = load_candles("ETHUSDT", iv, store=tmp_path / "s")
        assert a.equals(load_candles("ETHUSDT", iv, store=usdm_store))
    assert {d.symbol for d in Store(tmp_path / "s").datasets()} == {"ETHUSDT"}


def test_funding_jitter_beyond_a_minute_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "fundingRate" / "BTCUSDT-fundingRate.csv"
    f.parent.mkdir()
    f.write_text(
        "calc_time,funding_interval_hours,last_funding_rate\n"
        "1672531200000,8,0.0001\n1672560000008,8,0.0001\n1672588900000,8,0.0002\n"
    )
    r = run_cli("data", "import", f, "--store", tmp_path / "s")
    assert (
        r.exit_code == 1 and "line 4" in r.stderr and "more than a minute from the hour" in r.stderr
    )
    assert snapshot(tmp_path / "s") == {}


def test_headerless_funding_and_spot_funding_refused(tmp_path: Path) -> None:
    f = tmp_path / "BTCUSDT-fundingRate-2023-01.csv"
    f.write_text("1672531200003,8,0.0001\n1672560000001,8,-0.00002\n")
    import_paths([f], store=tmp_path / "s")
    got = load_funding("BTCUSDT", store=tmp_path / "s")
    assert got.rows() == [(1672531200000, 0.0001), (1672560000000, -0.00002)]
    with pytest.raises(DataError, match="funding data exists only for USD-M"):
        import_paths([f], store=tmp_path / "s", market="spot")


def test_damaged_partition_is_named(usdm_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    import_paths([usdm_dir / "klines" / "BTCUSDT-1h.csv.gz"], store=store)
    part = Store(store).partition_path(Dataset("klines", "usdm", "BTCUSDT", "1h"), "2023-06")
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(DataError, match="month=2023-06/data.parquet: cannot read this store file"):
        load_candles("BTCUSDT", "1h", start="2023-05-01", end="2023-07-31", store=store)
    # other months still load
    assert (
        load_candles("BTCUSDT", "1h", start="2023-07-01", end="2023-07-31", store=store).height
        == 31 * 24
    )
    r = run_cli("data", "import", usdm_dir / "klines" / "BTCUSDT-1h.csv.gz", "--store", store)
    assert r.exit_code == 1 and "month=2023-06" in r.stderr


def test_months_with_and_without_extra_columns_load_together(
    vision_mirror: Path, usdm_dir: Path, tmp_path: Path
) -> None:
    """A month from a 6-column source and one from Vision's 12 columns align their columns."""
    with gzip.open(usdm_dir / "klines" / "BTCUSDT-1h.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    six = tmp_path / "six" / "spot" / "BTCUSDT-1h.csv"
    six.parent.mkdir(parents=True)
    jan = [ln for ln in lines[1:] if 1672531200000 <= int(ln.split(",")[0]) < 1675209600000]
    six.write_text(
        "\n".join([lines[0], *jan]) + "\n"
    )  # futures prices, stored as if spot, Jan 2023
    feb = vision_mirror / "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2023-02.zip"
    shutil.copy(feb, tmp_path / "BTCUSDT-1h-2023-02.zip")
    store = tmp_path / "s"
    import_paths([six, tmp_path / "BTCUSDT-1h-2023-02.zip"], store=store, market="spot")
    df = load_candles("BTCUSDT", "1h", market="spot", store=store)
    assert df.height == (31 + 28) * 24
    assert df["trades"].null_count() == 31 * 24 and df["trades"].dtype == pl.Int64
    jan_only = load_candles("BTCUSDT", "1h", market="spot", end="2023-01-31", store=store)
    assert "trades" not in jan_only.columns


def test_gunzip_matches_gzip_for_one_and_several_members(usdm_dir: Path) -> None:
    raw = (usdm_dir / "klines" / "ETHUSDT-1h.csv.gz").read_bytes()
    assert gunzip(raw, source="f") == gzip.decompress(raw)
    two = gzip.compress(b"a,b\n") + gzip.compress(b"1,2\n")  # `cat x.gz y.gz` is valid gzip
    assert gunzip(two, source="f") == b"a,b\n1,2\n"
    assert gunzip(gzip.compress(b""), source="f") == b""


def test_gunzip_rejects_a_bad_checksum_and_trailing_junk() -> None:
    data = bytearray(gzip.compress(b"1,2,3\n" * 100))
    data[-8] ^= 1  # the member's CRC-32
    with pytest.raises(DataError, match="f: cannot read"):
        gunzip(bytes(data), source="f")
    with pytest.raises(DataError, match="f: cannot read"):
        gunzip(gzip.compress(b"1,2\n") + b"not gzip at all, but long enough", source="f")
