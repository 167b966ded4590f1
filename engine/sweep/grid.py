"""Sweep grids: ``--grid name=v1,v2,...`` or ``--grid name=start:stop:step``, checked at the door.

A grid axis names a param (``fast``) or any key by its dotted path (``risk.fraction``), the
same names ``--set`` takes. Values are read as YAML scalars (``12`` int, ``0.5`` float,
``true``, text). A range ``a:b:step`` is inclusive of ``b`` when ``b`` lies on the step
(``0.05:0.2:0.05`` -> 0.05, 0.1, 0.15, 0.2); it is computed in decimal arithmetic from the
text, so no float drift creeps in (0.15 is 0.15, not 0.15000000000000002), and gives ints
when all three parts are whole numbers.

The combinations are the cartesian product of the axes in the order given, the last axis
varying fastest; that order is the combinations' index, stable for a given command line.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from engine.errors import ConfigError, UsageError
from engine.strategy.config import StrategyConfig
from engine.strategy.params import apply_overrides, parse_set

#: above this many combinations a sweep needs ``force=True`` (``--force``)
MAX_COMBOS = 10_000

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Axis:
    """One grid axis: a param or dotted config key and its values, in order."""

    name: str
    values: tuple[Any, ...]
    spec: str  # as typed, for messages


@functools.lru_cache(maxsize=4096)
def _scalar(text: str) -> Any:
    """A value's text read as YAML reads it (a list or mapping stays text); kept by text,
    the values being immutable scalars (a sweep's axes repeat them: ~0.1 ms a read)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, list | dict) else value


def _decimal(part: str, item: str) -> Decimal:
    try:
        d = Decimal(part.strip())
    except InvalidOperation:
        raise UsageError(
            f"--grid {item!r}: range part {part.strip()!r} is not a number",
            hint="a range is start:stop:step with numbers, e.g. --grid risk.fraction=0.05:0.2:0.05",
        ) from None
    if not d.is_finite():
        raise UsageError(f"--grid {item!r}: range part {part.strip()!r} is not a finite number")
    return d


def _range(text: str, item: str) -> tuple[Any, ...]:
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(
            f"--grid {item!r}: a range needs start:stop:step, got {len(parts)} part(s)",
            hint="for example --grid fast=5:20:5 (5, 10, 15, 20)",
        )
    start, stop, step = (_decimal(p, item) for p in parts)
    if step <= 0:
        raise UsageError(
            f"--grid {item!r}: the step must be > 0, got {step}",
            hint="write the range from low to high, e.g. 5:20:5",
        )
    if stop < start:
        raise UsageError(
            f"--grid {item!r}: the range is empty (stop {stop} < start {start})",
            hint="write the range from low to high, e.g. 5:20:5",
        )
    count = int((stop - start) / step) + 1
    if count > MAX_COMBOS:
        raise UsageError(
            f"--grid {item!r}: the range has {count:,} values (more than {MAX_COMBOS:,})",
            hint="use a larger step",
        )
    whole = all(d == d.to_integral_value() for d in (start, step))
    values = [start + k * step for k in range(count)]
    if whole:
        return tuple(int(v) for v in values)
    return tuple(float(v) for v in values)


def parse_axis(item: str) -> Axis:
    """Parse one ``--grid`` item.

    >>> parse_axis("fast=5,9,12").values
    (5, 9, 12)
    >>> parse_axis("risk.fraction=0.05:0.2:0.05").values
    (0.05, 0.1, 0.15, 0.2)
    """
    if "=" not in item:
        raise UsageError(
            f"--grid {item!r}: expected name=values",
            hint="for example --grid fast=5,9,12 or --grid risk.fraction=0.05:0.2:0.05",
        )
    name, _, text = item.partition("=")
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"--grid {item!r}: {name!r} is not a param name or dotted config path",
            hint="for example --grid fast=5,9,12 or --grid risk.fraction=0.1,0.2",
        )
    text = text.strip()
    if not text:
        raise UsageError(
            f"--grid {item!r}: no values given", hint=f"for example --grid {name}=5,9,12"
        )
    if ":" in text and "," not in text:
        values = _range(text, item)
    else:
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise UsageError(
                f"--grid {item!r}: an empty value in the list",
                hint=f"separate values by single commas, e.g. --grid {name}=5,9,12",
            )
        values = tuple(_scalar(p) for p in parts)
    seen: list[tuple[type, Any]] = []
    for v in values:
        if (type(v), v) in seen:
            raise UsageError(
                f"--grid {item!r}: value {v!r} is listed twice",
                hint="each value of an axis once",
            )
        seen.append((type(v), v))
    return Axis(name=name, values=values, spec=item)


def parse_grid(items: Iterable[str], *, force: bool = False) -> list[Axis]:
    """Parse every ``--grid`` item; refuse an empty grid, a repeated axis and a grid larger
    than :data:`MAX_COMBOS` combinations unless ``force``."""
    axes = [parse_axis(i) for i in items]
    if not axes:
        raise UsageError(
            "no --grid given: a sweep needs at least one axis",
            hint="for example engine sweep strategies/ema_cross.yaml --grid fast=5,9,12 --grid slow=26,50",
        )
    names = [a.name for a in axes]
    for n in names:
        if names.count(n) > 1:
            raise UsageError(
                f"--grid {n!r} is given {names.count(n)} times",
                hint=f"list all values in one axis: --grid {n}=v1,v2,...",
            )
    total = n_combos(axes)
    if total > MAX_COMBOS and not force:
        raise UsageError(
            f"the grid has {total:,} combinations ({' x '.join(str(len(a.values)) for a in axes)}), "
            f"more than {MAX_COMBOS:,}",
            hint="narrow the grid, or pass --force to run it anyway",
        )
    return axes


def n_combos(axes: Sequence[Axis]) -> int:
    """How many combinations the axes make."""
    total = 1
    for a in axes:
        total *= len(a.values)
    return total


def combinations(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """The cartesian product as ``{name: value}`` dicts, last axis fastest.

    >>> combinations([Axis("a", (1, 2), ""), Axis("b", (3, 4), "")])
    [{'a': 1, 'b': 3}, {'a': 1, 'b': 4}, {'a': 2, 'b': 3}, {'a': 2, 'b': 4}]
    """
    names = [a.name for a in axes]
    return [
        dict(zip(names, vals, strict=True)) for vals in itertools.product(*(a.values for a in axes))
    ]


def check_axes(
    axes: Sequence[Axis], raw: Any, *, fixed: Mapping[str, Any] | Iterable[str] = ()
) -> None:
    """Each axis names a declared param or a key of the schema, and none is also a ``--set``.

    A bare name must be one of the strategy's ``params`` (else: the closest one); a dotted
    path must be a key of the strategy schema (checked by :func:`apply_overrides`).
    """
    set_names = (
        set(fixed) if isinstance(fixed, Mapping) else {parse_set(s)[0] for s in fixed}  # type: ignore[union-attr]
    )
    params = raw.get("params") if isinstance(raw, dict) else None
    params = params if isinstance(params, dict) else {}
    for axis in axes:
        if axis.name in set_names:
            raise UsageError(
                f"--grid {axis.spec!r}: {axis.name!r} is also given with --set",
                hint=f"drop --set {axis.name}=... (the grid sets it)",
            )
        if "." not in axis.name:
            if axis.name not in params:
                close = difflib.get_close_matches(axis.name, list(params), n=1, cutoff=0.6)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else (
                        f"known params: {', '.join(sorted(params))}."
                        if params
                        else "the strategy declares no params."
                    )
                )
                raise ConfigError(
                    f"--grid {axis.spec!r}: unknown param {axis.name!r}",
                    hint=hint + " To sweep another key, give its dotted path (e.g. risk.fraction).",
                )
            continue
        try:
            apply_overrides(raw, {axis.name: axis.values[0]}, schema=StrategyConfig)
        except ConfigError as err:
            msg = err.message
            label = msg.split(": ", 1)
            raise ConfigError(
                f"--grid {axis.spec!r}: {label[1] if len(label) == 2 else msg}", hint=err.hint
            ) from None
