"""Importing real data: every format, idempotent re-imports, merging, and `engine data list`."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest

from engine.data import Store, import_paths, load_candles, load_funding, load_mark_price
from engine.data.schema import Dataset

from .conftest import run_cli, snapshot

MIRROR_1H = Path("data/spot/monthly/klines/BTCUSDT/1h")


def test_usdm_store_holds_every_series(usdm_store: Path) -> None:
    got = {ds: None for ds in Store(usdm_store).datasets()}
    want = {
        Dataset(t, "usdm", s, i)
        for s in ("BTCUSDT", "ETHUSDT")
        for t, i in [
            ("klines", "1m"),
            ("klines", "5m"),
            ("klines", "15m"),
            ("klines", "1h"),
            ("funding", ""),
            ("markprice", "8h"),
        ]
    }
    assert set(got) == want


def test_list_shows_btc_5m(usdm_store: Path) -> None:
    result = run_cli("data", "list", "--store", usdm_store)
    assert result.exit_code == 0, result.output
    line = next(
        ln
        for ln in result.stdout.splitlines()
        if "BTCUSDT" in ln and " 5m " in ln and "klines" in ln
    )
    assert "2023-01-01 00:00" in line and "2024-05-14 15:35" in line and "143,900" in line
    assert line.split()[-1] == "0"  # no missing bars


def test_loaded_5m_equals_the_csv(usdm_store: Path, usdm_dir: Path) -> None:
    csv = pl.read_csv(usdm_dir / "klines" / "BTCUSDT-5m.csv.gz")
    df = load_candles("BTCUSDT", "5m", store=usdm_store)
    assert df.height == 143_900
    assert df.schema == pl.Schema(
        {
            "open_time": pl.Int64,
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        }
    )
    assert df.equals(csv.with_columns(pl.col(c).cast(pl.Float64) for c in csv.columns[1:]))


def test_funding_is_aligned_to_the_hour(usdm_store: Path, usdm_dir: Path) -> None:
    raw = pl.read_csv(usdm_dir / "fundingRate" / "BTCUSDT-fundingRate.csv.gz")
    assert (raw["calc_time"] % 3_600_000 != 0).sum() > 0  # the source carries jitter
    f = load_funding("BTCUSDT", store=usdm_store)
    assert f.columns == ["funding_time", "funding_rate"]
    assert f.height == raw.height == 1498
    assert (f["funding_time"] % (8 * 3_600_000) == 0).all()
    assert f["funding_rate"].to_list() == raw["last_funding_rate"].cast(pl.Float64).to_list()
    assert f["funding_time"].is_sorted() and f["funding_time"].n_unique() == f.height


def test_mark_price(usdm_store: Path, usdm_dir: Path) -> None:
    raw = pl.read_csv(usdm_dir / "markPriceKlines" / "ETHUSDT-8h.csv.gz")
    m = load_mark_price("ETHUSDT", "8h", store=usdm_store)
    assert m.columns == ["open_time", "open", "high", "low", "close"]
    assert m["open_time"].to_list() == raw["open_time"].to_list()
    assert m["low"].to_list() == raw["low"].cast(pl.Float64).to_list()


def test_1m_files_of_two_years_merge_into_one_series(usdm_store: Path) -> None:
    df = load_candles("ETHUSDT", "1m", store=usdm_store)
    assert df.height == 64_066 + 60_191
    assert df["open_time"].is_sorted() and df["open_time"].n_unique() == df.height


def test_reimport_changes_nothing(usdm_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    import_paths(
        [usdm_dir / "klines" / "BTCUSDT-15m.csv.gz", usdm_dir / "fundingRate"], store=store
    )
    before = snapshot(store)
    report = import_paths(
        [usdm_dir / "klines" / "BTCUSDT-15m.csv.gz", usdm_dir / "fundingRate"], store=store
    )
    assert report.rows_added == 0
    assert all(c.months_written == 0 for c in report.series.values())
    assert snapshot(store) == before


def test_overlapping_imports_merge_without_duplicates(usdm_dir: Path, tmp_path: Path) -> None:
    with gzip.open(usdm_dir / "klines" / "BTCUSDT-1h.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    header, rows = lines[0], lines[1:]
    a = tmp_path / "a" / "BTCUSDT-1h.csv"
    b = tmp_path / "b" / "BTCUSDT-1h.csv"
    for p, part in ((a, rows[:5000]), (b, rows[4000:9000])):
        p.parent.mkdir()
        p.write_text("\n".join([header, *part]) + "\n")
    store = tmp_path / "s"
    import_paths([a], store=store)
    report = import_paths([b], store=store)
    assert report.rows_added == 4000
    both = load_candles("BTCUSDT", "1h", store=store)
    full = pl.read_csv(usdm_dir / "klines" / "BTCUSDT-1h.csv.gz").head(9000)
    assert both["open_time"].to_list() == full["open_time"].to_list()
    # both halves at once merge the same way
    store2 = tmp_path / "s2"
    import_paths([a, b], store=store2)
    assert load_candles("BTCUSDT", "1h", store=store2).equals(both)


def test_vision_mirror_us_times_become_ms(vision_mirror: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    folder = vision_mirror / MIRROR_1H
    files = [folder / f"BTCUSDT-1h-{m}.zip" for m in ("2024-12", "2025-01")]
    import_paths(files, store=store)
    df = load_candles("BTCUSDT", "1h", market="spot", store=store)
    assert df.height == 31 * 24 * 2
    t = df["open_time"]
    assert t[0] == 1733011200000 and t[31 * 24] == 1735689600000  # 2024-12-01, 2025-01-01 in ms
    assert (t.diff().drop_nulls() == 3_600_000).all()
    assert df.columns[-4:] == [
        "quote_volume",
        "trades",
        "taker_buy_volume",
        "taker_buy_quote_volume",
    ]
    assert df.schema["trades"] == pl.Int64
    with zipfile.ZipFile(files[1]) as zf:
        first = zf.read(zf.namelist()[0]).decode().splitlines()[0].split(",")
    row = df.row(31 * 24, named=True)
    assert row["close"] == float(first[4]) and row["trades"] == int(first[8])
    assert row["taker_buy_quote_volume"] == float(first[10])


def test_whole_vision_mirror_imports(vision_mirror: Path, tmp_path: Path) -> None:
    result = run_cli("data", "import", vision_mirror, "--store", tmp_path / "s")
    assert result.exit_code == 0, result.output
    got = {(d.market, d.symbol, d.interval) for d in Store(tmp_path / "s").datasets()}
    assert got == {("spot", s, i) for s in ("BTCUSDT", "ETHUSDT") for i in ("1h", "15m")}
    df = load_candles("ETHUSDT", "15m", market="spot", store=tmp_path / "s")
    assert df["open_time"][0] == 1735516800000  # 2024-12-30 00:00, the mirror's first 15m bar


def test_futures_vision_csv_with_header(vision_mirror: Path, tmp_path: Path) -> None:
    """Vision futures files carry a header row; the same rows import to the same values."""
    with zipfile.ZipFile(vision_mirror / MIRROR_1H / "BTCUSDT-1h-2023-05.zip") as zf:
        body = zf.read(zf.namelist()[0]).decode()
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
    um = tmp_path / "data" / "futures" / "um" / "monthly" / "klines" / "BTCUSDT" / "1h"
    um.mkdir(parents=True)
    with zipfile.ZipFile(um / "BTCUSDT-1h-2023-05.zip", "w") as zf:
        zf.writestr("BTCUSDT-1h-2023-05.csv", header + "\n" + body)
    plain = tmp_path / "plain" / "spot" / "BTCUSDT-1h-2023-05.csv"
    plain.parent.mkdir(parents=True)
    plain.write_text(body)
    store = tmp_path / "s"
    import_paths([tmp_path / "data", plain], store=store)
    fut = load_candles("BTCUSDT", "1h", store=store)  # market from futures/um
    spot = load_candles("BTCUSDT", "1h", market="spot", store=store)
    assert fut.height == 31 * 24 and fut.equals(spot)


def test_feather_and_parquet(usdm_dir: Path, tmp_path: Path) -> None:
    csv = pl.read_csv(usdm_dir / "klines" / "ETHUSDT-15m.csv.gz").head(3000)
    ft = csv.with_columns(
        pl.from_epoch("open_time", time_unit="ms").dt.replace_time_zone("UTC").alias("date")
    ).select("date", "open", "high", "low", "close", "volume")
    (tmp_path / "ft").mkdir()
    ft.write_ipc(tmp_path / "ft" / "ETH_USDT_USDT-15m-futures.feather")
    pq_file = tmp_path / "pq" / "ETHUSDT-15m.parquet"
    pq_file.parent.mkdir()
    csv.write_parquet(pq_file)
    import_paths([tmp_path / "ft"], store=tmp_path / "s1")
    import_paths([pq_file], store=tmp_path / "s2")
    a = load_candles("ETHUSDT", "15m", store=tmp_path / "s1")
    b = load_candles("ETHUSDT", "15m", store=tmp_path / "s2")
    assert a.height == 3000 and a.equals(b)
    assert a["open_time"].to_list() == csv["open_time"].to_list()


def test_symbol_and_interval_from_options(usdm_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "prices.csv.gz"
    shutil.copy(usdm_dir / "klines" / "ETHUSDT-1h.csv.gz", f)
    result = run_cli(
        "data", "import", f, "--symbol", "ethusdt", "--interval", "1h", "--store", tmp_path / "s"
    )
    assert result.exit_code == 0, result.output
    assert load_candles("ETHUSDT", "1h", store=tmp_path / "s").height == 11_991
    result = run_cli("data", "import", f, "--store", tmp_path / "s2")
    assert result.exit_code == 1
    assert "cannot tell the symbol" in result.stderr and "--symbol" in result.stderr


def test_store_is_hive_partitioned_for_duckdb(usdm_store: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(
        f"select symbol, count(*) from read_parquet('{usdm_store}/klines/**/*.parquet', hive_partitioning=true)"
        " where interval = '5m' group by symbol order by symbol"
    ).fetchall()
    assert got == [("BTCUSDT", 143_900), ("ETHUSDT", 143_901)]


def _import_worker(path: str, store: str) -> None:
    import_paths([path], store=store)


def test_concurrent_imports_do_not_lose_rows(usdm_dir: Path, tmp_path: Path) -> None:
    """Two processes merging overlapping halves into one store at once: the lock serialises
    their read-merge-write, so the store ends with the union."""
    import multiprocessing as mp

    with gzip.open(usdm_dir / "klines" / "BTCUSDT-1h.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    halves = []
    for k, part in enumerate((lines[1:7000], lines[3000:])):
        p = tmp_path / f"h{k}" / "BTCUSDT-1h.csv"
        p.parent.mkdir()
        p.write_text("\n".join([lines[0], *part]) + "\n")
        halves.append(str(p))
    store = str(tmp_path / "s")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_import_worker, args=(h, store)) for h in halves]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    df = load_candles("BTCUSDT", "1h", store=store)
    assert (
        df.height == 11_991 and df["open_time"].is_sorted() and df["open_time"].n_unique() == 11_991
    )
