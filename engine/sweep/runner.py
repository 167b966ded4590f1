"""Parameter sweeps: one strategy over the cartesian product of param grids, many backtests at once.

Order of work (nothing is written before every input has been read and checked):

1. the grid (:mod:`engine.sweep.grid`), the ``--set`` items and every combination's strategy
   graph are built and validated (ConfigError/UsageError, exit 2);
2. candles and funding are loaded once per distinct data section (normally one);
3. each distinct feature is computed once per symbol: features depend on params only through
   their names (``ema_{fast}`` -> ``ema_9``), so ``ema_9`` is computed once for every
   combination that reads it, and each combination gets a frame of its own columns;
4. rule strategies: every combination in the fused kernel (:mod:`engine.sweep.fused`:
   rules, the futures simulator's own bar step and the metrics in numba, parallel over
   combinations, only each combination's metrics coming back); anything else (ML graphs)
   per combination in the executor: decisions, the simulator, metrics -- the functions
   :func:`engine.backtest.run_backtest` calls. Either way a combination's metrics equal a
   standalone backtest of the same overrides exactly;
5. the run log: a parent run (mode ``sweep``; the grid in params, a summary in metrics) and
   one child run per combination (mode ``sweep``, ``parent_run_id`` set, its metrics),
   written in combination order. Fused: the best ``log_top`` combinations by ``sort`` are
   re-run through the per-combination path and get ``equity`` and ``trades`` (plus
   ``ensemble_decisions`` with ``log_decisions``); per-combination: every child gets them.

Progress goes through :mod:`engine.progress`: ``("load data", 0, None)``, ``("features", 0,
None)``, then ``("combinations", done, total)`` as each combination is done (logged: written).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.backtest.runner import ml_metrics, run_metrics, run_params, simulate_graph
from engine.decisions import records
from engine.decisions.decide import decide
from engine.decisions.market import Market, load_graph_market
from engine.errors import ConfigError, RunError, UsageError
from engine.features import compute
from engine.metrics import METRIC_KEYS
from engine.progress import Progress, step
from engine.runlog import RunLog
from engine.strategy.config import StrategyConfig
from engine.strategy.execution import strategy_hash
from engine.strategy.graph import StrategyGraph
from engine.strategy.load import build_graph
from engine.strategy.params import apply_overrides, parse_set
from engine.strategy.yamlio import load_yaml_file
from engine.sweep import fused as fz
from engine.sweep.executors import Executor, LocalExecutor, ProcessPoolExecutor, make_executor
from engine.sweep.grid import Axis, check_axes, combinations, parse_grid

if TYPE_CHECKING:
    import os

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


# ---------------------------------------------------------------------------- the work


@dataclass(frozen=True)
class _Shared:
    """What every worker holds once: the markets and the features frames of each data key."""

    markets: dict[tuple[Any, ...], Market]
    features: dict[tuple[Any, ...], dict[str, pl.DataFrame]]
    results: str | None
    log: bool
    log_decisions: bool


@dataclass(frozen=True)
class _Task:
    index: int
    graph: StrategyGraph
    data_key: tuple[Any, ...]


def data_key(graph: StrategyGraph) -> tuple[Any, ...]:
    """What the loaded market of a graph depends on (a grid may vary data.* keys too)."""
    d = graph.config.data
    return (tuple(d.symbols), d.interval, d.start, d.end, d.market, d.funding)


def run_combo(shared: _Shared, task: _Task) -> dict[str, Any]:
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


def build_graphs(
    path: str | os.PathLike[str],
    axes: Sequence[Axis],
    *,
    overrides: Iterable[str] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    combos: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[StrategyGraph]]:
    """Every combination and its validated graph (``--set`` items first, then the combination).

    ``combos`` replaces the cartesian product of ``axes`` (a filtered or sampled subset:
    each a value of every axis)."""
    raw, smap = load_yaml_file(Path(path))
    override_list = list(overrides)
    set_map = dict(parse_set(s) for s in override_list)
    if not isinstance(raw, dict):
        build_graph(raw, smap)  # raises the loader's own error for a non-mapping file
    check_axes(axes, raw, fixed=set_map)
    # the --set items alone (their own messages name the --set)
    apply_overrides(raw, override_list, schema=StrategyConfig)
    combos = combinations(axes) if combos is None else _checked_combos(combos, axes)
    graphs = []
    for combo in combos:
        try:
            graphs.append(
                build_graph(
                    raw,
                    smap,
                    overrides={**set_map, **combo},
                    symbols=symbols,
                    start=start,
                    end=end,
                )
            )
        except ConfigError as err:
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            raise ConfigError(f"--grid combination {shown}: {err.message}", hint=err.hint) from None
    return combos, graphs


def _checked_combos(
    combos: Sequence[Mapping[str, Any]], axes: Sequence[Axis]
) -> list[dict[str, Any]]:
    """Explicit combinations: each names every axis once with one of its values."""
    names = [a.name for a in axes]
    out = []
    for i, combo in enumerate(combos):
        if sorted(combo) != sorted(names):
            raise UsageError(
                f"combination {i}: sets {sorted(combo)}, the grid's axes are {names}",
                hint="give every axis a value in each combination",
            )
        for a in axes:
            if not any(type(v) is type(combo[a.name]) and v == combo[a.name] for v in a.values):
                raise UsageError(
                    f"combination {i}: {a.name}={combo[a.name]!r} is not a value of its axis",
                    hint=f"one of {list(a.values)}",
                )
        out.append({a.name: combo[a.name] for a in axes})
    if not out:
        raise UsageError("no combinations to run", hint="the filter left none of the grid")
    return out


@dataclass(frozen=True)
class _Where:
    """Where a sweep reads and writes, and what it records in its parent run."""

    path: str | os.PathLike[str]
    overrides: list[str]
    store: str | os.PathLike[str] | None
    results: str | os.PathLike[str] | None
    sort: str
    log_top: int = 10
    extra: dict[str, Any] = field(default_factory=dict)  # more of the parent run's params


def run_sweep(
    path: str | os.PathLike[str],
    grid: Sequence[str],
    *,
    overrides: Iterable[str] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    executor: str | Executor = "process",
    log: bool = True,
    log_decisions: bool = False,
    force: bool = False,
    sort: str = "sharpe",
    progress: Progress | None = None,
    log_top: int = 10,
    fused: bool = True,
    combos: Sequence[Mapping[str, Any]] | None = None,
    parent_params: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Backtest a strategy over the cartesian product of ``grid`` and log the sweep.

    Parameters
    ----------
    path : the strategy YAML file.
    grid : ``--grid`` items: ``"fast=5,9,12"``, ``"risk.fraction=0.05:0.2:0.05"``.
    overrides : ``--set`` items applied to every combination (an axis may not also be set).
    symbols, start, end : as for :func:`engine.strategy.load_strategy`.
    store, results : the data store and the results directory.
    workers : processes (default: the cores this process may use); 1 runs in this process.
    executor : ``"process"`` (default), ``"local"``, ``"ray"`` or an :class:`Executor`.
    log : write the parent and child runs (False: compute only).
    log_decisions : also write each child's ``ensemble_decisions``.
    force : allow more than :data:`engine.sweep.grid.MAX_COMBOS` combinations.
    sort : the metric :meth:`SweepResult.ranked` sorts by (recorded in the parent run).
    progress : an :class:`engine.progress.Progress` (see the module docstring).
    log_top : with the fused kernel, how many of the best combinations (by ``sort``) are
        re-run to log their equity and trades (every child run gets its metrics).
    fused : False runs every combination through the per-combination path even when the
        fused kernel could (the two give the same metrics; for comparisons).
    combos : the combinations to run instead of the whole cartesian product (``--where``,
        random or Optuna search): dicts of axis name -> one of its values; results are in
        this order.
    parent_params : recorded in the parent run's params beside the grid (how the
        combinations were chosen: ``{"search": "optuna", "trials": 40, "seed": 1, ...}``).

    Raises
    ------
    UsageError, ConfigError
        A bad grid, ``--set``, sort key or combination (nothing is written).
    DataError
        Missing data (nothing is written).

    Examples
    --------
    >>> r = run_sweep("strategies/ema_cross.yaml", ["fast=5,9", "slow=26,50"])  # doctest: +SKIP
    >>> r.ranked("sharpe", top=1)[0].params  # doctest: +SKIP
    {'fast': 9, 'slow': 26}
    """
    t0 = time.perf_counter()
    check_sort(sort)
    axes = tuple(parse_grid(grid, force=force))
    overrides = list(overrides)
    combos, graphs = build_graphs(
        path, axes, overrides=overrides, symbols=symbols, start=start, end=end, combos=combos
    )
    ex = _executor(executor, workers, len(graphs))
    timings: dict[str, float] = {"validate": time.perf_counter() - t0}
    shared = _prepare(graphs, store, results, log, log_decisions, timings, progress)
    tasks = [_Task(i, g, data_key(g)) for i, g in enumerate(graphs)]
    t1 = time.perf_counter()
    plan = fz.plan(graphs, shared.markets, shared.features, data_key) if fused else None
    timings["plan"] = time.perf_counter() - t1
    where = _Where(path, overrides, store, results, sort, log_top, dict(parent_params or {}))
    parent_id, metrics_of, run_ids = (
        _run_logged(ex, shared, tasks, combos, axes, where, timings, progress, plan)
        if log
        else (None, _run_unlogged(ex, shared, tasks, progress, plan), [])
    )
    timings["combos"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    out = tuple(
        ComboResult(i, combos[i], metrics_of[i] or {}, run_ids[i] if run_ids else None)
        for i in range(len(tasks))
    )
    return SweepResult(
        run_id=parent_id, axes=axes, results=out, sort=sort, timings=timings, workers=ex.workers
    )


def _executor(executor: str | Executor, workers: int | None, tasks: int) -> Executor:
    if isinstance(executor, str):
        return make_executor(executor, workers=workers, tasks=tasks)
    return executor


def _prepare(
    graphs: Sequence[StrategyGraph],
    store: str | os.PathLike[str] | None,
    results: str | os.PathLike[str] | None,
    log: bool,
    log_decisions: bool,
    timings: dict[str, float],
    progress: Progress | None,
) -> _Shared:
    """The markets (once per distinct data section) and the features (each distinct one once
    per symbol) that every worker shares."""
    t0 = time.perf_counter()
    step(progress, "load data", 0, None)
    markets: dict[tuple[Any, ...], Market] = {}
    for g in graphs:
        key = data_key(g)
        if key not in markets:
            markets[key] = load_graph_market(g, store=store)
    timings["load"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    step(progress, "features", 0, None)
    features = _shared_features(graphs, markets)
    timings["features"] = time.perf_counter() - t1
    return _Shared(
        markets=markets,
        features=features,
        results=str(results) if results is not None else None,
        log=log,
        log_decisions=log_decisions,
    )


def _shared_features(
    graphs: Sequence[StrategyGraph], markets: Mapping[tuple[Any, ...], Market]
) -> dict[tuple[Any, ...], dict[str, pl.DataFrame]]:
    """Per data key and symbol, one frame with every feature any combination reads."""
    import polars as pl

    names: dict[tuple[Any, ...], list[str]] = {}
    for g in graphs:
        lst = names.setdefault(data_key(g), [])
        for f in g.feature_columns:
            if f not in lst:
                lst.append(f)
    out: dict[tuple[Any, ...], dict[str, pl.DataFrame]] = {}
    for key, market in markets.items():
        graph = next(g for g in graphs if data_key(g) == key)
        per_sym: dict[str, pl.DataFrame] = {}
        for sym in market.symbols:
            candles = market.candles[sym]
            if names[key]:
                per_sym[sym] = compute(
                    candles, names[key], funding=market.funding.get(sym), interval=graph.interval
                )
            else:
                per_sym[sym] = candles.select(pl.col("open_time"))
        out[key] = per_sym
    return out


def _run_unlogged(
    ex: Executor,
    shared: _Shared,
    tasks: list[_Task],
    progress: Progress | None,
    plan: fz.FusedPlan | None,
) -> list[dict[str, Any] | None]:
    """Run the combinations; only their metrics are kept (by index)."""
    total = len(tasks)
    step(progress, "combinations", 0, total)
    if plan is not None:
        return _run_fused(ex, shared, tasks, plan, progress)
    metrics_of: list[dict[str, Any] | None] = [None] * total
    done = 0

    def collect(i: int, out: dict[str, Any]) -> None:
        nonlocal done
        metrics_of[i] = out["metrics"]
        done += 1
        step(progress, "combinations", done, total)

    ex.run(run_combo, shared, tasks, collect)
    return metrics_of


#: combinations per fused task (a few per thread: progress moves, Ray gets chunks to spread)
FUSED_CHUNK = 64


def _run_fused(
    ex: Executor,
    shared: _Shared,
    tasks: list[_Task],
    plan: fz.FusedPlan,
    progress: Progress | None,
) -> list[dict[str, Any] | None]:
    """Every combination's metrics from the fused kernel, in chunks through the executor
    (in this process for the local pool: the kernel already runs on every core). A
    combination the kernel could not finish exactly is run per combination instead."""
    total = len(tasks)
    metrics_of: list[dict[str, Any] | None] = [None] * total
    chunks = fz.chunks(plan, size=FUSED_CHUNK)
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

    runner = LocalExecutor() if isinstance(ex, ProcessPoolExecutor) else ex
    runner.run(fz.run_chunk, plan, chunks, collect)
    return metrics_of


def _parent_params(
    graphs: Sequence[StrategyGraph],
    axes: Sequence[Axis],
    shared: _Shared,
    ex: Executor,
    where: _Where,
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
        tasks: list[_Task],
        combos: list[dict[str, Any]],
        shared: _Shared,
        where: _Where,
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


def _run_logged(
    ex: Executor,
    shared: _Shared,
    tasks: list[_Task],
    combos: list[dict[str, Any]],
    axes: Sequence[Axis],
    where: _Where,
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
    shared: _Shared,
    tasks: list[_Task],
    plan: fz.FusedPlan,
    where: _Where,
    children: _Children,
) -> None:
    """Fused metrics for every child; the best ``where.log_top`` by ``where.sort`` re-run
    per combination for their equity and trades (their metrics must come out the same)."""
    metrics_of = _run_fused(ex, shared, tasks, plan, None)
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
