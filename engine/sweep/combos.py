"""A sweep's combinations: their results and ranking, and the work of running them.

:class:`ComboResult` / :class:`SweepResult` are what :func:`engine.sweep.runner.run_sweep`
returns, :func:`rank` sorts them by a metric (:data:`SORT_KEYS`). :class:`Shared` is what
every worker holds once (markets, features), :func:`run_combo` one combination the way
:func:`engine.backtest.run_backtest` runs it (the executors' worker function), and
:func:`run_fused` every combination of a fused plan through :mod:`engine.sweep.fused`'s
kernel (a combination it cannot finish exactly goes through :func:`run_combo`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.backtest.runner import ml_metrics, run_metrics, simulate_graph
from engine.decisions import records
from engine.decisions.decide import decide
from engine.decisions.market import Market
from engine.errors import UsageError
from engine.metrics import METRIC_KEYS
from engine.progress import Progress, step
from engine.strategy.graph import StrategyGraph
from engine.sweep import fused as fz
from engine.sweep.executors import Executor, LocalExecutor, ProcessPoolExecutor
from engine.sweep.grid import Axis

if TYPE_CHECKING:
    import polars as pl

#: metrics a sweep can be sorted by; those in LOWER_IS_BETTER sort ascending
SORT_KEYS = tuple(k for k in METRIC_KEYS if k not in ("initial_equity", "bars"))
LOWER_IS_BETTER = frozenset({"max_drawdown", "fees", "liquidations"})


@dataclass(frozen=True)
class ComboResult:
    """One combination: its index in the grid, the values it set, its metrics, its child run."""

    index: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    run_id: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` returns; ``results`` in combination order."""

    run_id: str | None
    axes: tuple[Axis, ...]
    results: tuple[ComboResult, ...]
    sort: str
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 1

    def ranked(self, sort: str | None = None, *, top: int | None = None) -> list[ComboResult]:
        """Combinations best first by ``sort`` (missing/NaN values last, ties by index)."""
        return rank(self.results, sort or self.sort, top=top)


def check_sort(sort: str) -> str:
    """``sort`` must be one of :data:`SORT_KEYS` (else the closest one)."""
    if sort not in SORT_KEYS:
        close = difflib.get_close_matches(sort, SORT_KEYS, n=1, cutoff=0.5)
        raise UsageError(
            f"--sort {sort!r}: not a metric a sweep sorts by",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"one of: {', '.join(SORT_KEYS)}",
        )
    return sort


def rank(results: Iterable[ComboResult], sort: str, *, top: int | None = None) -> list[ComboResult]:
    """Sort combinations best first by metric ``sort`` (see :data:`LOWER_IS_BETTER`)."""
    sign = 1.0 if sort in LOWER_IS_BETTER else -1.0

    def key(r: ComboResult) -> tuple[int, float, int]:
        v = r.metrics.get(sort)
        if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
            return (1, 0.0, r.index)
        return (0, sign * float(v), r.index)

    out = sorted(results, key=key)
    return out if top is None else out[:top]


@dataclass(frozen=True)
class Shared:
    """What every worker holds once: the markets and the features frames of each data key."""

    markets: dict[tuple[Any, ...], Market]
    features: dict[tuple[Any, ...], dict[str, pl.DataFrame]]
    results: str | None
    log: bool
    log_decisions: bool


@dataclass(frozen=True)
class Task:
    index: int
    graph: StrategyGraph
    data_key: tuple[Any, ...]


def data_key(graph: StrategyGraph) -> tuple[Any, ...]:
    """What the loaded market of a graph depends on (a grid may vary data.* keys too)."""
    d = graph.config.data
    return (tuple(d.symbols), d.interval, d.start, d.end, d.market, d.funding)


def run_combo(shared: Shared, task: Task) -> dict[str, Any]:
    """One combination: decisions from the shared features, the simulator, the metrics
    (and, when logging, the child run's frames). The worker function of every executor."""
    graph = task.graph
    market = shared.markets[task.data_key]
    cols = ["open_time", *graph.feature_columns]
    features = {sym: frame.select(cols) for sym, frame in shared.features[task.data_key].items()}
    dec, features = decide(graph, market, results_dir=shared.results, features=features)
    res = simulate_graph(graph, market, dec, features)
    metrics = run_metrics(graph, market, res)
    if dec.ml is not None:
        metrics.update(ml_metrics(dec.ml))
    out: dict[str, Any] = {"metrics": metrics}
    if shared.log:
        frames = {
            "trades": records.trade_frame(market, res),
            "equity": records.equity_frame(market, res),
        }
        if shared.log_decisions:
            frames["ensemble_decisions"] = records.decision_frame(market, dec, res)
        out["frames"] = frames
    return out


#: combinations per fused task (a few per thread: progress moves, Ray gets chunks to spread)
FUSED_CHUNK = 64
#: bar-combinations per chunk in this process (~0.2 s of the kernel on two cores): the lanes
#: wait for each other and the metrics are collected at every chunk's end (~1 ms a chunk in
#: the bench's sweep of 190 over 143,900 bars), so chunks here are as long as progress
#: allows, and never shorter than FUSED_CHUNK combinations
LOCAL_CHUNK_BARS = 50_000_000


def run_fused(
    ex: Executor,
    shared: Shared,
    tasks: list[Task],
    plan: fz.FusedPlan,
    progress: Progress | None,
) -> list[dict[str, Any] | None]:
    """Every combination's metrics from the fused kernel, in chunks through the executor
    (in this process for the local pool: the kernel already runs on every core). A
    combination the kernel could not finish exactly is run per combination instead."""
    total = len(tasks)
    metrics_of: list[dict[str, Any] | None] = [None] * total
    runner = LocalExecutor() if isinstance(ex, ProcessPoolExecutor) else ex
    size = FUSED_CHUNK
    if isinstance(runner, LocalExecutor):
        bars = max(int(g.market.open.size) for g in plan.groups)  # bars x symbols, >= 2
        size = max(FUSED_CHUNK, LOCAL_CHUNK_BARS // bars)
    chunks = fz.chunks(plan, size=size)
    done = 0

    def collect(i: int, stats: np.ndarray) -> None:
        nonlocal done
        g, rows = chunks[i]
        group = plan.groups[g]
        for row, st in zip(rows, stats, strict=True):
            idx = int(group.indices[row])
            m = fz.metrics_of(st, group)
            metrics_of[idx] = m if m is not None else run_combo(shared, tasks[idx])["metrics"]
            done += 1
            step(progress, "combinations", done, total)

    if not fz.kernel_loaded():  # the first chunk waits for the kernel: say why
        step(progress, fz.KERNEL_TASK, 0, None)
    # in this process the lanes' buffers and threads serve every chunk; elsewhere each task
    # makes its own
    if isinstance(runner, LocalExecutor):
        with fz.Lanes() as lanes:
            runner.run(partial(fz.run_chunk, lanes=lanes), plan, chunks, collect)
    else:
        runner.run(fz.run_chunk, plan, chunks, collect)
    return metrics_of
