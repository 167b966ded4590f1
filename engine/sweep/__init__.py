"""Parameter sweeps: a strategy over the cartesian product of param grids.

Public API::

    run_sweep(path, grid, *, overrides=(), symbols=None, start=None, end=None, store=None,
              results=None, workers=None, executor="process", log=True, log_decisions=False,
              force=False, sort="sharpe", progress=None, log_top=10, fused=True) -> SweepResult
    sweep(path, *, grid={"fast": [5, 9], ...}, symbols=None, start=None, end=None, store=None,
          executor="local", ...) -> polars.DataFrame (one row per combination)
    parse_grid(items, *, force=False) -> list[Axis];  combinations(axes) -> list[dict]
    Executor (protocol), LocalExecutor, ProcessPoolExecutor, RayExecutor, make_executor

See ``docs/architecture.md`` ("Sweeps").
"""

from __future__ import annotations

from engine.sweep.api import sweep
from engine.sweep.executors import (
    Executor,
    LocalExecutor,
    ProcessPoolExecutor,
    RayExecutor,
    make_executor,
)
from engine.sweep.grid import MAX_COMBOS, Axis, combinations, parse_axis, parse_grid
from engine.sweep.runner import SORT_KEYS, ComboResult, SweepResult, rank, run_sweep

__all__ = [
    "MAX_COMBOS",
    "SORT_KEYS",
    "Axis",
    "ComboResult",
    "Executor",
    "LocalExecutor",
    "ProcessPoolExecutor",
    "RayExecutor",
    "SweepResult",
    "combinations",
    "make_executor",
    "parse_axis",
    "parse_grid",
    "rank",
    "run_sweep",
    "sweep",
]
