"""Walk-forward optimization: windows, no out-of-sample bar in an in-sample choice, the
stitched out-of-sample run in the log, ``engine sweep --walk-forward --json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.runlog import RunLog
from engine.sweep.walkforward import run_walk_forward, windows
from engine.timeutil import parse_time

from .helpers import EMA

GRID = ["fast=5,9,12", "slow=26,50"]
#: twelve days: windows of 6 days in-sample, 3 out-of-sample -> 2 windows
WF = {
    "in_sample": "6d",
    "out_of_sample": "3d",
    "start": "2024-03-01",
    "end": "2024-03-12",
    "symbols": ["BTCUSDT"],
}
PLANT = parse_time("2024-03-08T12:00")  # in window 0's out-of-sample part (03-07 .. 03-09)


@pytest.mark.parametrize(("n", "is_", "oos"), [(1000, 300, 100), (1000, 300, 350), (999, 10, 1)])
def test_windows_roll_and_never_overlap(n: int, is_: int, oos: int) -> None:
    ws = windows(0, n - 1, is_, oos)
    assert ws and ws[0].is_start == 0
    for a, b in zip(ws, ws[1:], strict=False):
        assert b.is_start == a.is_start + oos
        assert b.oos_start == a.oos_end + 1  # out-of-sample parts tile the span
    for w in ws:
        assert w.is_end - w.is_start + 1 == is_
        assert w.is_end < w.oos_start <= w.oos_end <= n - 1
    assert ws[-1].oos_end == n - 1 or ws[-1].oos_end + 1 + is_ > n - 1


@pytest.fixture(scope="module")
def wf(usdm_store: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    results = tmp_path_factory.mktemp("wf_results")
    return run_walk_forward(EMA, GRID, store=usdm_store, results=results, **WF), results


def _planted_store(usdm_store: Path, dest: Path) -> Path:
    """A copy of the store with one BTCUSDT 5m bar in window 0's out-of-sample part pushed
    30% up (close and high)."""
    shutil.copytree(usdm_store, dest)
    part = dest / "klines/market=usdm/symbol=BTCUSDT/interval=5m/month=2024-03/data.parquet"
    df = pl.read_parquet(part)
    hit = pl.col("open_time") == PLANT
    assert df.filter(hit).height == 1
    df = df.with_columns(
        pl.when(hit).then(pl.col("close") * 1.3).otherwise(pl.col("close")).alias("close"),
    ).with_columns(
        pl.when(hit).then(pl.col("close")).otherwise(pl.col("high")).alias("high"),
    )
    df.write_parquet(part)
    return dest


def test_a_planted_future_bar_never_reaches_the_in_sample_choice(
    wf, usdm_store: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    clean, _ = wf
    planted = run_walk_forward(
        EMA, GRID, store=_planted_store(usdm_store, tmp_path / "store"), log=False, **WF
    )
    w0, p0 = clean.windows[0], planted.windows[0]
    assert w0.window.is_end < PLANT <= w0.window.oos_end
    # the choice and every in-sample metric of window 0 are the same floats ...
    assert p0.params == w0.params
    assert p0.in_sample == w0.in_sample
    # ... while its out-of-sample piece did see the planted bar
    assert p0.out_of_sample["total_return"] != w0.out_of_sample["total_return"]
    t = clean.equity["time"].to_numpy()
    differ = t[clean.equity["equity"].to_numpy() != planted.equity["equity"].to_numpy()]
    assert differ.size and differ.min() == PLANT  # the stitched curves part at the plant


def test_stitched_out_of_sample_run_is_logged(wf) -> None:  # type: ignore[no-untyped-def]
    r, results = wf
    assert len(r.windows) == 2
    eq = r.equity
    times = eq["time"].to_numpy()
    assert np.all(np.diff(times) == 300_000)  # one curve, no bar twice, none missing
    assert times[0] == r.windows[0].window.oos_start - 300_000  # the last in-sample close
    assert times[-1] == r.windows[-1].window.oos_end - 300_000 + 1
    assert eq["equity"][0] == r.metrics["initial_equity"]
    assert r.metrics["final_equity"] == pytest.approx(eq["equity"][-1], rel=0, abs=0)
    # each piece compounds: the stitched return is the product of the windows' returns
    growth = np.prod([1 + w.out_of_sample["total_return"] for w in r.windows])
    assert r.metrics["total_return"] == pytest.approx(growth - 1, rel=1e-12, abs=1e-12)
    deg = r.degradation["sharpe"]
    assert deg["in_sample"] == pytest.approx(np.mean([w.in_sample["sharpe"] for w in r.windows]))
    assert deg["diff"] == pytest.approx(deg["out_of_sample"] - deg["in_sample"])
    with RunLog(results) as log:
        parent = log.get_run(r.run_id)
        child = log.get_run(r.oos_run_id)
        assert parent is not None and child is not None
        assert child["parent_run_id"] == r.run_id
        logged = log.read(r.oos_run_id, "equity")
    assert logged["equity"].to_list() == eq["equity"].to_list()
    params = json.loads(parent["params"]) if isinstance(parent["params"], str) else parent["params"]
    assert [w["params"] for w in params["walk_forward"]["windows"]] == [w.params for w in r.windows]


def test_cli_walk_forward_json(usdm_store: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "sweep", str(EMA), "--grid", "fast=5,9,50",
         "--grid", "slow=26,50", "--where", "fast < slow", "--walk-forward",
         "--in-sample", "6d", "--out-of-sample", "3d", "--start", "2024-03-01",
         "--end", "2024-03-12", "--symbols", "BTCUSDT", "--json",
         "--store", str(usdm_store), "--results", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"run_id", "oos_run_id", "sort", "metrics", "degradation", "windows"}
    assert [w["combos"] for w in doc["windows"]] == [4, 4]  # (50, 26) and (50, 50) filtered
    assert all(w["params"]["fast"] < w["params"]["slow"] for w in doc["windows"])
    assert doc["degradation"]["sharpe"]["in_sample"] is not None
