"""Higher-timeframe bars built from base bars, and their values put back on the base bars
(numba).

Higher-timeframe (HTF) bars are aligned to UTC multiples of their length. Aggregation starts
at the first valid base bar that opens on an HTF boundary (a leading partial HTF bar would
carry a wrong open, so it is skipped). An HTF bar is then built from the valid base bars of
its period that exist; it is complete at the base bar whose close reaches the boundary, or, if
that bar is missing from the data (a gap), at the first base bar of a later period. Its
indicator values become visible at that base bar and stay until the next HTF bar completes.
An invalid base bar (a NaN in its OHLCV) adds nothing to a bar but still moves the clock.

:func:`agg_step_nb` is the builder's step (the streaming plan calls it per base bar),
:func:`aggregate_nb` its fold, :func:`aggregate_batch_nb` the batch path's equal rewrite, and
:func:`forward_fill_nb` carries HTF values to the base bars.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel

AGG_STATE = 8  # started, has_data, period_start, open, high, low, close, volume


@kernel
def _finish(st, so, fin, k):  # type: ignore[no-untyped-def]
    fin[k, 0] = st[so + 2]
    for j in range(5):
        fin[k, 1 + j] = st[so + 3 + j]
    st[so + 1] = 0.0


@kernel
def agg_step_nb(st, so, t, op, hi, lo, cl, vo, valid, base_ms, tf_ms, fin):  # type: ignore[no-untyped-def]
    """Feed one base bar to a higher-timeframe bar builder; return how many HTF bars completed.

    Completed bars are written to ``fin[k] = (open_time, open, high, low, close, volume)``,
    at most two per base bar (a gap can complete the previous period late while the current
    bar also closes its own). Oracle: ``polars.DataFrame.group_by_dynamic`` over the base bars.
    """
    nfin = 0
    period = t - t % tf_ms
    if st[so + 1] != 0.0 and st[so + 2] != period:
        _finish(st, so, fin, nfin)
        nfin += 1
    if valid:
        if st[so] == 0.0 and t == period:
            st[so] = 1.0
        if st[so] != 0.0:
            if st[so + 1] == 0.0:
                st[so + 1] = 1.0
                st[so + 2] = period
                st[so + 3] = op
                st[so + 4] = hi
                st[so + 5] = lo
                st[so + 6] = cl
                st[so + 7] = vo
            else:
                if hi > st[so + 4]:
                    st[so + 4] = hi
                if lo < st[so + 5]:
                    st[so + 5] = lo
                st[so + 6] = cl
                st[so + 7] += vo
    if st[so + 1] != 0.0 and t + base_ms == period + tf_ms:
        _finish(st, so, fin, nfin)
        nfin += 1
    return nfin


@kernel(allocates=True)
def aggregate_nb(t, op, hi, lo, cl, vo, valid, base_ms, tf_ms):  # type: ignore[no-untyped-def]
    """Fold :func:`agg_step_nb` over base bars.

    Returns ``(bars [6, m], visible_at [m])``: the completed HTF bars (open_time, o, h, l, c, v)
    and, for each, the index of the base bar at which it completed.
    """
    n = t.shape[0]
    # Each completed bar holds a valid base bar and has its own period: at most min(n, periods).
    cap = min(n, (t[n - 1] - t[0]) // tf_ms + 2) + 1 if n else 1
    bars = np.empty((6, cap))
    vis = np.empty(cap, dtype=np.int64)
    st = np.zeros(8)
    fin = np.empty((2, 6))
    m = 0
    for i in range(n):
        nfin = agg_step_nb(
            st, 0, t[i], op[i], hi[i], lo[i], cl[i], vo[i], valid[i], base_ms, tf_ms, fin
        )
        for f in range(nfin):
            for j in range(6):
                bars[j, m] = fin[f, j]
            vis[m] = i
            m += 1
    return bars[:, :m].copy(), vis[:m].copy()


@kernel(allocates=True)
def aggregate_batch_nb(t, op, hi, lo, cl, vo, valid, base_ms, tf_ms):  # type: ignore[no-untyped-def]
    """:func:`aggregate_nb` with the builder's state in local variables and the period found
    without a division per bar: the same bars, bit for bit (oracle: :func:`aggregate_nb`, the
    fold of :func:`agg_step_nb`; the tests compare them)."""
    n = t.shape[0]
    cap = min(n, (t[n - 1] - t[0]) // tf_ms + 2) + 1 if n else 1
    bars = np.empty((6, cap))
    vis = np.empty(cap, dtype=np.int64)
    m = 0
    started = False
    has = False
    start = 0
    o = 0.0
    h = 0.0
    low = 0.0
    c = 0.0
    v = 0.0
    period = 0
    period_end = -1  # t in [period, period_end) has this period
    for i in range(n):
        ti = t[i]
        if ti >= period_end or ti < period:
            period = ti - ti % tf_ms
            period_end = period + tf_ms
        if has and start != period:
            bars[0, m] = start
            bars[1, m] = o
            bars[2, m] = h
            bars[3, m] = low
            bars[4, m] = c
            bars[5, m] = v
            vis[m] = i
            m += 1
            has = False
        if valid[i]:
            if not started and ti == period:
                started = True
            if started:
                if not has:
                    has = True
                    start = period
                    o = op[i]
                    h = hi[i]
                    low = lo[i]
                    c = cl[i]
                    v = vo[i]
                else:
                    if hi[i] > h:
                        h = hi[i]
                    if lo[i] < low:
                        low = lo[i]
                    c = cl[i]
                    v += vo[i]
        if has and ti + base_ms == period_end:
            bars[0, m] = start
            bars[1, m] = o
            bars[2, m] = h
            bars[3, m] = low
            bars[4, m] = c
            bars[5, m] = v
            vis[m] = i
            m += 1
            has = False
    return bars[:, :m].copy(), vis[:m].copy()


@kernel
def forward_fill_nb(values, vis, invalid, dest):  # type: ignore[no-untyped-def]
    """HTF values onto base bars: at base bar i, the value of the last HTF bar completed at
    or before i (``vis`` is sorted); NaN before the first and at the ``invalid`` base bars."""
    n = dest.shape[0]
    m = vis.shape[0]
    first = vis[0] if m else n
    for i in range(first):
        dest[i] = np.nan
    for j in range(m):
        end = vis[j + 1] if j + 1 < m else n
        val = values[j]
        for i in range(vis[j], end):
            dest[i] = val
    for r in invalid:
        dest[r] = np.nan
