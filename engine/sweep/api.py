"""``engine.sweep.sweep``: a parameter sweep as one polars DataFrame, for notebooks and scripts.

The same work as ``engine sweep`` (:func:`engine.sweep.runner.run_sweep`: the fused kernel
for rule strategies, per combination otherwise), with the grid as a mapping of axis name to
values and the results as a table: one row per combination, in grid order (last axis
fastest), with ``index``, one column per axis and one per metric.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import UsageError
from engine.metrics import METRIC_KEYS
from engine.progress import Progress
from engine.sweep.executors import Executor
from engine.sweep.grid import combinations, parse_grid
from engine.sweep.runner import run_sweep

if TYPE_CHECKING:
    import os

    import polars as pl


def grid_items(grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """``{"fast": [5, 9], "risk.fraction": [0.1, 0.2]}`` as ``--grid`` items
    (``["fast=5,9", "risk.fraction=0.1,0.2"]``); each value written as the YAML scalar that
    reads back as the same value.

    >>> grid_items({"fast": [5, 9], "risk.fraction": [0.1, 0.2], "exchange_filters": [False]})
    ['fast=5,9', 'risk.fraction=0.1,0.2', 'exchange_filters=false']
    """
    if not isinstance(grid, Mapping) or not grid:
        raise UsageError(
            f"grid: expected a non-empty mapping of axis name to values, got {grid!r}",
            hint='for example grid={"fast": [5, 9, 12], "slow": [26, 50]}',
        )
    items = []
    for name, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise UsageError(
                f"grid[{name!r}]: expected a list of values, got {values!r}",
                hint=f'for example grid={{"{name}": [5, 9, 12]}}',
            )
        texts = [_scalar_text(name, v) for v in values]
        if not texts:
            raise UsageError(f"grid[{name!r}]: no values given")
        items.append(f"{name}={','.join(texts)}")
    return items


def _scalar_text(name: str, value: Any) -> str:
    if value is None or isinstance(value, bool | int | float | str):
        text = _yaml_text(type(value), value)
        if "," not in text and (":" not in text or not isinstance(value, str)):
            return text
    raise UsageError(
        f"grid[{name!r}]: value {value!r} cannot be a grid value",
        hint="values are numbers, true/false, null or text without ',' and ':'",
    )


@functools.lru_cache(maxsize=4096)
def _yaml_text(kind: type, value: Any) -> str:
    """``value`` as a YAML flow scalar, kept by type and value (1, 1.0 and True hash alike)."""
    return str(yaml.safe_dump(value, default_flow_style=True).splitlines()[0])


def sweep(
    path: str | os.PathLike[str],
    *,
    grid: Mapping[str, Sequence[Any]],
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    store: str | os.PathLike[str] | None = None,
    executor: str | Executor = "local",
    workers: int | None = None,
    overrides: Iterable[str] = (),
    sort: str = "sharpe",
    log: bool = False,
    results: str | os.PathLike[str] | None = None,
    log_top: int = 10,
    force: bool = False,
    progress: Progress | None = None,
    where: Callable[[dict[str, Any]], bool] | None = None,
) -> pl.DataFrame:
    """Backtest a strategy over every combination of ``grid``; one row per combination.

    Parameters
    ----------
    path : the strategy YAML file.
    grid : axis name (a param such as ``fast`` or a dotted key such as ``risk.fraction``)
        -> its values; the combinations are the cartesian product, the last axis fastest.
    symbols, start, end : as for :func:`engine.strategy.load_strategy`.
    store : the data store (default ``$ENGINE_DATA`` or ``./data``).
    executor, workers : where combinations run (``"local"``: this process, the fused kernel
        on every core; ``"process"``, ``"ray"`` or an :class:`Executor`).
    overrides : ``--set`` items applied to every combination.
    sort : the metric the logged sweep ranks by (and picks the ``log_top`` it re-runs by).
    log, results : write the sweep to the run log in ``results`` (default: not logged).
    force : allow more than :data:`engine.sweep.grid.MAX_COMBOS` combinations.
    progress : an :class:`engine.progress.Progress`.
    where : keep only the combinations it accepts (``lambda c: c["fast"] < c["slow"]``).

    Returns
    -------
    polars.DataFrame
        ``index``, one column per axis (named as in ``grid``), then every key of
        :data:`engine.metrics.METRIC_KEYS` (``total_return``, ``sharpe``, ``max_drawdown``,
        ``trades``, ...), and ``run_id`` when logged.

    Example
    -------
    >>> df = sweep("strategies/ema_cross.yaml", grid={"fast": [5, 9], "slow": [26, 50]},
    ...            start="2024-03-01", end="2024-03-03")  # doctest: +SKIP
    >>> df.sort("sharpe", descending=True).select("fast", "slow", "sharpe").row(0)  # doctest: +SKIP
    """
    import polars as pl

    items = grid_items(grid)
    combos = None
    if where is not None:
        combos = [c for c in combinations(parse_grid(items, force=True)) if where(dict(c))]
    res = run_sweep(
        path,
        items,
        combos=combos,
        overrides=overrides,
        symbols=symbols,
        start=start,
        end=end,
        store=store,
        results=results,
        workers=workers,
        executor=executor,
        log=log,
        force=force,
        sort=sort,
        progress=progress,
        log_top=log_top,
    )
    names = [a.name for a in res.axes]
    clash = sorted(set(names) & {"index", "run_id", *METRIC_KEYS})
    if clash:
        raise UsageError(
            f"grid: axis {clash[0]!r} has the name of a result column",
            hint="sweep a param or key of another name",
        )
    cols: dict[str, list[Any]] = {"index": [r.index for r in res.results]}
    for name in names:
        cols[name] = [r.params[name] for r in res.results]
    for key in METRIC_KEYS:
        cols[key] = [r.metrics.get(key) for r in res.results]
    if log:
        cols["run_id"] = [r.run_id for r in res.results]
    return pl.DataFrame(cols, strict=False)
