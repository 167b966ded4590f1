"""Candles of several symbols on one time grid (the graph's candles node, batch mode).

The grid is every ``interval`` step from the earliest first bar to the latest last bar of
the symbols. A symbol without a bar at a grid time has NaN prices there and ``has_bar``
False; the simulator then makes no decision for it on that bar.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.data import load_candles, load_funding, stored_stamp
from engine.errors import DataError
from engine.features import FUNDING_PERIOD_MS
from engine.progress import Progress
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import os

    import polars as pl

    from engine.strategy.graph import StrategyGraph

PRICES = ("open", "high", "low", "close", "volume")

#: how many loaded markets :func:`load_market` keeps for calls over unchanged files
MARKET_CACHE = 2
_cache: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], Market]] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class Market:
    """Time-aligned market data for the run. Shared: :func:`load_market` gives the same
    object to every call over the same stored files, so nothing may write to its arrays or
    frames (``tests/data/test_market_cache.py`` checks a backtest, a sweep and a
    lookahead check on one leave it as loaded).

    Attributes
    ----------
    symbols : column order of every 2-D array.
    interval : the base interval.
    open_time : int64[n] grid bar open times (UTC ms).
    open, high, low, close, volume : float64[n, S] (NaN where a symbol has no bar).
    has_bar : bool[n, S].
    funding_rate : float64[n, S]: the rate settled at the bar's open time, NaN elsewhere.
    candles : each symbol's own bars as loaded (for features).
    funding : each symbol's funding events (None when funding is off).
    rows : int64 row of each symbol's own bars on the grid.
    """

    symbols: tuple[str, ...]
    interval: str
    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    has_bar: np.ndarray
    funding_rate: np.ndarray
    candles: dict[str, pl.DataFrame]
    funding: dict[str, pl.DataFrame | None]
    rows: dict[str, np.ndarray]

    @property
    def n_bars(self) -> int:
        return int(self.open_time.shape[0])


def load_market(
    symbols: tuple[str, ...] | list[str],
    interval: str,
    *,
    start: int | None,
    end: int | None,
    store: str | os.PathLike[str] | None,
    funding: bool,
    market: str = "usdm",
    progress: Progress | None = None,
) -> Market:
    """Load each symbol's candles (and funding) and align them on one grid.

    ``progress`` hears a download from Binance Vision when the store lacks the span
    (:func:`engine.data.load_candles`).

    The last :data:`MARKET_CACHE` markets loaded are kept: a call with the same arguments
    while the store's files are unchanged (:func:`engine.data.stored_stamp`, taken before
    and after the load) returns the same :class:`Market`, read by everyone and written by
    no one. Sweeps re-run in one process (Optuna's batches, a notebook, ``bench/``) read
    the files' stamps, not the rows (~15 ms of a 5m sweep's ~170, most of it page faults
    of the fresh grid arrays); :func:`clear_market_cache` drops them.

    Raises
    ------
    DataError
        A symbol has no bars in the span (engine.data names the span and the command to get
        it), or the span holds no bars at all.
    """
    stamp = stored_stamp(symbols, interval, market=market, funding=funding, store=store)
    key = (tuple(symbols), interval, start, end, funding, market, stamp[0])
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            _cache.move_to_end(key)
            return hit[1]
    candles: dict[str, pl.DataFrame] = {}
    for sym in symbols:
        df = load_candles(sym, interval, start=start, end=end, store=store, market=market,
                          progress=progress)
        if df.height == 0:
            raise DataError(
                f"no {market} {sym} {interval} bars between {fmt_ms(start)} and {fmt_ms(end)}",
                hint=f"check the span, or get the data: engine data download --symbol {sym} --interval {interval}",
            )
        candles[sym] = df
    loaded = align(
        candles,
        interval,
        funding_frames=(_funding(symbols, candles, interval_ms(interval), store, progress)
                        if funding else None),
    )
    if stored_stamp(symbols, interval, market=market, funding=funding, store=store) == stamp:
        with _cache_lock:  # (a load that imported or fetched files is kept by the next one)
            _cache[key] = (stamp, loaded)
            _cache.move_to_end(key)
            while len(_cache) > MARKET_CACHE:
                _cache.popitem(last=False)
    return loaded


def clear_market_cache() -> None:
    """Forget the markets :func:`load_market` keeps (their memory goes with the last user)."""
    with _cache_lock:
        _cache.clear()


def load_graph_market(graph: StrategyGraph, *, store: str | os.PathLike[str] | None,
                      progress: Progress | None = None) -> Market:
    """The market a strategy graph runs on: its symbols, interval, span and funding.

    Raises
    ------
    DataError
        As :func:`load_market`, or when the span holds fewer than two bars (a decision at one
        bar's close needs a next bar to fill at).
    """
    d = graph.config.data
    market = load_market(
        graph.symbols,
        d.interval,
        start=d.start,
        end=d.end,
        store=store,
        funding=d.funding,
        market=d.market,
        progress=progress,
    )
    if market.n_bars < 2:
        raise DataError(
            f"only {market.n_bars} {d.interval} bar(s) between {fmt_ms(d.start)} and {fmt_ms(d.end)}",
            hint="widen the span (--start/--end or data.start/data.end)",
        )
    return market


def _funding(symbols: tuple[str, ...] | list[str], candles: dict[str, pl.DataFrame],
             step: int, store: str | os.PathLike[str] | None,
             progress: Progress | None) -> dict[str, pl.DataFrame]:
    """Each symbol's funding events through its last bar's CLOSE: a bar's ``funding_rate``
    is the rate settled at or before its close, so a run ending on the bar before a funding
    time must see that settlement as a longer run does (``engine lookahead`` found a run
    ending at 07:55 reading the previous rate where a longer one read 08:00's). When that
    close is a funding time the data does not reach (the end of the data), the run ends
    without it, as every run over that span does."""
    out = {}
    for sym in symbols:
        t = candles[sym]["open_time"]
        first, last, close = int(t[0]), int(t[-1]), int(t[-1]) + step
        if close % FUNDING_PERIOD_MS == 0:
            try:
                out[sym] = load_funding(sym, start=first, end=close, store=store,
                                        progress=progress)
                continue
            except DataError:
                pass  # the settlement at the close is past the data's end: no run sees it
        out[sym] = load_funding(sym, start=first, end=last, store=store, progress=progress)
    return out


def align(
    candles: dict[str, pl.DataFrame],
    interval: str,
    *,
    funding_frames: dict[str, pl.DataFrame] | None = None,
) -> Market:
    """Put per-symbol candle frames on one grid (see :class:`Market`)."""
    step = interval_ms(interval)
    symbols = tuple(candles)
    firsts = [int(df["open_time"][0]) for df in candles.values()]
    lasts = [int(df["open_time"][-1]) for df in candles.values()]
    t0, t1 = min(firsts), max(lasts)
    n = (t1 - t0) // step + 1
    open_time = t0 + step * np.arange(n, dtype=np.int64)
    s = len(symbols)
    arrays = {c: np.full((n, s), np.nan) for c in PRICES}
    has_bar = np.zeros((n, s), dtype=bool)
    funding_rate = np.full((n, s), np.nan)
    rows: dict[str, np.ndarray] = {}
    for j, sym in enumerate(symbols):
        df = candles[sym]
        t = df["open_time"].to_numpy()
        at: slice | np.ndarray  # the symbol's rows of the grid
        if (t[0] - t0) % step == 0 and bool((np.diff(t) == step).all()):
            # every bar one step after the one before it (no gap): a slice of the grid,
            # without a division and a scatter per bar (~5 ms over 143,900 bars)
            first = (int(t[0]) - t0) // step
            at = slice(first, first + t.size)
            r = np.arange(first, first + t.size, dtype=np.int64)
        else:
            off = t - t0
            if np.any(off % step):
                bad = int(t[np.flatnonzero(off % step)[0]])
                raise DataError(
                    f"{sym} {interval}: bar at {fmt_ms(bad)} is off the {interval} grid"
                )
            r = at = (off // step).astype(np.int64)
        rows[sym] = r
        has_bar[at, j] = True
        for c in PRICES:
            arrays[c][at, j] = df[c].to_numpy()
        if funding_frames is not None and funding_frames.get(sym) is not None:
            f = funding_frames[sym]
            ft = f["funding_time"].to_numpy()
            fr = f["funding_rate"].to_numpy()
            k = (ft - t0) // step
            ok = (ft >= t0) & (ft <= t1) & ((ft - t0) % step == 0)
            funding_rate[k[ok], j] = fr[ok]
    return Market(
        symbols=symbols,
        interval=interval,
        open_time=open_time,
        has_bar=has_bar,
        funding_rate=funding_rate,
        candles=dict(candles),
        funding=dict(funding_frames)
        if funding_frames is not None
        else {sym: None for sym in symbols},
        rows=rows,
        **arrays,
    )
