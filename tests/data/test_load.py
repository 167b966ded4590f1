"""engine.data.load_candles / load_funding: the contract every later stage codes against."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from engine.data import load_candles, load_funding
from engine.errors import DataError, UsageError

from .conftest import snapshot

JAN1_2024 = 1_704_067_200_000
H = 3_600_000


def test_bounds_are_inclusive_and_accept_ms_iso_and_dates(usdm_store: Path) -> None:
    a = load_candles("BTCUSDT", "5m", start="2024-01-01", end="2024-01-31", store=usdm_store)
    assert a["open_time"][0] == JAN1_2024
    assert a["open_time"][-1] == JAN1_2024 + 31 * 24 * H - 300_000  # 2024-01-31 23:55
    assert a.height == 31 * 288
    b = load_candles(
        "BTCUSDT", "5m", start=JAN1_2024, end=JAN1_2024 + 31 * 24 * H - 1, store=usdm_store
    )
    assert b.equals(a)
    c = load_candles(
        "BTCUSDT", "5m", start=dt.date(2024, 1, 1), end="2024-01-31T23:55", store=usdm_store
    )
    assert c.equals(a)
    one = load_candles("BTCUSDT", "5m", start=JAN1_2024, end=JAN1_2024, store=usdm_store)
    assert one["open_time"].to_list() == [JAN1_2024]


def test_span_across_month_partitions_is_sorted_and_unique(usdm_store: Path) -> None:
    df = load_candles(
        "ETHUSDT", "1h", start="2023-03-31T20:00", end="2023-04-01T03:00", store=usdm_store
    )
    t = df["open_time"].to_list()
    assert len(t) == 8 and t == sorted(set(t))
    assert all(b - a == H for a, b in zip(t, t[1:], strict=False))


def test_missing_span_names_it_and_the_command(
    usdm_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENGINE_LOCAL_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_candles("BTCUSDT", "5m", start="2024-05-01", end="2024-06-30", store=usdm_store)
    msg = str(err.value)
    assert "usdm BTCUSDT 5m" in msg and "2024-05-14 15:40" in msg and "2024-06-30 23:55" in msg
    assert (
        "engine data download --market usdm --symbol BTCUSDT --interval 5m --start 2024-05-14 --end 2024-06-30"
        in msg
    )
    with pytest.raises(DataError, match="no data at all for usdm SOLUSDT 5m"):
        load_candles("SOLUSDT", "5m", store=usdm_store)
    with pytest.raises(DataError, match="no bars from 2022-12-01 00:00"):
        load_candles("BTCUSDT", "1h", start="2022-12-01", store=usdm_store)
    with pytest.raises(DataError, match="usdm ETHUSDT funding"):
        load_funding("ETHUSDT", end="2024-06-01", store=usdm_store)


def test_bad_arguments_are_usage_errors(usdm_store: Path) -> None:
    with pytest.raises(UsageError, match="unknown interval '7m'"):
        load_candles("BTCUSDT", "7m", store=usdm_store)
    with pytest.raises(UsageError, match="start 2024-02-01 00:00 is after end"):
        load_candles("BTCUSDT", "5m", start="2024-02-01", end="2024-01-01", store=usdm_store)
    with pytest.raises(UsageError, match="cannot read 'yesterday'"):
        load_candles("BTCUSDT", "5m", start="yesterday", store=usdm_store)
    with pytest.raises(UsageError, match="unknown market"):
        load_candles("BTCUSDT", "5m", market="coinm", store=usdm_store)


def test_funding_bounds(usdm_store: Path) -> None:
    f = load_funding("BTCUSDT", start="2024-01-01", end="2024-01-02", store=usdm_store)
    assert f["funding_time"].to_list() == [JAN1_2024 + k * 8 * H for k in range(6)]
    assert f.schema == pl.Schema({"funding_time": pl.Int64, "funding_rate": pl.Float64})


def test_local_data_env_imports_what_is_missing(
    usdm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "s"
    monkeypatch.setenv("ENGINE_LOCAL_DATA", str(usdm_dir))
    df = load_candles("ETHUSDT", "15m", start="2023-06-01", end="2023-06-30", store=store)
    assert df.height == 30 * 96
    # only the matching file was imported
    assert {p.parent.parent.name for p in store.rglob("data.parquet")} == {"interval=15m"}
    f = load_funding("ETHUSDT", start="2023-06-01", end="2023-06-02", store=store)
    assert f.height == 6
    before = snapshot(store)
    load_candles("ETHUSDT", "15m", start="2023-06-01", end="2023-06-30", store=store)
    assert snapshot(store) == before  # covered now: no second import
    with pytest.raises(DataError, match="no bars from 2024-05-14 15:45"):
        load_candles("ETHUSDT", "15m", start="2024-05-01", end="2024-05-20", store=store)


def test_default_store_is_engine_data(usdm_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_DATA", str(usdm_store))
    assert load_candles("BTCUSDT", "1h").height == 11_991


def test_edges_are_checked_to_the_day(usdm_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data that stops mid-day serves a request through that day; a day beyond it is missing."""
    monkeypatch.delenv("ENGINE_LOCAL_DATA", raising=False)
    df = load_candles("BTCUSDT", "5m", start="2024-05-14", end="2024-05-14", store=usdm_store)
    assert df["open_time"][-1] == 1_715_700_900_000  # 2024-05-14 15:35, the last stored bar
    assert df.height == 188
    # funding is strict: the recording ends at the 00:00 event, so 08:00 and 16:00 are missing
    f = load_funding("BTCUSDT", start="2024-05-14", end="2024-05-14T07:59", store=usdm_store)
    assert f["funding_time"].to_list() == [1_715_644_800_000]
    with pytest.raises(DataError, match="usdm BTCUSDT funding"):
        load_funding("BTCUSDT", start="2024-05-14", end="2024-05-14", store=usdm_store)
    with pytest.raises(DataError, match="no bars from 2024-05-14 15:40 to 2024-05-15 23:55"):
        load_candles("BTCUSDT", "5m", start="2024-05-14", end="2024-05-15", store=usdm_store)
