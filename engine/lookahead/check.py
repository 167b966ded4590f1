"""The whole-graph prefix-invariance proof as a user command: :func:`lookahead_check`.

The graph runs once over the whole span and once per random cut, over the same start up to
the cut's bar (a real run: its own strategy load, data load, features, walk-forward models,
fusion, risk and simulator). Every output of the shorter run must equal the whole run's on
the bars they share, exactly (:mod:`engine.lookahead.compare`). Anything computed from a
later bar shows up there: a feature that reads the next bar differs on the prefix's last bar,
a model fed its own label abstains (or predicts otherwise) where the prefix cannot know it.

Why a prefix, not any window: the features' warm-up and the ML stage's fold schedule
(cutoffs ``start + warmup + k * retrain_every``) are anchored to the run's start, so a run
that starts at the same bar has the same warm-up bars (compared too: NaN equals NaN) and the
same folds; a cut in the middle of a fold is exactly the case a truly walk-forward model
passes (its model for bar t was trained on labels known before t, and reused from the model
cache by its version) and a leaking one fails.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ConfigError
from engine.lookahead.compare import Difference, compare_outputs
from engine.lookahead.outputs import KINDS, run_outputs
from engine.progress import Progress, step
from engine.strategy import load_strategy
from engine.timeutil import fmt_ms, parse_time

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable


@dataclass(frozen=True)
class Cut:
    """One prefix run: its last grid bar (index and open time), how it was chosen
    (``random``, ``edge: <kind>``, ``given``), values compared, seconds, columns differing."""

    bar: int
    time: int
    kind: str
    compared: int
    seconds: float
    differences: int


@dataclass(frozen=True)
class LookaheadReport:
    """What :func:`lookahead_check` found. ``ok``: no output differs at any cut."""

    strategy: str
    symbols: tuple[str, ...]
    interval: str
    start: int
    end: int
    n_bars: int
    first_live_bar: int
    columns: dict[str, int]
    cuts: list[Cut]
    differences: list[Difference]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    def by_column(self) -> list[dict[str, Any]]:
        """Differences grouped by column: cuts where it differs, bars, the earliest one."""
        groups: dict[tuple[str, str, str], list[Difference]] = {}
        for d in self.differences:
            groups.setdefault((d.kind, d.symbol, d.column), []).append(d)
        out = []
        for (kind, sym, col), ds in groups.items():
            first = min(ds, key=lambda d: d.first_time)
            out.append(
                {
                    "kind": kind,
                    "symbol": sym,
                    "column": col,
                    "cuts": len(ds),
                    "bars": sum(max(d.bars, 0) for d in ds),
                    "first_time": first.first_time,
                    "prefix": first.prefix,
                    "full": first.full,
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "strategy": self.strategy,
            "symbols": list(self.symbols),
            "interval": self.interval,
            "start": self.start,
            "end": self.end,
            "bars": self.n_bars,
            "first_live_bar": self.first_live_bar,
            "columns": self.columns,
            "cuts": [c.__dict__ for c in self.cuts],
            "differing_columns": self.by_column(),
            "differences": [d.to_dict() for d in self.differences],
            "seconds": self.seconds,
        }


def pick_cuts(
    n_bars: int, first_live_bar: int, k: int, *, seed: int, among: np.ndarray | None = None
) -> list[int]:
    """``k`` distinct random last bars for the prefix runs, after ``first_live_bar`` and
    before the whole run's last bar (all of them when fewer), sorted; drawn from ``among``
    (bar indices) when given.

    >>> pick_cuts(100, 10, 3, seed=1) == pick_cuts(100, 10, 3, seed=1)
    True
    >>> pick_cuts(15, 10, 9, seed=0)
    [11, 12, 13]
    """
    lo, hi = first_live_bar + 1, n_bars - 1
    if k < 0:
        raise ConfigError(f"--cuts: must be 0 or more, got {k}")
    if hi <= lo:
        raise ConfigError(
            f"the span has {n_bars} bars and the graph's first decision that is not warm-up "
            f"is at bar {first_live_bar}: no bar left to cut at",
            hint="widen the span (--start/--end) or shorten the warm-up (training.warmup)",
        )
    pool: Any = range(lo, hi)
    if among is not None:
        pool = [int(i) for i in among if lo <= i < hi]
    return sorted(random.Random(seed).sample(pool, min(k, len(pool))))


def pick_edges(
    n_bars: int,
    first_live_bar: int,
    k: int,
    edges: dict[str, np.ndarray],
    *,
    seed: int,
    taken: Iterable[int] = (),
) -> dict[int, str]:
    """``k`` random edge bars, the kinds taken in turn (so the rare fold cutoffs get cuts
    beside the many higher-timeframe closes), none in ``taken``: ``{bar: kind}``.

    >>> sorted(pick_edges(100, 10, 3, {"a": np.arange(20, 30), "b": np.array([50])}, seed=0))[-1]
    50
    """
    rng = random.Random(seed)
    chosen = set(taken)
    pools = {
        kind: [int(i) for i in bars if first_live_bar < i < n_bars - 1 and int(i) not in chosen]
        for kind, bars in sorted(edges.items())
    }
    pools = {kind: pool for kind, pool in pools.items() if pool}
    out: dict[int, str] = {}
    while len(out) < k and pools:
        for kind in list(pools):
            if len(out) == k:
                break
            pool = pools[kind]
            bar = pool.pop(rng.randrange(len(pool)))
            if bar not in chosen:
                chosen.add(bar)
                out[bar] = kind
            if not pool:
                del pools[kind]
    return out


def _grid_bar(open_time: np.ndarray, value: str | int) -> int:
    """The index of the whole run's bar opening at ``value`` (before its last bar)."""
    t = parse_time(value, name="--at")
    i = int(np.searchsorted(open_time, t)) if t is not None else open_time.shape[0]
    if i >= open_time.shape[0] - 1 or int(open_time[i]) != t:
        raise ConfigError(
            f"--at: no bar of the run opens at {value!r} (or it is the run's last bar)",
            hint=f"give a bar open time between {fmt_ms(int(open_time[0]))} and "
            f"{fmt_ms(int(open_time[-2]))} on the {int(open_time[1] - open_time[0]) // 60_000}"
            " min grid",
        )
    return i


def lookahead_check(
    path: str | Path,
    *,
    cuts: int = 5,
    seed: int = 0,
    at: Iterable[str | int] = (),
    edges: int = 0,
    overrides: Iterable[str] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> LookaheadReport:
    """Run the strategy at ``path`` over its span and over ``cuts`` random prefixes of it;
    report every feature, prediction and decision that differs on the shared bars.

    ``at``: last bars to cut at besides the random ones (times, e.g. a cut that an earlier
    check found to differ, to rerun it alone with ``cuts=0``).

    ``edges``: cuts drawn (with the same seed, the kinds in turn) from the bars where a run's
    end meets an event (a funding time, a higher-timeframe close, a fold's cutoff and the
    label horizon after it: :func:`engine.lookahead.outputs.edge_bars`), besides the ``cuts``
    drawn anywhere.

    ``results`` holds the model cache (``<results>/models``): the whole run trains the
    walk-forward models (or reuses them) and the prefix runs reuse the versions they share
    with it. Nothing is written to the run log.

    Examples
    --------
    >>> r = lookahead_check("strategies/ema_cross.yaml", cuts=3)  # doctest: +SKIP
    >>> r.ok, [c.bar for c in r.cuts]  # doctest: +SKIP
    (True, [21807, 60349, 127455])
    """
    ov, at = list(overrides), list(at)
    t0 = time.perf_counter()
    graph = load_strategy(path, overrides=ov, symbols=symbols, start=start, end=end)
    total = cuts + edges + len(at) + 1
    step(progress, "whole span", 0, total)
    full = run_outputs(graph, store=store, results=results)
    secs = {"whole": time.perf_counter() - t0}
    n = int(full.open_time.shape[0])
    kinds = dict.fromkeys(
        pick_cuts(n, full.first_live_bar, cuts, seed=seed) if cuts else [], "random"
    )
    if edges:
        picked = pick_edges(n, full.first_live_bar, edges, full.edges, seed=seed, taken=kinds)
        kinds.update({b: f"edge: {kind}" for b, kind in picked.items()})
    kinds.update({_grid_bar(full.open_time, x): "given" for x in at})
    bars = sorted(kinds)
    if not bars:
        raise ConfigError("no cut to run: give --cuts K (at least 1) or --at TIME")
    first_time = int(full.open_time[0])
    done: list[Cut] = []
    diffs: list[Difference] = []
    for i, k in enumerate(bars):
        step(progress, f"prefix {i + 1}/{len(bars)}", i + 1, total)
        t1 = time.perf_counter()
        part_graph = load_strategy(
            path, overrides=ov, symbols=symbols, start=first_time, end=str(int(full.open_time[k]))
        )
        part = run_outputs(part_graph, store=store, results=results)
        found, compared = compare_outputs(part, full, cut=k)
        diffs.extend(found)
        secs_k = time.perf_counter() - t1
        done.append(Cut(k, int(full.open_time[k]), kinds[k], compared, secs_k, len(found)))
    secs["prefixes"] = sum(c.seconds for c in done)
    secs["total"] = time.perf_counter() - t0
    counts = {kind: sum(1 for key in full.columns if key[0] == kind) for kind in KINDS}
    return LookaheadReport(
        strategy=str(Path(path)),
        symbols=tuple(graph.symbols),
        interval=graph.interval,
        start=first_time,
        end=int(full.open_time[-1]),
        n_bars=n,
        first_live_bar=full.first_live_bar,
        columns=counts,
        cuts=done,
        differences=diffs,
        seconds=secs,
    )
