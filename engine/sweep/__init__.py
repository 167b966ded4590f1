"""Parameter sweeps: a strategy over the cartesian product of param grids.

Public API::

    run_sweep(path, grid, *, overrides=(), symbols=None, start=None, end=None, store=None,
              results=None, workers=None, executor="process", log=True, log_decisions=False,
              force=False, sort="sharpe", progress=None, log_top=10, fused=True) -> SweepResult
    sweep(path, *, grid={"fast": [5, 9], ...}, symbols=None, start=None, end=None, store=None,
          executor="local", ...) -> polars.DataFrame (one row per combination)
    run_search(path, grid, *, search="grid"|"random"|"optuna", trials=None, seed=None,
               where="fast < slow", sort="sharpe", log=True, **run_sweep kwargs) -> SweepResult
    run_walk_forward(path, grid, *, in_sample="90d", out_of_sample="30d", search=..., where=...,
                     sort=..., start=..., end=..., ...) -> WalkForwardResult
    parse_grid(items, *, force=False) -> list[Axis];  combinations(axes) -> list[dict]
    Executor (protocol), LocalExecutor, ProcessPoolExecutor, RayExecutor, make_executor

See ``docs/architecture.md`` ("Sweeps").
"""

from __future__ import annotations

#: packages whose kernels this package's kernels compile into their own (the fused sweep
#: kernel runs the simulator's bar step and the rule step): engine.kernels.cache's guard
#: drops this package's cached machine code when their sources change. Set before the
#: imports below, which decorate the package's first kernels
KERNEL_DEPENDS = ("engine.sim", "engine.strategy")

from engine.sweep.api import sweep
from engine.sweep.combos import SORT_KEYS, ComboResult, SweepResult, rank
from engine.sweep.executors import (
    Executor,
    LocalExecutor,
    ProcessPoolExecutor,
    RayExecutor,
    make_executor,
)
from engine.sweep.grid import MAX_COMBOS, Axis, combinations, parse_axis, parse_grid
from engine.sweep.runner import run_sweep
from engine.sweep.search import SEARCHES, compile_where, run_search
from engine.sweep.walkforward import WalkForwardResult, run_walk_forward, windows

__all__ = [
    "MAX_COMBOS",
    "SEARCHES",
    "SORT_KEYS",
    "Axis",
    "ComboResult",
    "Executor",
    "LocalExecutor",
    "ProcessPoolExecutor",
    "RayExecutor",
    "SweepResult",
    "WalkForwardResult",
    "combinations",
    "compile_where",
    "make_executor",
    "parse_axis",
    "parse_grid",
    "rank",
    "run_search",
    "run_sweep",
    "run_walk_forward",
    "sweep",
    "windows",
]
