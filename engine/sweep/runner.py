"""Parameter sweeps: one strategy over the cartesian product of param grids, many backtests at once.

Order of work (nothing is written before every input has been read and checked):

1. the grid (:mod:`engine.sweep.grid`), the ``--set`` items and every combination's strategy
   graph are built and validated (ConfigError/UsageError, exit 2);
2. candles and funding are loaded once per distinct data section (normally one);
3. each distinct feature is computed once per symbol: features depend on params only through
   their names (``ema_{fast}`` -> ``ema_9``), so ``ema_9`` is computed once for every
   combination that reads it, and each combination gets a frame of its own columns (views
   of one block per data key, which the fused kernel reads as it is: :func:`shared_features`);
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
None)``, ``("combinations", 0, total)``, then, for a fused sweep in a process that has not run
one yet, ``(engine.sweep.fused.KERNEL_TASK, 0, None)`` while numba loads or compiles the
kernel, and ``("combinations", done, total)`` as each combination is done (logged: written).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.decisions.decide import rule_columns
from engine.decisions.market import Market, load_graph_market
from engine.errors import ConfigError, UsageError
from engine.features import compute
from engine.progress import Progress, step
from engine.strategy.config import StrategyConfig
from engine.strategy.expr import PRICE_COLUMNS
from engine.strategy.graph import StrategyGraph
from engine.strategy.load import GraphVariants, build_graph
from engine.strategy.params import apply_overrides, parse_set
from engine.strategy.yamlio import load_yaml_file
from engine.sweep import fused as fz
from engine.sweep.combos import (
    ComboResult,
    Shared,
    SweepResult,
    Task,
    check_sort,
    data_key,
    run_combo,
    run_fused,
)
from engine.sweep.executors import Executor, make_executor
from engine.sweep.grid import Axis, check_axes, combinations, parse_grid
from engine.sweep.sweeplog import Where, run_logged

if TYPE_CHECKING:
    import os

    import polars as pl


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
    variants = GraphVariants(raw, smap, overrides=set_map, symbols=symbols, start=start, end=end)
    graphs = []
    for combo in combos:
        try:
            graphs.append(variants.graph(combo))
        except ConfigError as err:
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            raise ConfigError(f"--grid combination {shown}: {err.message}", hint=err.hint) from None
    return combos, graphs


def _checked_combos(
    combos: Sequence[Mapping[str, Any]], axes: Sequence[Axis]
) -> list[dict[str, Any]]:
    """Explicit combinations: each names every axis once with one of its values."""
    names = [a.name for a in axes]
    # (type, value) of each axis value: 1 and 1.0 and True are different values
    values = {a.name: {(type(v), v) for v in a.values} for a in axes}
    out = []
    for i, combo in enumerate(combos):
        if sorted(combo) != sorted(names):
            raise UsageError(
                f"combination {i}: sets {sorted(combo)}, the grid's axes are {names}",
                hint="give every axis a value in each combination",
            )
        for a in axes:
            x = combo[a.name]
            if not (x.__hash__ is not None and (type(x), x) in values[a.name]):
                raise UsageError(
                    f"combination {i}: {a.name}={x!r} is not a value of its axis",
                    hint=f"one of {list(a.values)}",
                )
        out.append({a.name: combo[a.name] for a in axes})
    if not out:
        raise UsageError("no combinations to run", hint="the filter left none of the grid")
    return out


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
    shared, columns = _prepare(graphs, store, results, log, log_decisions, timings, progress)
    tasks = [Task(i, g, data_key(g)) for i, g in enumerate(graphs)]
    t1 = time.perf_counter()
    plan = fz.plan(graphs, shared.markets, columns, data_key) if fused else None
    timings["plan"] = time.perf_counter() - t1
    where = Where(path, overrides, store, results, sort, log_top, dict(parent_params or {}))
    parent_id, metrics_of, run_ids = (
        run_logged(ex, shared, tasks, combos, axes, where, timings, progress, plan)
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
) -> tuple[Shared, dict[tuple[Any, ...], fz.Columns]]:
    """The markets (once per distinct data section) and the features (each distinct one once
    per symbol) that every worker shares, and the columns the fused kernel reads (the
    features frames are views of them: :func:`shared_features`)."""
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
    features, columns = shared_features(graphs, markets)
    timings["features"] = time.perf_counter() - t1
    shared = Shared(
        markets=markets,
        features=features,
        results=str(results) if results is not None else None,
        log=log,
        log_decisions=log_decisions,
    )
    return shared, columns


def shared_features(
    graphs: Sequence[StrategyGraph], markets: Mapping[tuple[Any, ...], Market]
) -> tuple[dict[tuple[Any, ...], dict[str, pl.DataFrame]], dict[tuple[Any, ...], fz.Columns]]:
    """Per data key: per symbol, one frame with every feature any combination reads (each
    distinct feature computed once), and the :class:`~engine.sweep.fused.Columns` block the
    frames are views of, with the candle prices the rules read beside the features (a
    feature's name wins over a price's, as in :func:`engine.decisions.decide.rule_columns`)."""
    import polars as pl

    names: dict[tuple[Any, ...], list[str]] = {}
    prices: dict[tuple[Any, ...], list[str]] = {}
    for g in graphs:
        lst = names.setdefault(data_key(g), [])
        lst.extend(f for f in g.feature_columns if f not in lst)
        read = prices.setdefault(data_key(g), [])
        for r in g.rules.values():
            read.extend(c for c in sorted(r.names) if c in PRICE_COLUMNS and c not in read)
    frames: dict[tuple[Any, ...], dict[str, pl.DataFrame]] = {}
    columns: dict[tuple[Any, ...], fz.Columns] = {}
    for key, market in markets.items():
        graph = next(g for g in graphs if data_key(g) == key)
        feats = names[key]
        price = [c for c in prices[key] if c not in feats]
        index = {name: k for k, name in enumerate(feats)}  # row len(feats): compute's scratch
        index.update({c: len(feats) + 1 + k for k, c in enumerate(price)})
        n_own = max(market.candles[sym].height for sym in market.symbols)
        values = np.empty((len(market.symbols), len(feats) + 1 + len(price), n_own))
        per_sym: dict[str, pl.DataFrame] = {}
        for j, sym in enumerate(market.symbols):
            candles = market.candles[sym]
            m = candles.height
            values[j, :, m:] = np.nan
            if feats:
                per_sym[sym] = compute(
                    candles,
                    feats,
                    funding=market.funding.get(sym),
                    interval=graph.interval,
                    out=values[j, : len(feats) + 1, :m],
                )
            else:
                values[j, 0, :m] = np.nan
                per_sym[sym] = candles.select(pl.col("open_time"))
            if price:  # the prices as a rule reads them (the features' own rows are set)
                have = rule_columns(candles, per_sym[sym])
                for c in price:
                    values[j, index[c], :m] = have[c]
        frames[key] = per_sym
        columns[key] = fz.Columns(values=values, index=index)
    return frames, columns


def _run_unlogged(
    ex: Executor,
    shared: Shared,
    tasks: list[Task],
    progress: Progress | None,
    plan: fz.FusedPlan | None,
) -> list[dict[str, Any] | None]:
    """Run the combinations; only their metrics are kept (by index)."""
    total = len(tasks)
    step(progress, "combinations", 0, total)
    if plan is not None:
        return run_fused(ex, shared, tasks, plan, progress)
    metrics_of: list[dict[str, Any] | None] = [None] * total
    done = 0

    def collect(i: int, out: dict[str, Any]) -> None:
        nonlocal done
        metrics_of[i] = out["metrics"]
        done += 1
        step(progress, "combinations", done, total)

    ex.run(run_combo, shared, tasks, collect)
    return metrics_of
