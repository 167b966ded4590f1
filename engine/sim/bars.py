"""What a simulation asks of its market's bars a run at a time, computed once per market
(numpy and numba).

- :func:`next_funding_bars`: for each bar, the next bar that pays funding (a one-symbol
  steady run holding a position ends before it: one lookup a run, no test per bar);
- :func:`bar_blocks`: per block of :data:`CHUNK` bars, the extremes a settled run
  (:func:`engine.sim.fold._one_settled_nb`) tests a whole block by.

Oracle: plain scans (``tests/sim/test_steady.py``), and ``simulate_nb`` against a loop of the
bar step with these lookups in use.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel

#: bars a settled one-symbol run (:func:`engine.sim.fold._one_settled_nb`) tests at a time,
#: without a branch per bar
CHUNK = 64


def next_funding_bars(funding: np.ndarray) -> np.ndarray:
    """int64 ``[n_bars, n_symbols]``: for each bar ``t`` and symbol ``s`` the first bar
    ``>= t`` at which ``s`` has a funding rate (``funding`` not NaN), ``n_bars`` when none
    follows. A one-symbol steady run holding a position ends before it (one lookup a run,
    no test per bar)."""
    n = funding.shape[0]
    at = np.where(np.isnan(funding), n, np.arange(n, dtype=np.int64)[:, None])
    return np.ascontiguousarray(np.minimum.accumulate(at[::-1], axis=0)[::-1], dtype=np.int64)


def bar_blocks(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, time_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What a settled run (:func:`engine.sim.fold._one_settled_nb`) asks of a whole block of
    ``CHUNK`` bars (block ``b``: bars ``b * CHUNK ..``) in one test instead of a test per
    bar: float64 ``[n_blocks, 3]`` (the lowest low and the highest high, NaN skipped:
    -inf/+inf when none; 1.0 where a bar lacks its open or close) and int64 ``[n_blocks,
    2]`` (the earliest and the latest open time). One symbol's ``[n_bars, 1]`` arrays with
    known times; for anything else both have 0 rows and every bar is tested alone. A block
    whose bars cannot stop a run leaves only each bar's direction to test (the run then
    reads the closes and directions, not the opens, highs, lows and times: a run held over
    100,000 bars 2.18 -> 1.38 ns a bar; the bench sweep's runs of ~100 bars gain nothing)."""
    n = o.shape[0]
    if o.ndim != 2 or o.shape[1] != 1 or time_ms.shape[0] != n:
        return np.empty((0, 3)), np.empty((0, 2), dtype=np.int64)
    k = -(-n // CHUNK)
    prices, times = np.empty((k, 3)), np.empty((k, 2), dtype=np.int64)
    bar_blocks_nb(o[:, 0], h[:, 0], lo[:, 0], c[:, 0], time_ms, prices, times)
    return prices, times


@kernel
def bar_blocks_nb(o, h, lo, c, time_ms, prices, times):  # type: ignore[no-untyped-def]
    """:func:`bar_blocks` into ``prices`` and ``times``."""
    n = o.shape[0]
    for b in range(prices.shape[0]):
        low, high, gap = np.inf, -np.inf, 0.0
        t_lo, t_hi = time_ms[b * CHUNK], time_ms[b * CHUNK]
        for t in range(b * CHUNK, min(n, (b + 1) * CHUNK)):
            if lo[t] < low:  # a NaN is not below: skipped, as the bar test skips it
                low = lo[t]
            if h[t] > high:
                high = h[t]
            if np.isnan(o[t] + c[t]):
                gap = 1.0
            t_lo = min(t_lo, time_ms[t])
            t_hi = max(t_hi, time_ms[t])
        prices[b, 0], prices[b, 1], prices[b, 2] = low, high, gap
        times[b, 0], times[b, 1] = t_lo, t_hi
