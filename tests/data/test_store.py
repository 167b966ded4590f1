"""The store's batch writer: all files or none, and month files readable by other tools."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine.data import Store
from engine.data.schema import Dataset

from .conftest import snapshot

BTC_1H = Dataset("klines", "usdm", "BTCUSDT", "1h")


def folders(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()}


def test_failed_batch_write_leaves_the_store_as_it_was(store: Path) -> None:
    st = Store(store)
    old_path = st.partition_path(BTC_1H, "2023-01")
    changed = pl.read_parquet(old_path).with_columns(pl.col("close") + 1.0)
    blocked = st.partition_path(BTC_1H, "2030-01")
    blocked.parent.write_text("not a folder")  # the month folder cannot be made
    new_series = st.partition_path(Dataset("klines", "usdm", "ETHUSDT", "1h"), "2023-01")
    files, dirs = snapshot(store), folders(store)
    items = [(old_path, changed), (new_series, changed), (blocked, changed)]
    with pytest.raises(NotADirectoryError):
        st.write_partitions(items)
    assert snapshot(store) == files  # no temporary file left, the old month untouched
    assert folders(store) == dirs  # the folders made for ETHUSDT are gone again


def test_batch_write_replaces_and_adds_months(store: Path) -> None:
    st = Store(store)
    old_path = st.partition_path(BTC_1H, "2023-01")
    changed = pl.read_parquet(old_path).with_columns(pl.col("close") + 1.0)
    new_path = st.partition_path(Dataset("klines", "usdm", "ETHUSDT", "1h"), "2023-01")
    st.write_partitions([(old_path, changed), (new_path, changed)])
    assert pl.read_parquet(old_path).equals(changed)
    assert pl.read_parquet(new_path).equals(changed)
    assert not [p for p in store.rglob("*.tmp")]
    md = pq.read_metadata(new_path).row_group(0).column(0)
    assert md.path_in_schema == "open_time"
    assert "DELTA_BINARY_PACKED" in md.encodings
    assert md.statistics.min == changed["open_time"][0]
    assert md.statistics.max == changed["open_time"][-1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_writes_with_its_own_threads(store: Path) -> None:
    st = Store(store)
    frame = pl.read_parquet(st.partition_path(BTC_1H, "2023-01"))
    st.write_partitions([(st.partition_path(BTC_1H, "2023-01"), frame)])  # the parent's pool
    target = st.partition_path(Dataset("klines", "usdm", "ETHUSDT", "1h"), "2023-01")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=st.write_partitions, args=([(target, frame)],))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the child hung or failed writing through its parent's pool"
    assert pl.read_parquet(target).equals(frame)
