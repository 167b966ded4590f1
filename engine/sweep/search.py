"""Which combinations a sweep runs: the whole grid, a random sample, or an Optuna (TPE) search,
each filtered by a ``--where`` condition over the axes.

- ``grid``: every combination the filter keeps, in grid order (last axis fastest).
- ``random``: ``trials`` distinct combinations drawn without replacement from those the filter
  keeps (``numpy.random.default_rng(seed)``), run in grid order.
- ``optuna``: Optuna's TPE sampler (seeded) asks for ``batch`` combinations at a time (an
  axis of increasing numbers as the int position of its value, so neighbours are near; any
  other axis as a categorical; constant liar between the asks of a batch), the sweep runs
  the new ones (unlogged, through :func:`engine.sweep.runner.run_sweep`, so any strategy
  works, ML graphs too) and tells their sort metric back; a combination it asks for again is
  answered from the cache, one the filter refuses is told as failed. ``trials`` counts
  distinct combinations run. Then they are run once more as one logged sweep, in the order
  they were first asked for (the unlogged rounds only steer the search).

``--where`` is a condition in Python syntax over the axis names (dotted ones too):
``fast < slow``, ``slow >= 2 * fast and risk.fraction <= 0.1``; comparisons (chained), and,
or, not, ``+ - * / %``, numbers, True/False, ``abs min max``. Anything else is refused with
the column of the offending part.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from engine.errors import UsageError
from engine.sweep.combos import LOWER_IS_BETTER, ComboResult, SweepResult, check_sort
from engine.sweep.grid import Axis, combinations, parse_grid
from engine.sweep.runner import run_sweep

SEARCHES = ("grid", "random", "optuna")

#: Optuna trials asked per round (each round is one unlogged sweep of the new combinations)
OPTUNA_BATCH = 4

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max}

Where = Callable[[Mapping[str, Any]], bool]


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def compile_where(text: str, names: Sequence[str]) -> Where:
    """``--where`` text as a predicate over a combination (``{axis name: value}``).

    >>> keep = compile_where("fast < slow and risk.fraction <= 0.1", ["fast", "slow", "risk.fraction"])
    >>> keep({"fast": 5, "slow": 26, "risk.fraction": 0.1}), keep({"fast": 50, "slow": 26, "risk.fraction": 0.1})
    (True, False)
    """

    def fail(node: ast.AST | None, why: str) -> UsageError:
        col = (
            f" (column {node.col_offset + 1})"
            if node is not None and hasattr(node, "col_offset")
            else ""
        )
        return UsageError(
            f"--where {text!r}{col}: {why}",
            hint="a condition over the grid's axes, e.g. --where 'fast < slow' "
            f"(axes: {', '.join(names)}; and/or/not, comparisons, + - * / %, abs/min/max)",
        )

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise fail(None, f"syntax error: {err.msg}") from None
    known = set(names)

    def check(node: ast.expr) -> None:
        name = _dotted(node)
        if name is not None:
            if name not in known:
                raise fail(node, f"{name!r} is not an axis of the grid")
            return
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool | int | float):
                return
            raise fail(node, f"the constant {node.value!r} is not a number")
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                check(v)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
            check(node.operand)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            check(node.left)
            check(node.right)
        elif isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            check(node.left)
            for c in node.comparators:
                check(c)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            for a in node.args:
                check(a)
        else:
            raise fail(node, f"{type(node).__name__} is not allowed here")

    check(tree.body)

    def ev(node: ast.expr, combo: Mapping[str, Any]) -> Any:
        name = _dotted(node)
        if name is not None:
            return combo[name]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BoolOp):
            vals = (ev(v, combo) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand, combo)
            if isinstance(node.op, ast.Not):
                return not v
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left, combo), ev(node.right, combo))
        if isinstance(node, ast.Compare):
            left = ev(node.left, combo)
            for op, c in zip(node.ops, node.comparators, strict=True):
                right = ev(c, combo)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCS[node.func.id](*(ev(a, combo) for a in node.args))

    def keep(combo: Mapping[str, Any]) -> bool:
        try:
            return bool(ev(tree.body, combo))
        except (TypeError, ZeroDivisionError) as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
            raise fail(None, f"cannot evaluate for {shown}: {err}") from None

    return keep


def kept(axes: Sequence[Axis], where: str | Where | None) -> list[dict[str, Any]]:
    """The grid's combinations (grid order) the ``where`` condition keeps; none kept is an error."""
    combos = combinations(axes)
    if where is None:
        return combos
    keep = compile_where(where, [a.name for a in axes]) if isinstance(where, str) else where
    out = [c for c in combos if keep(c)]
    if not out:
        raise UsageError(
            f"--where {where!r} keeps none of the grid's {len(combos):,} combinations",
            hint="loosen the condition or widen the grid",
        )
    return out


def _check(search: str, trials: int | None) -> None:
    if search not in SEARCHES:
        raise UsageError(
            f"--search must be one of {', '.join(SEARCHES)}, got {search!r}",
            hint="grid: every combination; random/optuna: --trials N of them",
        )
    if search != "grid" and (trials is None or trials < 1):
        raise UsageError(
            f"--search {search} needs --trials N (N >= 1)",
            hint=f"e.g. --search {search} --trials 50",
        )
    if search == "grid" and trials is not None:
        raise UsageError(
            "--trials goes with --search random or optuna",
            hint="drop --trials (the grid runs every combination) or add --search random",
        )


def random_sample(
    combos: Sequence[dict[str, Any]], trials: int, seed: int | None
) -> list[dict[str, Any]]:
    """``trials`` distinct combinations (all when fewer), kept in their grid order."""
    if trials >= len(combos):
        return list(combos)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(combos), size=trials, replace=False))
    return [combos[int(i)] for i in pick]


def choose_combos(
    axes: Sequence[Axis],
    *,
    search: str = "grid",
    trials: int | None = None,
    seed: int | None = None,
    where: str | Where | None = None,
) -> list[dict[str, Any]]:
    """The combinations a grid or random search runs (``optuna`` chooses as it goes)."""
    _check(search, trials)
    combos = kept(axes, where)
    if search == "random":
        assert trials is not None
        return random_sample(combos, trials, seed)
    return combos


def run_search(
    path: Any,
    grid: Sequence[str],
    *,
    search: str = "grid",
    trials: int | None = None,
    seed: int | None = None,
    where: str | Where | None = None,
    sort: str = "sharpe",
    force: bool = False,
    log: bool = True,
    batch: int = OPTUNA_BATCH,
    **kwargs: Any,
) -> SweepResult:
    """A sweep over the combinations ``search`` chooses (see the module docstring).

    ``kwargs`` go to :func:`engine.sweep.runner.run_sweep` (overrides, symbols, start, end,
    store, results, workers, executor, log_decisions, progress, log_top, fused).
    """
    _check(search, trials)
    check_sort(sort)
    axes = parse_grid(grid, force=force or search != "grid")
    how = {
        "search": search,
        "trials": trials,
        "seed": seed,
        "where": where if where is None or isinstance(where, str) else repr(where),
    }
    if search != "optuna":
        combos = choose_combos(axes, search=search, trials=trials, seed=seed, where=where)
        return run_sweep(
            path, grid, combos=combos, sort=sort, force=True, log=log, parent_params=how, **kwargs
        )
    assert trials is not None
    found = optuna_search(
        path, grid, axes, kept(axes, where), trials=trials, seed=seed, sort=sort, batch=batch,
        **kwargs,
    )  # fmt: skip
    order = [c for c, _ in found]
    if log:
        return run_sweep(
            path, grid, combos=order, sort=sort, force=True, log=True, parent_params=how, **kwargs
        )
    return SweepResult(
        run_id=None,
        axes=tuple(axes),
        results=tuple(ComboResult(i, c, m) for i, (c, m) in enumerate(found)),
        sort=sort,
    )


def _key(combo: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple((k, type(v).__name__, v) for k, v in sorted(combo.items()))


def _objective(metrics: Mapping[str, Any], sort: str) -> float | None:
    v = metrics.get(sort)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return None
    return float(v)


#: an Optuna search stops after this many asks per trial (TPE re-asking combinations it has)
MAX_ASKS = 20


def _ordered(axis: Axis) -> bool:
    """Numbers in increasing order: TPE gets the value's position as an int (neighbours
    are near), else a categorical."""
    vals = axis.values
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals) and all(
        a < b for a, b in zip(vals, vals[1:], strict=False)
    )


def _suggest(trial: Any, axis: Axis) -> Any:
    if _ordered(axis):
        return axis.values[trial.suggest_int(axis.name, 0, len(axis.values) - 1)]
    return axis.values[trial.suggest_categorical(axis.name, list(range(len(axis.values))))]


def optuna_search(
    path: Any,
    grid: Sequence[str],
    axes: Sequence[Axis],
    keep: Sequence[dict[str, Any]],
    *,
    trials: int,
    seed: int | None,
    sort: str,
    batch: int = OPTUNA_BATCH,
    **kwargs: Any,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Optuna TPE over the axes until ``trials`` distinct combinations have run (or every kept
    one; at most :data:`MAX_ASKS` asks per trial), asked ``batch`` at a time; the new
    combinations of a batch run as one unlogged sweep. Returns every combination run, with
    its metrics, in the order first asked for."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE's random start-up: a third of the budget (Optuna's default 10 would spend most of a
    # small one at random)
    sampler = optuna.samplers.TPESampler(
        seed=seed, constant_liar=True, n_startup_trials=max(2, min(10, trials // 3))
    )
    study = optuna.create_study(
        direction="minimize" if sort in LOWER_IS_BETTER else "maximize", sampler=sampler
    )
    allowed = {_key(c) for c in keep}
    seen: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
    kwargs = {k: v for k, v in kwargs.items() if k not in ("log_top", "log_decisions")}
    want = min(trials, len(allowed))
    asks = 0
    while len(seen) < want and asks < MAX_ASKS * trials:
        n = min(max(1, batch), want - len(seen))
        round_ = []
        for _ in range(n):
            trial = study.ask()
            round_.append((trial, {a.name: _suggest(trial, a) for a in axes}))
        asks += n
        new: list[dict[str, Any]] = []
        for _, combo in round_:
            k = _key(combo)
            if k in allowed and k not in seen and all(_key(c) != k for c in new):
                new.append(combo)
        if new:
            res = run_sweep(path, grid, combos=new, sort=sort, force=True, log=False, **kwargs)
            for r in res.results:
                seen[_key(r.params)] = (r.params, r.metrics)
        for trial, combo in round_:
            k = _key(combo)
            value = _objective(seen[k][1], sort) if k in seen else None
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
    return list(seen.values())
