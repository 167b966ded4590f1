"""Walk-forward optimization: choose on an in-sample window, trade the next out-of-sample one.

The span (``--start``/``--end``, else the strategy's ``data.start``/``data.end``) is cut into
rolling windows: window k's in-sample part is ``[start + k * oos, start + k * oos + is)`` and
its out-of-sample part the ``oos`` that follows (the last one may be shorter; a window
whose out-of-sample part would hold no time is not made). For each window:

1. **choice**: a sweep (:func:`engine.sweep.search.run_search`: grid, random or Optuna, with
   ``--where``) over the in-sample part only, loaded with ``end`` = the last millisecond
   before the out-of-sample part, so no out-of-sample bar is read; the best combination by
   the sort metric is chosen (ties: the first in grid order);
2. **out-of-sample**: one backtest of that combination from the in-sample start to the
   out-of-sample end (the in-sample bars are its indicators' warm-up, as a backtest's own
   first bars are); the piece is its equity from the close of the last in-sample bar to the
   end of the window, its trades those that closed in the window.

The pieces are stitched into one equity curve, each scaled to start where the previous one
ended (compounded, from the strategy's initial equity), and its metrics computed by
:func:`engine.metrics.compute_metrics`. The degradation per window is the sort metric (and
total return, annualised return) in-sample vs out-of-sample.

Logged as a parent run (mode ``sweep``; params ``walk_forward`` with the windows and their
choices; metrics: the stitched run's metrics, the windows, the degradation) and one child run
holding the stitched curve (``equity`` and ``trades``; params ``walk_forward.oos: true``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.backtest.runner import run_backtest
from engine.decisions import records
from engine.errors import UsageError
from engine.metrics import compute_metrics
from engine.progress import Progress, step
from engine.runlog import RunLog
from engine.strategy.execution import strategy_hash
from engine.strategy.load import load_strategy
from engine.strategy.ml_config import span_ms
from engine.strategy.params import parse_set
from engine.sweep.combos import check_sort
from engine.sweep.grid import parse_grid
from engine.sweep.search import run_search
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import os

    import polars as pl

#: metrics compared in-sample vs out-of-sample, besides the sort metric
COMPARED = ("total_return", "cagr", "sharpe", "max_drawdown")


@dataclass(frozen=True)
class Window:
    """One walk-forward window (UTC ms, both ends inclusive)."""

    index: int
    is_start: int
    is_end: int
    oos_start: int
    oos_end: int


def windows(start: int, end: int, in_sample: int, out_of_sample: int) -> list[Window]:
    """Rolling windows over ``[start, end]`` (ms; ``end`` inclusive), stepping by ``out_of_sample``.

    >>> [(w.is_start, w.is_end, w.oos_start, w.oos_end) for w in windows(0, 99, 50, 30)]
    [(0, 49, 50, 79), (30, 79, 80, 99)]
    """
    if in_sample <= 0 or out_of_sample <= 0:
        raise UsageError("--in-sample and --out-of-sample must be > 0")
    out = []
    k = 0
    while True:
        is_start = start + k * out_of_sample
        oos_start = is_start + in_sample
        if oos_start > end:
            break
        out.append(
            Window(
                index=k,
                is_start=is_start,
                is_end=oos_start - 1,
                oos_start=oos_start,
                oos_end=min(oos_start + out_of_sample - 1, end),
            )
        )
        k += 1
    return out


@dataclass
class WindowResult:
    """A window's choice and its in-sample and out-of-sample metrics."""

    window: Window
    params: dict[str, Any]
    combos: int
    in_sample: dict[str, Any]
    out_of_sample: dict[str, Any]


@dataclass
class WalkForwardResult:
    """What :func:`run_walk_forward` returns."""

    run_id: str | None
    oos_run_id: str | None
    sort: str
    windows: list[WindowResult]
    metrics: dict[str, Any]
    degradation: dict[str, Any]
    equity: pl.DataFrame
    trades: pl.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "oos_run_id": self.oos_run_id,
            "sort": self.sort,
            "metrics": self.metrics,
            "degradation": self.degradation,
            "windows": [window_doc(w) for w in self.windows],
        }


def window_doc(w: WindowResult) -> dict[str, Any]:
    return {
        **asdict(w.window),
        "params": w.params,
        "combos": w.combos,
        "in_sample": w.in_sample,
        "out_of_sample": w.out_of_sample,
    }


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def degradation(results: Sequence[WindowResult], sort: str) -> dict[str, Any]:
    """Per compared metric: the mean in-sample and out-of-sample values over the windows, their
    difference (oos - is) and ratio (oos / is, None when is is 0)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys((sort, *COMPARED)):
        ins = [_num(w.in_sample.get(key)) for w in results]
        oos = [_num(w.out_of_sample.get(key)) for w in results]
        pairs = [(a, b) for a, b in zip(ins, oos, strict=True) if a is not None and b is not None]
        if not pairs:
            out[key] = {"in_sample": None, "out_of_sample": None, "diff": None, "ratio": None}
            continue
        mi = float(np.mean([a for a, _ in pairs]))
        mo = float(np.mean([b for _, b in pairs]))
        out[key] = {
            "in_sample": mi,
            "out_of_sample": mo,
            "diff": mo - mi,
            "ratio": mo / mi if mi != 0 else None,
        }
    return out


def _span(
    path: Any, overrides: list[str], symbols: Any, start: Any, end: Any
) -> tuple[int, int, str]:
    graph = load_strategy(path, overrides=overrides, symbols=symbols, start=start, end=end)
    d = graph.config.data
    if d.start is None or d.end is None:
        raise UsageError(
            "--walk-forward needs a span: give --start and --end (or data.start/data.end)",
            hint="e.g. --start 2023-01-01 --end 2024-05-14 --in-sample 90d --out-of-sample 30d",
        )
    return int(d.start), int(d.end), graph.interval


def curve_metrics(equity: pl.DataFrame, trades: pl.DataFrame, bar_ms: int) -> dict[str, Any]:
    """:func:`engine.metrics.compute_metrics` of an ``equity`` frame and its ``trades``."""
    return compute_metrics(
        times_ms=equity["time"].to_numpy(),
        equity=equity["equity"].to_numpy(),
        trades=trades if trades.height else None,
        bar_interval_ms=bar_ms,
        exposure=equity["exposure"].to_numpy(),
        fees_total=float(trades["fees"].sum()) if trades.height else 0.0,
        funding_total=float(trades["funding"].sum()) if trades.height else 0.0,
    )


def _oos_piece(
    path: Any,
    overrides: dict[str, Any],
    symbols: Any,
    w: Window,
    store: Any,
    results: Any,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any], float]:
    """The chosen combination from the in-sample start to the out-of-sample end; the piece
    from the last in-sample close on, its trades closed in the window, its metrics."""
    import polars as pl

    graph = load_strategy(
        path, overrides=overrides, symbols=symbols, start=w.is_start, end=w.oos_end
    )
    bt = run_backtest(graph, store=store, results=results, log=False)
    eq = records.equity_frame(bt.market, bt.sim)
    tr = records.trade_frame(bt.market, bt.sim)
    before = eq.filter(pl.col("time") < w.oos_start)
    if before.height == 0:
        raise UsageError(
            f"walk-forward window {w.index}: no in-sample bar before the out-of-sample part"
        )
    piece = eq.slice(before.height - 1)  # the last in-sample close is the piece's start point
    trades = tr.filter(pl.col("exit_time") >= w.oos_start)
    metrics = curve_metrics(piece, trades, interval_ms(graph.interval))
    return piece, trades, metrics, float(eq["equity"][0])


def stitch(
    pieces: Sequence[tuple[pl.DataFrame, pl.DataFrame]], initial: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pieces (each starting at the close before its window) compounded into one curve from
    ``initial``; money columns of equity and trades scaled by each piece's factor."""
    import polars as pl

    eqs, trs = [], []
    capital = initial
    for k, (eq, tr) in enumerate(pieces):
        base = float(eq["equity"][0])
        f = capital / base if base else 0.0
        part = eq if k == 0 else eq.slice(1)
        eqs.append(part.with_columns(pl.col("equity", "cash", "exposure") * f))
        if tr.height:
            trs.append(tr.with_columns(pl.col("quantity", "pnl", "fees", "funding") * f))
        capital = float(eq["equity"][-1]) * f
    equity = pl.concat(eqs)
    trades = pl.concat(trs) if trs else pieces[0][1].clear()
    return equity, trades


def run_walk_forward(
    path: str | os.PathLike[str],
    grid: Sequence[str],
    *,
    in_sample: str,
    out_of_sample: str,
    search: str = "grid",
    trials: int | None = None,
    seed: int | None = None,
    where: str | None = None,
    sort: str = "sharpe",
    overrides: Iterable[str] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    executor: Any = "local",
    force: bool = False,
    log: bool = True,
    progress: Progress | None = None,
) -> WalkForwardResult:
    """Walk-forward optimization (see the module docstring)."""
    t0 = time.perf_counter()
    check_sort(sort)
    overrides = list(overrides)
    first, last, interval = _span(path, overrides, symbols, start, end)
    iv = interval_ms(interval)
    try:
        is_ms = span_ms(in_sample, iv, where="--in-sample")
        oos_ms = span_ms(out_of_sample, iv, where="--out-of-sample")
    except (ValueError, AssertionError):
        raise UsageError(
            f"--in-sample {in_sample!r} / --out-of-sample {out_of_sample!r}: expected durations "
            "such as 90d, 12h, 2w",
        ) from None
    wins = windows(first, last, is_ms, oos_ms)
    if not wins:
        raise UsageError(
            f"the span {fmt_ms(first)} .. {fmt_ms(last)} is shorter than --in-sample {in_sample}",
            hint="widen --start/--end or shorten --in-sample",
        )
    set_map = dict(parse_set(s) for s in overrides)
    out: list[WindowResult] = []
    pieces = []
    initial = None
    for w in wins:
        step(progress, "walk-forward windows", w.index, len(wins))
        res = run_search(
            path, grid, search=search, trials=trials, seed=seed, where=where, sort=sort,
            force=force, log=False, overrides=overrides, symbols=symbols, start=w.is_start,
            end=w.is_end, store=store, results=results, workers=workers, executor=executor,
        )  # fmt: skip
        best = res.ranked(sort, top=1)[0]
        piece, trades, oos_metrics, init = _oos_piece(
            path, {**set_map, **best.params}, symbols, w, store, results
        )
        initial = init if initial is None else initial
        pieces.append((piece, trades))
        out.append(WindowResult(w, dict(best.params), len(res.results), best.metrics, oos_metrics))
    step(progress, "walk-forward windows", len(wins), len(wins))
    assert initial is not None
    equity, trades = stitch(pieces, initial)
    metrics = curve_metrics(equity, trades, iv)
    deg = degradation(out, sort)
    timings = {"total": time.perf_counter() - t0}
    result = WalkForwardResult(None, None, sort, out, metrics, deg, equity, trades, timings)
    if log:
        _log(
            result, path, grid, overrides, in_sample, out_of_sample, search, where, results, symbols
        )
    return result


def _log(
    r: WalkForwardResult,
    path: Any,
    grid: Sequence[str],
    overrides: list[str],
    in_sample: str,
    out_of_sample: str,
    search: str,
    where: str | None,
    results: Any,
    symbols: list[str] | None,
) -> None:
    graph = load_strategy(path, overrides=overrides, symbols=symbols)
    wf = {
        "in_sample": in_sample,
        "out_of_sample": out_of_sample,
        "search": search,
        "where": where,
        "windows": [
            {**asdict(w.window), "params": w.params, "combos": w.combos} for w in r.windows
        ],
    }
    params = {
        "strategy_file": str(Path(path)),
        "grid": {a.name: list(a.values) for a in parse_grid(grid, force=True)},
        "combos": max((w.combos for w in r.windows), default=0),
        "overrides": overrides,
        "symbols": list(symbols) if symbols else list(graph.symbols),
        "interval": graph.interval,
        "sort": r.sort,
        "start": r.windows[0].window.is_start,
        "end": r.windows[-1].window.oos_end,
        "walk_forward": wf,
    }
    with RunLog(results) as runlog:
        with runlog.run(
            mode="sweep", strategy=graph.name, params=params, strategy_hash=strategy_hash(graph)
        ) as parent:
            child = runlog.start_run(
                mode="sweep",
                strategy=graph.name,
                params={**params, "walk_forward": {**wf, "oos": True}},
                strategy_hash=strategy_hash(graph),
                parent_run_id=parent,
            )
            runlog.write(child, "equity", r.equity)
            if r.trades.height:
                runlog.write(child, "trades", r.trades)
            runlog.finish_run(child, status="ok", metrics=r.metrics)
            r.run_id, r.oos_run_id = parent, child
            runlog.finish_run(
                parent,
                status="ok",
                metrics={
                    **r.metrics,
                    "walk_forward": {
                        "oos_run_id": child,
                        "degradation": r.degradation,
                        "windows": [window_doc(w) for w in r.windows],
                    },
                    "timings": r.timings,
                },
            )
