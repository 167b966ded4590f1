"""A sweep's run log: the parent run (the grid, how it ran, a summary) and one child run per
combination, written in combination order while workers go on computing.

Per-combination sweeps log every child's ``equity`` and ``trades``; a fused sweep logs every
child's metrics and re-runs its best ``log_top`` combinations through
:func:`engine.sweep.combos.run_combo` for their frames (whose metrics must equal the
kernel's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.backtest.runner import run_params
from engine.errors import RunError
from engine.progress import Progress, step
from engine.runlog import RunLog
from engine.strategy.execution import strategy_hash
from engine.strategy.graph import StrategyGraph
from engine.sweep import fused as fz
from engine.sweep.combos import (
    SORT_KEYS,
    ComboResult,
    Shared,
    Task,
    data_key,
    rank,
    run_combo,
    run_fused,
)
from engine.sweep.executors import Executor
from engine.sweep.grid import Axis

if TYPE_CHECKING:
    import os


@dataclass(frozen=True)
class Where:
    """Where a sweep reads and writes, and what it records in its parent run."""

    path: str | os.PathLike[str]
    overrides: list[str]
    store: str | os.PathLike[str] | None
    results: str | os.PathLike[str] | None
    sort: str
    log_top: int = 10
    extra: dict[str, Any] = field(default_factory=dict)  # more of the parent run's params


def _parent_params(
    graphs: Sequence[StrategyGraph],
    axes: Sequence[Axis],
    shared: Shared,
    ex: Executor,
    where: Where,
) -> dict[str, Any]:
    """The parent run's params: the strategy file, the grid, the span and how it ran."""
    market0 = shared.markets[data_key(graphs[0])]
    return {
        "strategy_file": str(Path(where.path)),
        "grid": {a.name: list(a.values) for a in axes},
        "combos": len(graphs),
        "overrides": where.overrides,
        "symbols": list(market0.symbols),
        "interval": market0.interval,
        "start": int(market0.open_time[0]),
        "end": int(market0.open_time[-1]),
        "bars": market0.n_bars,
        "sort": where.sort,
        "workers": ex.workers,
        "executor": type(ex).__name__,
        "log_decisions": shared.log_decisions,
        **where.extra,
    }


class _Children:
    """Writes each combination's child run as soon as it and every earlier one are done, so
    children are logged in index order while workers go on computing."""

    def __init__(
        self,
        runlog: RunLog,
        parent_id: str,
        tasks: list[Task],
        combos: list[dict[str, Any]],
        shared: Shared,
        where: Where,
        progress: Progress | None,
    ) -> None:
        self.runlog, self.parent_id, self.tasks, self.combos = runlog, parent_id, tasks, combos
        self.shared, self.where, self.progress = shared, where, progress
        self.metrics_of: list[dict[str, Any] | None] = [None] * len(tasks)
        self.run_ids: list[str | None] = [None] * len(tasks)
        self.pending: dict[int, dict[str, Any]] = {}
        self.next_i = 0

    def collect(self, i: int, out: dict[str, Any]) -> None:
        """The executor's ``on_result``: keep the result, write every child now in order."""
        self.metrics_of[i] = out["metrics"]
        self.pending[i] = out
        self.write_ready()

    def write_ready(self) -> None:
        while self.next_i in self.pending:
            i = self.next_i
            self.run_ids[i] = self._write(i, self.pending.pop(i))
            self.next_i += 1
            step(self.progress, "combinations", self.next_i, len(self.tasks))

    def _write(self, i: int, out: dict[str, Any]) -> str:
        g = self.tasks[i].graph
        params = run_params(g, self.shared.markets[data_key(g)], store=self.where.store)
        params["sweep"] = {"parent_run_id": self.parent_id, "index": i, "combo": self.combos[i]}
        rid = self.runlog.start_run(
            mode="sweep",
            strategy=g.name,
            params=params,
            strategy_hash=strategy_hash(g),
            parent_run_id=self.parent_id,
        )
        for table, frame in out["frames"].items():
            if frame.height:
                self.runlog.write(rid, table, frame)
        self.runlog.finish_run(rid, status="ok", metrics=out["metrics"])
        return rid


def run_logged(
    ex: Executor,
    shared: Shared,
    tasks: list[Task],
    combos: list[dict[str, Any]],
    axes: Sequence[Axis],
    where: Where,
    timings: dict[str, float],
    progress: Progress | None,
    plan: fz.FusedPlan | None,
) -> tuple[str, list[dict[str, Any] | None], list[str | None]]:
    """Run the combinations and write the parent and child runs (children in index order).

    Returns the parent run id, each combination's metrics and each child's run id.
    """
    graphs = [t.graph for t in tasks]
    first = graphs[0]
    with RunLog(where.results) as runlog:
        with runlog.run(
            mode="sweep",
            strategy=first.name,
            params=_parent_params(graphs, axes, shared, ex, where),
            strategy_hash=strategy_hash(first),
        ) as parent_id:
            children = _Children(runlog, parent_id, tasks, combos, shared, where, progress)
            step(progress, "combinations", 0, len(tasks))
            if plan is None:
                ex.run(run_combo, shared, tasks, children.collect)
            else:
                _log_fused(ex, shared, tasks, plan, where, children)
            children.write_ready()
            ranked = rank(
                [
                    ComboResult(index=i, params=combos[i], metrics=m or {})
                    for i, m in enumerate(children.metrics_of)
                ],
                where.sort,
            )
            summary = _summary(ranked, where.sort, children.run_ids, timings)
            runlog.finish_run(parent_id, status="ok", metrics=summary)
    return parent_id, children.metrics_of, children.run_ids


def _log_fused(
    ex: Executor,
    shared: Shared,
    tasks: list[Task],
    plan: fz.FusedPlan,
    where: Where,
    children: _Children,
) -> None:
    """Fused metrics for every child; the best ``where.log_top`` by ``where.sort`` re-run
    per combination for their equity and trades (their metrics must come out the same)."""
    metrics_of = run_fused(ex, shared, tasks, plan, None)
    ranked = rank(
        [ComboResult(index=i, params={}, metrics=m or {}) for i, m in enumerate(metrics_of)],
        where.sort,
        top=max(0, where.log_top),
    )
    top = {r.index for r in ranked}
    logging = dataclasses.replace(shared, log=True)
    for i, m in enumerate(metrics_of):
        if i not in top:
            children.collect(i, {"metrics": m, "frames": {}})
            continue
        out = run_combo(logging, tasks[i])
        if out["metrics"] != m:
            raise RunError(
                f"sweep combination {i}: the fused kernel's metrics differ from the "
                "backtest path's (a bug: please report it)",
                hint="rerun with fused=False meanwhile",
            )
        children.collect(i, out)


def _summary(
    ranked: list[ComboResult], sort: str, run_ids: list[str | None], timings: dict[str, float]
) -> dict[str, Any]:
    """The parent run's metrics: counts, the best and worst combination, the sort metric's spread."""
    vals = np.array(
        [
            float(r.metrics[sort])
            for r in ranked
            if isinstance(r.metrics.get(sort), int | float) and r.metrics[sort] is not None
        ],
        dtype=float,
    )
    vals = vals[np.isfinite(vals)]

    def entry(r: ComboResult) -> dict[str, Any]:
        return {
            "index": r.index,
            "params": r.params,
            "run_id": run_ids[r.index],
            "metrics": {k: r.metrics.get(k) for k in SORT_KEYS},
        }

    return {
        "combos": len(ranked),
        "sort": sort,
        "best": entry(ranked[0]) if ranked else None,
        "worst": entry(ranked[-1]) if ranked else None,
        sort: {
            "min": float(vals.min()) if vals.size else None,
            "median": float(np.median(vals)) if vals.size else None,
            "max": float(vals.max()) if vals.size else None,
        },
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
