"""Parameter sweeps: one strategy over the cartesian product of param grids, many backtests at once.

Order of work (nothing is written before every input has been read and checked):

1. the grid (:mod:`engine.sweep.grid`), the ``--set`` items and every combination's strategy
   graph are built and validated (ConfigError/UsageError, exit 2);
2. candles and funding are loaded once per distinct data section (normally one);
3. each distinct feature is computed once per symbol: features depend on params only through
   their names (``ema_{fast}`` -> ``ema_9``), so ``ema_9`` is computed once for every
   combination that reads it, and each combination gets a frame of its own columns;
4. per combination (in the executor: a process pool by default): decisions, the simulator,
   metrics -- the same functions :func:`engine.backtest.run_backtest` calls, so a child's
   metrics equal a standalone backtest of the same overrides exactly;
5. the run log: a parent run (mode ``sweep``; the grid in params, a summary in metrics) and
   one child run per combination (mode ``sweep``, ``parent_run_id`` set; ``equity`` and
   ``trades``, plus ``ensemble_decisions`` with ``log_decisions``), written in combination
   order as results arrive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, UsageError
from engine.metrics import METRIC_KEYS
from engine.sweep.executors import Executor, make_executor
from engine.sweep.grid import Axis, check_axes, combinations, parse_grid

if TYPE_CHECKING:
    import os

    import polars as pl

    from engine.decisions.market import Market
    from engine.strategy.graph import StrategyGraph

#: metrics a sweep can be sorted by; those in LOWER_IS_BETTER sort ascending
SORT_KEYS = tuple(k for k in METRIC_KEYS if k not in ("initial_equity", "bars"))
LOWER_IS_BETTER = frozenset({"max_drawdown", "fees", "liquidations"})

Progress = Callable[[int, int], None]


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
        import difflib

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
    from engine.decisions import records
    from engine.decisions.decide import decide
    from engine.backtest.runner import ml_metrics, run_metrics, simulate_graph

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
) -> tuple[list[dict[str, Any]], list[StrategyGraph]]:
    """Every combination and its validated graph (``--set`` items first, then the combination)."""
    from engine.strategy.config import StrategyConfig
    from engine.strategy.load import build_graph
    from engine.strategy.params import apply_overrides, parse_set
    from engine.strategy.yamlio import load_yaml_file

    raw, smap = load_yaml_file(Path(path))
    override_list = list(overrides)
    set_map = dict(parse_set(s) for s in override_list)
    if not isinstance(raw, dict):
        build_graph(raw, smap)  # raises the loader's own error for a non-mapping file
    check_axes(axes, raw, fixed=set_map)
    # the --set items alone (their own messages name the --set)
    apply_overrides(raw, override_list, schema=StrategyConfig)
    combos = combinations(axes)
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
    progress : called as ``progress(done, total)`` after each combination.

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
    from engine.decisions.market import load_graph_market

    t0 = time.perf_counter()
    check_sort(sort)
    axes = tuple(parse_grid(grid, force=force))
    combos, graphs = build_graphs(
        path, axes, overrides=overrides, symbols=symbols, start=start, end=end
    )
    ex = (
        make_executor(executor, workers=workers, tasks=len(graphs))
        if isinstance(executor, str)
        else executor
    )
    timings: dict[str, float] = {"validate": time.perf_counter() - t0}

    # 2. data, once per distinct data section
    t1 = time.perf_counter()
    markets: dict[tuple[Any, ...], Market] = {}
    for g in graphs:
        key = data_key(g)
        if key in markets:
            continue
        markets[key] = load_graph_market(g, store=store)
    timings["load"] = time.perf_counter() - t1

    # 3. each distinct feature once per symbol
    t2 = time.perf_counter()
    features = _shared_features(graphs, markets)
    timings["features"] = time.perf_counter() - t2

    shared = _Shared(
        markets=markets,
        features=features,
        results=str(results) if results is not None else None,
        log=log,
        log_decisions=log_decisions,
    )
    tasks = [_Task(i, g, data_key(g)) for i, g in enumerate(graphs)]
    total = len(tasks)
    say = progress or (lambda _done, _total: None)
    say(0, total)
    metrics_of: list[dict[str, Any] | None] = [None] * total
    run_ids: list[str | None] = [None] * total

    t3 = time.perf_counter()
    if not log:
        done = 0

        def collect(i: int, out: dict[str, Any]) -> None:
            nonlocal done
            metrics_of[i] = out["metrics"]
            done += 1
            say(done, total)

        ex.run(run_combo, shared, tasks, collect)
        parent_id = None
    else:
        parent_id = _run_logged(
            ex, shared, tasks, combos, axes, graphs, markets, metrics_of, run_ids,
            path=path, overrides=list(overrides), store=store, results=results, sort=sort,
            timings=timings, say=say,
        )  # fmt: skip
    timings["combos"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    out = tuple(
        ComboResult(index=i, params=combos[i], metrics=metrics_of[i] or {}, run_id=run_ids[i])
        for i in range(total)
    )
    return SweepResult(
        run_id=parent_id, axes=axes, results=out, sort=sort, timings=timings, workers=ex.workers
    )


def _shared_features(
    graphs: Sequence[StrategyGraph], markets: Mapping[tuple[Any, ...], Market]
) -> dict[tuple[Any, ...], dict[str, pl.DataFrame]]:
    """Per data key and symbol, one frame with every feature any combination reads."""
    import polars as pl

    from engine.features import compute

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


def _run_logged(
    ex: Executor,
    shared: _Shared,
    tasks: list[_Task],
    combos: list[dict[str, Any]],
    axes: Sequence[Axis],
    graphs: list[StrategyGraph],
    markets: Mapping[tuple[Any, ...], Market],
    metrics_of: list[dict[str, Any] | None],
    run_ids: list[str | None],
    *,
    path: Any,
    overrides: list[str],
    store: Any,
    results: Any,
    sort: str,
    timings: dict[str, float],
    say: Progress,
) -> str:
    """Run the combinations and write the parent and child runs (children in index order)."""
    from engine.backtest.runner import run_params
    from engine.strategy.execution import strategy_hash
    from engine.runlog import RunLog

    total = len(tasks)
    first = graphs[0]
    market0 = markets[data_key(first)]
    parent_params = {
        "strategy_file": str(Path(path)),
        "grid": {a.name: list(a.values) for a in axes},
        "combos": total,
        "overrides": overrides,
        "symbols": list(market0.symbols),
        "interval": market0.interval,
        "start": int(market0.open_time[0]),
        "end": int(market0.open_time[-1]),
        "bars": market0.n_bars,
        "sort": sort,
        "workers": ex.workers,
        "executor": type(ex).__name__,
        "log_decisions": shared.log_decisions,
    }
    with RunLog(results) as runlog:
        with runlog.run(
            mode="sweep",
            strategy=first.name,
            params=parent_params,
            strategy_hash=strategy_hash(first),
        ) as parent_id:
            pending: dict[int, dict[str, Any]] = {}
            next_i = 0

            def write_ready() -> None:
                nonlocal next_i
                while next_i in pending:
                    i = next_i
                    out = pending.pop(i)
                    g = graphs[i]
                    params = run_params(g, markets[data_key(g)], store=store)
                    params["sweep"] = {"parent_run_id": parent_id, "index": i, "combo": combos[i]}
                    rid = runlog.start_run(
                        mode="sweep",
                        strategy=g.name,
                        params=params,
                        strategy_hash=strategy_hash(g),
                        parent_run_id=parent_id,
                    )
                    for table, frame in out["frames"].items():
                        if frame.height:
                            runlog.write(rid, table, frame)
                    runlog.finish_run(rid, status="ok", metrics=out["metrics"])
                    run_ids[i] = rid
                    next_i += 1
                    say(next_i, total)

            def collect(i: int, out: dict[str, Any]) -> None:
                metrics_of[i] = out["metrics"]
                pending[i] = out
                write_ready()

            ex.run(run_combo, shared, tasks, collect)
            write_ready()
            ranked = rank(
                [
                    ComboResult(index=i, params=combos[i], metrics=metrics_of[i] or {})
                    for i in range(total)
                ],
                sort,
            )
            runlog.finish_run(
                parent_id, status="ok", metrics=_summary(ranked, sort, run_ids, timings)
            )
    return parent_id


def _summary(
    ranked: list[ComboResult], sort: str, run_ids: list[str | None], timings: dict[str, float]
) -> dict[str, Any]:
    """The parent run's metrics: counts, the best and worst combination, the sort metric's spread."""
    import numpy as np

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
