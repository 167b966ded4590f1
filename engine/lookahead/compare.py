"""A shorter run's outputs against the whole run's, on the bars they share
(:func:`compare_outputs`).

Equal means the same value, exactly: floats compare bit for bit except that NaN equals NaN
(a feature still warming up, a model that abstained, no decision) and -0.0 equals 0.0; other
values (model versions, codes) compare with ``==``. A column one run has and the other lacks
is a difference on every bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.lookahead.outputs import GraphOutputs


@dataclass(frozen=True)
class Difference:
    """One output column that differs between a prefix run and the whole run.

    ``bars`` of the ``compared`` shared bars differ; ``first_time`` is the first of them,
    where the prefix run had ``prefix`` and the whole run ``full``.
    """

    cut: int
    cut_time: int
    kind: str
    symbol: str
    column: str
    bars: int
    compared: int
    first_time: int
    prefix: Any
    full: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "cut": self.cut,
            "cut_time": self.cut_time,
            "kind": self.kind,
            "symbol": self.symbol,
            "column": self.column,
            "bars": self.bars,
            "compared": self.compared,
            "first_time": self.first_time,
            "prefix": self.prefix,
            "full": self.full,
        }


def differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool mask of the positions where ``a`` and ``b`` (same length) hold different values.

    >>> differ(np.array([1.0, np.nan, 2.0]), np.array([1.0, np.nan, np.nan])).tolist()
    [False, False, True]
    >>> differ(np.array(["a", None], dtype=object), np.array(["a", "b"], dtype=object)).tolist()
    [False, True]
    """
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        return np.asarray(a != b)
    return np.fromiter((x != y for x, y in zip(a.tolist(), b.tolist(), strict=True)), bool, a.size)


def compare_outputs(
    prefix: GraphOutputs, full: GraphOutputs, *, cut: int
) -> tuple[list[Difference], int]:
    """Every column of ``prefix`` that differs from ``full`` on the prefix's bars.

    Returns the differences and the number of values compared. The grids must share their
    start (a prefix run starts where the whole run does); a grid that is not the head of the
    whole run's is itself reported (kind ``grid``).
    """
    n = prefix.open_time.shape[0]
    cut_time = int(prefix.open_time[-1]) if n else 0
    out: list[Difference] = []
    head = full.open_time[:n]
    if head.shape[0] != n or not np.array_equal(head, prefix.open_time):
        bad = _first_grid_difference(prefix.open_time, head)
        out.append(
            Difference(cut, cut_time, "grid", "*", "open_time", 1, n, bad[0], bad[1], bad[2])
        )
        return out, 0
    compared = 0
    for key in sorted(set(prefix.columns) | set(full.columns), key=_order):
        kind, sym, name = key
        p, f = prefix.columns.get(key), full.columns.get(key)
        if p is None or f is None:
            have = p if p is not None else f
            assert have is not None
            side = "only in the whole run" if p is None else "only in the prefix run"
            t0 = int(have.open_time[0]) if have.open_time.size else 0
            if p is None and t0 > cut_time:
                continue  # a symbol whose bars all come after the cut
            out.append(Difference(cut, cut_time, kind, sym, name, -1, 0, t0, side, side))
            continue
        m = p.values.shape[0]
        fot = f.open_time[:m]
        if fot.shape[0] != m or not np.array_equal(fot, p.open_time):
            t, pv, fv = _first_grid_difference(p.open_time, fot)
            out.append(Difference(cut, cut_time, kind, sym, name, -1, m, t, pv, fv))
            continue
        d = differ(p.values, f.values[:m])
        compared += m
        if d.any():
            i = int(np.flatnonzero(d)[0])
            out.append(
                Difference(
                    cut,
                    cut_time,
                    kind,
                    sym,
                    name,
                    int(d.sum()),
                    m,
                    int(p.open_time[i]),
                    _plain(p.values[i]),
                    _plain(f.values[i]),
                )
            )
    return out, compared


def _order(key: tuple[str, str, str]) -> tuple[int, str, str]:
    kinds = ("grid", "feature", "prediction", "decision")
    return (kinds.index(key[0]) if key[0] in kinds else len(kinds), key[1], key[2])


def _first_grid_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, Any, Any]:
    m = min(a.shape[0], b.shape[0])
    bad = np.flatnonzero(a[:m] != b[:m])
    i = int(bad[0]) if bad.size else m
    pa = int(a[i]) if i < a.shape[0] else None
    pb = int(b[i]) if i < b.shape[0] else None
    return (pa if pa is not None else pb or 0), pa, pb


def _plain(x: Any) -> Any:
    """A JSON-ready scalar (NaN becomes None)."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and x != x:
        return None
    return x
