"""engine.decisions.market.load_market keeps the last markets it loaded: the same object for
the same arguments over the same stored files, a fresh load once a file changes (replaced,
or written in place with its size and mtime put back), the oldest dropped past the bound,
and nothing that runs on a kept market writes to it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.backtest import run_backtest
from engine.data import Store
from engine.data.schema import KLINES, Dataset
from engine.decisions.market import (
    MARKET_CACHE,
    Market,
    clear_market_cache,
    load_graph_market,
    load_market,
)
from engine.lookahead import lookahead_check
from engine.strategy import load_strategy
from engine.sweep import run_sweep

REPO = Path(__file__).resolve().parents[2]
EMA = REPO / "strategies" / "ema_cross.yaml"
MARCH = 1_709_251_200_000  # 2024-03-01 UTC
DAY = 86_400_000


@pytest.fixture(autouse=True)
def _no_kept_markets() -> Iterator[None]:
    """No market kept from an earlier test, none left for a later one."""
    clear_market_cache()
    yield
    clear_market_cache()


def _load(store: Path, days: int = 3) -> Market:
    return load_market(
        ["BTCUSDT"], "1h", start=MARCH, end=MARCH + days * DAY - 1, store=store, funding=False
    )


def _march(store: Path) -> Path:
    return Store(store).partition_path(Dataset(KLINES, "usdm", "BTCUSDT", "1h"), "2024-03")


def _swapped_closes(path: Path) -> pl.DataFrame:
    """The month with its first two closes swapped (the same values: the same file size)."""
    frame = pl.read_parquet(path)
    close = frame["close"].to_numpy().copy()
    assert close[0] != close[1]
    close[[0, 1]] = close[[1, 0]]
    return frame.with_columns(pl.Series("close", close))


def test_the_same_load_over_the_same_files_is_the_same_market(store: Path) -> None:
    first = _load(store)
    assert _load(store) is first
    assert _load(Path(os.path.relpath(store))) is first  # the store's root, however named
    longer = _load(store, days=4)
    assert longer is not first and longer.n_bars == first.n_bars + 24
    clear_market_cache()
    again = _load(store)
    assert again is not first
    np.testing.assert_array_equal(again.close, first.close)


def test_a_replaced_partition_is_read_again(store: Path) -> None:
    first = _load(store)
    path = _march(store)
    st = Store(store)
    with st.locked():
        st.write_partitions([(path, _swapped_closes(path))])
    second = _load(store)
    assert second is not first
    assert second.close[:2, 0].tolist() == first.close[:2, 0][::-1].tolist()
    assert _load(store) is second


def test_a_file_written_in_place_with_its_mtime_put_back_is_read_again(
    store: Path, tmp_path: Path
) -> None:
    first = _load(store)
    path = _march(store)
    before = os.stat(path)
    side = Store(tmp_path / "side")  # the store's own writer, elsewhere: the same encoding
    other = _march(side.root)
    with side.locked():
        side.write_partitions([(other, _swapped_closes(path))])
    data = other.read_bytes()
    assert len(data) == before.st_size  # swapped values: the same size
    with open(path, "r+b") as f:  # in place: the same inode
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns,
    )  # fmt: skip
    second = _load(store)
    assert second is not first
    assert second.close[:2, 0].tolist() == first.close[:2, 0][::-1].tolist()


def test_the_oldest_market_is_dropped_past_the_bound(store: Path) -> None:
    kept = [_load(store, days=d) for d in range(2, 3 + MARKET_CACHE)]
    assert _load(store, days=2 + MARKET_CACHE) is kept[-1]
    assert _load(store, days=2) is not kept[0]  # dropped: loaded again


def _digest(m: Market) -> str:
    h = hashlib.sha256()
    for a in (m.open_time, m.open, m.high, m.low, m.close, m.volume, m.has_bar, m.funding_rate):
        h.update(np.ascontiguousarray(a).tobytes())
    for sym in m.symbols:
        h.update(m.rows[sym].tobytes())
        h.update(m.candles[sym].hash_rows().to_numpy().tobytes())
        f = m.funding[sym]
        h.update(b"-" if f is None else f.hash_rows().to_numpy().tobytes())
    return h.hexdigest()


def test_nothing_run_on_a_kept_market_writes_to_it(usdm_store: Path) -> None:
    """A backtest, a sweep (fused, and per combination) and a lookahead check on the market
    they share leave every array and frame of it as loaded, and give what they gave on a
    fresh load."""
    span = {"start": "2024-03-01", "end": "2024-03-03"}
    grid = ["fast=5,9", "slow=26,50"]
    graph = load_strategy(EMA, **span)
    market = load_graph_market(graph, store=usdm_store)
    digest = _digest(market)
    alone = run_backtest(graph, store=usdm_store, log=False)
    fused = run_sweep(EMA, grid, store=usdm_store, log=False, workers=1, **span)
    combos = run_sweep(EMA, grid, store=usdm_store, log=False, workers=1, fused=False, **span)
    assert load_graph_market(graph, store=usdm_store) is market  # all three ran on it
    lookahead_check(EMA, cuts=2, store=usdm_store, **span)  # the whole span first
    assert _digest(market) == digest
    clear_market_cache()
    assert run_backtest(graph, store=usdm_store, log=False).metrics == alone.metrics
    fresh = run_sweep(EMA, grid, store=usdm_store, log=False, workers=1, **span)
    assert [r.metrics for r in fresh.results] == [r.metrics for r in fused.results]
    assert [r.metrics for r in combos.results] == [r.metrics for r in fused.results]
