"""A 3x3 ema_cross sweep over real BTC/ETH 5m bars: exact parity with standalone backtests,
the same results on any number of workers, and parent/child rows in the run log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.backtest import run_backtest
from engine.runlog import RunLog
from engine.runlog.query import run_query
from engine.strategy import load_strategy
from engine.sweep import fused, parse_grid, run_sweep
from engine.sweep.combos import SORT_KEYS, data_key
from engine.sweep.runner import build_graphs, shared_features

from .helpers import EMA, GRID, SPAN


def test_each_child_equals_a_standalone_backtest(logged_sweep, usdm_store: Path) -> None:  # type: ignore[no-untyped-def]
    assert logged_sweep.workers == 2
    assert [r.params for r in logged_sweep.results] == [
        {"fast": f, "slow": s} for f in (5, 9, 12) for s in (26, 50, 100)
    ]
    for r in logged_sweep.results:
        graph = load_strategy(EMA, overrides=r.params, **SPAN)
        alone = run_backtest(graph, store=usdm_store, log=False)
        assert r.metrics == alone.metrics, r.params  # exactly, every key
        assert r.metrics["trades"] > 0
    # the grid is not degenerate: different params, different outcomes
    assert len({r.metrics["total_return"] for r in logged_sweep.results}) == 9


def test_worker_count_does_not_change_results(logged_sweep, usdm_store: Path) -> None:  # type: ignore[no-untyped-def]
    one = run_sweep(EMA, GRID, store=usdm_store, log=False, workers=1, **SPAN)
    assert one.workers == 1 and one.run_id is None
    assert [r.params for r in one.results] == [r.params for r in logged_sweep.results]
    assert [r.metrics for r in one.results] == [r.metrics for r in logged_sweep.results]
    for key in ("sharpe", "max_drawdown", "total_return"):
        assert [r.index for r in one.ranked(key)] == [r.index for r in logged_sweep.ranked(key)]


def test_each_distinct_feature_is_computed_once(usdm_store: Path) -> None:
    from engine.decisions.market import load_market

    _combos, graphs = build_graphs(EMA, parse_grid(GRID), **SPAN)
    d = graphs[0].config.data
    market = load_market(
        graphs[0].symbols, d.interval, start=d.start, end=d.end, store=usdm_store, funding=True
    )
    frames, columns = shared_features(graphs, {data_key(graphs[0]): market})
    # 9 combinations read 18 feature columns, 6 of them distinct
    names = ["ema_5", "ema_26", "ema_50", "ema_100", "ema_9", "ema_12"]
    # the fused kernel's block holds each of them once, and the frames' columns are its rows
    block = columns[data_key(graphs[0])]
    assert block.index == {name: k for k, name in enumerate(names)}
    assert market.symbols == ("BTCUSDT", "ETHUSDT")
    n_own = max(market.candles[s].height for s in market.symbols)
    assert block.values.shape == (2, len(names) + 1, n_own)  # + compute's scratch row
    for j, sym in enumerate(market.symbols):
        frame = frames[data_key(graphs[0])][sym]
        assert frame.columns == ["open_time", *names]
        for name in names:
            col = frame[name].to_numpy()
            assert np.shares_memory(col, block.values)
            np.testing.assert_array_equal(col, block.values[j, block.index[name], : frame.height])
            assert np.isnan(block.values[j, :, frame.height :]).all()


def test_parent_and_child_rows_in_the_log(logged_sweep, sweep_results: Path) -> None:  # type: ignore[no-untyped-def]
    log = RunLog(sweep_results)
    parent = log.get_run(logged_sweep.run_id)
    assert parent is not None
    assert parent["mode"] == "sweep" and parent["status"] == "ok"
    assert parent["parent_run_id"] is None
    assert parent["params"]["grid"] == {"fast": [5, 9, 12], "slow": [26, 50, 100]}
    assert parent["params"]["combos"] == 9
    best = logged_sweep.ranked("sharpe")[0]
    assert parent["metrics"]["best"]["params"] == best.params
    assert parent["metrics"]["best"]["run_id"] == best.run_id
    assert parent["metrics"]["combos"] == 9

    rows = run_query(
        f"select run_id, mode, status, parent_run_id from runs "
        f"where parent_run_id = '{logged_sweep.run_id}' order by run_id",
        results_dir=sweep_results,
    ).to_pylist()
    assert len(rows) == 9
    assert {r["mode"] for r in rows} == {"sweep"} and {r["status"] for r in rows} == {"ok"}
    assert {r["run_id"] for r in rows} == {r.run_id for r in logged_sweep.results}
    for r in logged_sweep.results:
        child = log.get_run(r.run_id)
        assert child["params"]["sweep"]["combo"] == r.params
        assert child["params"]["sweep"]["index"] == r.index
        assert {k: child["metrics"][k] for k in SORT_KEYS} == {k: r.metrics[k] for k in SORT_KEYS}
        tables = sorted(p.stem for p in log.run_dir(r.run_id).glob("*.parquet"))
        assert tables == ["equity", "trades"]  # decisions only with log_decisions
        eq = log.read(r.run_id, "equity")
        assert eq.height > 0
        assert log.read(r.run_id, "trades").height == r.metrics["trades"]


def test_log_decisions_adds_the_decisions(usdm_store: Path, tmp_path: Path) -> None:
    res = run_sweep(
        EMA, ["fast=9", "risk.fraction=0.1:0.2:0.1"], store=usdm_store, results=tmp_path,
        workers=1, log_decisions=True, parent_params={"search": "grid", "by": "test"}, **SPAN,
    )  # fmt: skip
    parent = RunLog(tmp_path).get_run(res.run_id)
    assert parent is not None and parent["params"]["search"] == "grid"
    assert parent["params"]["by"] == "test" and parent["params"]["combos"] == 2
    assert [r.params for r in res.results] == [
        {"fast": 9, "risk.fraction": 0.1},
        {"fast": 9, "risk.fraction": 0.2},
    ]
    log = RunLog(tmp_path)
    for r in res.results:
        assert log.read(r.run_id, "ensemble_decisions").height > 0
        assert (
            log.get_run(r.run_id)["params"]["config"]["risk"]["fraction"]
            == r.params["risk.fraction"]
        )
    assert res.results[0].metrics["final_equity"] != res.results[1].metrics["final_equity"]


def test_progress_goes_through_the_protocol(usdm_store: Path, tmp_path: Path) -> None:
    """``progress(task, done, total)``: the preparation steps, then one report per
    combination, in combination order also when the children are written to the log."""
    for log in (False, True):
        seen: list[tuple[str, int, int | None]] = []
        # the kernel's step comes only while this process has not run the kernel yet (it
        # depends on which tests ran before in this worker; see the test below)
        kernel = [] if fused.kernel_loaded() else [(fused.KERNEL_TASK, 0, None)]
        res = run_sweep(
            EMA, ["fast=5,9", "slow=26"], store=usdm_store, results=tmp_path / str(log),
            workers=1, log=log, progress=lambda *a, seen=seen: seen.append(a), **SPAN,
        )  # fmt: skip
        assert (res.run_id is not None) == log
        assert seen == [
            ("load data", 0, None),
            ("features", 0, None),
            ("combinations", 0, 2),
            *kernel,
            ("combinations", 1, 2),
            ("combinations", 2, 2),
        ]
        assert fused.kernel_loaded()


def test_a_fresh_process_says_it_loads_the_kernel_once(usdm_store: Path, tmp_path: Path) -> None:
    """In a new process the first fused sweep reports the kernel's step (numba loads or
    compiles it then, up to a minute with nothing else to show); the second does not."""
    code = f"""
import json
from pathlib import Path
from engine.sweep import run_sweep
from engine.sweep.fused import KERNEL_TASK
tasks = []
for _ in range(2):
    seen = []
    run_sweep(Path({str(EMA)!r}), ["fast=5,9", "slow=26"], store=Path({str(usdm_store)!r}),
              workers=1, log=False, progress=lambda *a: seen.append(a[0]), **{SPAN!r})
    tasks.append(seen.count(KERNEL_TASK))
print(json.dumps(tasks))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [1, 0]
