"""Compiled plans: every requested feature, on every timeframe, advanced by one bar at once.

A *plan* is the catalogue a caller asked for, compiled to arrays:

- ``ops``: int64 ``[n_ops, 8]`` rows ``(kind, tf, state_offset, slot, p0, p1, p2, n_outputs)``, sorted
  by timeframe; ``pf``: float64 ``[n_ops]`` (Bollinger's sigma multiplier);
- ``tfs``: int64 ``[n_tf, 4]`` rows ``(tf_ms, agg_state_offset, first_op, end_op)``; row 0 is
  the base interval (no aggregation);
- ``sel``: int64 ``[n_names]``, for each requested name its slot in ``last``.

The state of the whole plan is one float64 vector ``st`` (every indicator's slice plus each
higher timeframe's bar aggregator) and ``last`` (the latest value of every output).

:func:`step_plan_nb` is THE step: one base bar through the whole plan. Streaming calls it
once per closed bar; :func:`fold_plan_nb` folds it over an array of bars. The ``*_batch_nb``
kernels and :func:`aggregate_nb` are the specialised batch path (one tight loop per indicator,
the operations of its step kernel in the same order, state in local variables); the tests
prove them equal to the fold, bit for bit.

Rules, identical in every path:

- A bar with a NaN in open/high/low/close/volume is *invalid*: no indicator sees it (their
  states stay as they were) and every output at that bar is NaN. It still moves the clock:
  it can close a higher-timeframe bar.
- Higher-timeframe (HTF) bars are aligned to UTC multiples of their length. Aggregation
  starts at the first valid base bar that opens on an HTF boundary (a leading partial HTF
  bar would carry a wrong open, so it is skipped). An HTF bar is then built from the valid
  base bars of its period that exist; it is complete at the base bar whose close reaches
  the boundary, or, if that bar is missing from the data (a gap), at the first base bar of a
  later period. Its indicator values become visible at that base bar and stay until the next
  HTF bar completes.


Indicator step kernels
----------------------
Every indicator is a numba function ``<name>_step_nb(st, so, <inputs>, <params>, res)``:

- ``st`` is a float64 state vector shared by many indicators and ``so`` the offset of this
  indicator's slice in it (``st[so]`` is always the number of bars seen so far). The slice is
  zero-filled before the first bar; :func:`state_size` says how long it is.
- the inputs are the bar's values (floats, never NaN: a bar with a NaN is skipped before any
  kernel sees it, see the rules above);
- the outputs are written to ``res[0..k)``; an output is NaN until the indicator is warm.

The warm-up is declared, not inferred: :func:`warmup` gives, per kind and output, the index
(0-based, in bars of the indicator's own timeframe) of the first bar that has a value. The
kernels follow TA-Lib's C code operation by operation (same seeding, same order of additions;
Bollinger's sigma is the one deliberate exception, see :func:`bbands_step_nb`), so their values
agree with TA-Lib to rounding; each docstring names its oracle.

This module imports only numpy and numba. It is one file on purpose: numba's on-disk cache
does not notice when a kernel defined in another module changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numba import njit

NAN = np.nan

# Indicator kinds (integer codes used in compiled plans).
RAW_VOLUME = 0
SMA = 1
EMA = 2
RSI = 3
MACD = 4
BBANDS = 5
ATR = 6
OBV = 7
DMI = 8
CANDLE = 9
MOM = 10
LOGRET = 11
FUNDING = 12
N_KINDS = 13

# Price source of the single-input kinds (SMA, EMA, MOM).
SRC_CLOSE = 0
SRC_VOLUME = 1

# Outputs per kind.
N_OUTPUTS = (1, 2, 1, 1, 3, 5, 2, 1, 3, 3, 1, 1, 2)
MAX_OUTPUTS = 5

FUNDING_PERIOD_MS = 8 * 3_600_000

_F = TypeVar("_F", bound=Callable[..., Any])


def kernel(fn: _F) -> _F:
    """Compile ``fn`` with numba: on-disk cache, numpy's error model, no GIL."""
    return njit(cache=True, error_model="numpy", nogil=True)(fn)  # type: ignore[return-value]


def state_size(kind: int, p0: int, p1: int, p2: int) -> int:
    """Length of the state slice of one indicator (its count included)."""
    if kind == SMA:
        return 5 + p0  # count, sum, shifted sum, shifted sum of squares, shift, ring
    if kind == EMA:
        return 3  # count, seed sum, ema
    if kind == RSI:
        return 4  # count, previous close, average gain, average loss
    if kind == MACD:
        return 7  # count, slow sum, fast sum, slow ema, fast ema, signal sum, signal ema
    if kind == BBANDS:
        return 5 + p0  # count, sum, shifted sum, shifted sum of squares, shift, ring
    if kind == ATR:
        return 3  # count, previous close, sum / atr
    if kind == OBV:
        return 3  # count, previous close, obv
    if kind == DMI:
        return 9  # count, prev high, prev low, prev close, +DM, -DM, TR, sum DX, ADX
    if kind in (MOM, LOGRET):
        return 1 + p0  # count, ring of p0 inputs
    return 1  # stateless kinds keep only their count


def warmup(kind: int, output: int, p0: int, p1: int, p2: int) -> int:
    """Index of the first bar with a value (TA-Lib's lookback), per kind and output."""
    if kind in (SMA, EMA, BBANDS):
        return p0 - 1
    if kind in (RSI, ATR, MOM, LOGRET):
        return p0
    if kind == MACD:
        slow = max(p0, p1)
        return slow + p2 - 2
    if kind == DMI:
        return 2 * p0 - 1 if output == 0 else p0
    return 0


@kernel
def _is_zero(v: float) -> bool:
    """The zero test of the TA-Lib build this project is checked against (0.8): exact.

    (TA-Lib 0.4 used a band of +-1e-8, which turns an RSI/DI of a long flat stretch into 0.)
    """
    return v == 0.0


@kernel
def true_range_nb(high: float, low: float, prev_close: float) -> float:
    """True range as TA-Lib's TRANGE computes it (greatest of three spans)."""
    greatest = high - low
    v2 = abs(prev_close - high)
    if v2 > greatest:
        greatest = v2
    v3 = abs(prev_close - low)
    if v3 > greatest:
        greatest = v3
    return greatest


@kernel
def raw_volume_step_nb(st, so, volume, res):  # type: ignore[no-untyped-def]
    """The bar's volume (oracle: the input itself)."""
    st[so] += 1.0
    res[0] = volume


@kernel
def sma_step_nb(st, so, x, n, res):  # type: ignore[no-untyped-def]
    """Simple moving average and x / average. Oracle: ``talib.SMA(x, n)``.

    TA-Lib's running sum: add the new value, output sum / n, then subtract the value that
    leaves the window next. ``res[1]`` is ``x / sma`` (1.0 when the average is 0).
    """
    c = int(st[so])
    st[so] = c + 1
    total = st[so + 1] + x
    st[so + 2 + c % n] = x
    if c >= n - 1:
        avg = total / n
        total -= st[so + 2 + (c + 1) % n]
        res[0] = avg
        res[1] = x / avg if avg != 0.0 else 1.0
    else:
        res[0] = NAN
        res[1] = NAN
    st[so + 1] = total


@kernel
def ema_step_nb(st, so, x, n, res):  # type: ignore[no-untyped-def]
    """Exponential moving average seeded with the SMA of its first n values.

    Oracle: ``talib.EMA(x, n)`` (k = 2 / (n + 1)).
    """
    c = int(st[so])
    st[so] = c + 1
    if c < n:
        st[so + 1] += x
        if c == n - 1:
            st[so + 2] = st[so + 1] / n
            res[0] = st[so + 2]
        else:
            res[0] = NAN
        return
    k = 2.0 / (n + 1)
    prev = st[so + 2]
    prev = ((x - prev) * k) + prev
    st[so + 2] = prev
    res[0] = prev


@kernel
def _rsi_value(gain: float, loss: float) -> float:
    s = gain + loss
    if not _is_zero(s):
        return 100.0 * (gain / s)
    return 0.0


@kernel
def rsi_step_nb(st, so, x, n, res):  # type: ignore[no-untyped-def]
    """Wilder's RSI. Oracle: ``talib.RSI(x, n)``."""
    c = int(st[so])
    st[so] = c + 1
    if c == 0:
        st[so + 1] = x
        res[0] = NAN
        return
    d = x - st[so + 1]
    st[so + 1] = x
    gain = st[so + 2]
    loss = st[so + 3]
    if c <= n:
        if d < 0:
            loss -= d
        else:
            gain += d
        if c == n:
            loss /= n
            gain /= n
            res[0] = _rsi_value(gain, loss)
        else:
            res[0] = NAN
    else:
        loss *= n - 1
        gain *= n - 1
        if d < 0:
            loss -= d
        else:
            gain += d
        loss /= n
        gain /= n
        res[0] = _rsi_value(gain, loss)
    st[so + 2] = gain
    st[so + 3] = loss


@kernel
def macd_step_nb(st, so, x, fast, slow, signal, res):  # type: ignore[no-untyped-def]
    """MACD line, signal and histogram with TA-Lib's seeding.

    Oracle: ``talib.MACD(x, fast, slow, signal)``. As in TA-Lib, both EMAs are seeded at bar
    slow-1: the slow one with the SMA of the first ``slow`` values, the fast one with the SMA
    of the ``fast`` values ending there; the signal EMA is seeded with the SMA of the first
    ``signal`` MACD values, and all three outputs start at bar slow + signal - 2.
    """
    if fast > slow:
        fast, slow = slow, fast
    c = int(st[so])
    st[so] = c + 1
    if c < slow:
        st[so + 1] += x
        if c >= slow - fast:
            st[so + 2] += x
        if c < slow - 1:
            res[0] = NAN
            res[1] = NAN
            res[2] = NAN
            return
        slow_ema = st[so + 1] / slow
        fast_ema = st[so + 2] / fast
    else:
        ks = 2.0 / (slow + 1)
        kf = 2.0 / (fast + 1)
        slow_ema = st[so + 3]
        fast_ema = st[so + 4]
        slow_ema = ((x - slow_ema) * ks) + slow_ema
        fast_ema = ((x - fast_ema) * kf) + fast_ema
    st[so + 3] = slow_ema
    st[so + 4] = fast_ema
    m = fast_ema - slow_ema
    j = c - (slow - 1)
    if j < signal:
        st[so + 5] += m
        if j == signal - 1:
            st[so + 6] = st[so + 5] / signal
    else:
        kg = 2.0 / (signal + 1)
        sig = st[so + 6]
        st[so + 6] = ((m - sig) * kg) + sig
    if j >= signal - 1:
        sig = st[so + 6]
        res[0] = m
        res[1] = sig
        res[2] = m - sig
    else:
        res[0] = NAN
        res[1] = NAN
        res[2] = NAN


@kernel
def bbands_step_nb(st, so, x, n, nbdev, res):  # type: ignore[no-untyped-def]
    """Bollinger bands (SMA middle, population sigma) plus width and %b.

    Oracle: ``talib.BBANDS(x, n, nbdev, nbdev, matype=0)`` for upper, middle, lower. The middle
    band is TA-Lib's running-sum SMA. Sigma uses running sums of the *shifted* values x - s
    (s = the middle band at the last rebuild; the sums are rebuilt from the window every n
    bars), so the variance S2/n - (S1/n)^2 does not suffer the cancellation of the raw
    sum-of-squares formula: it agrees with TA-Lib's to ~1e-13. Width is
    (upper - lower) / middle (0 when middle is 0), %b is (x - lower) / (upper - lower) (0.5
    when the bands touch). State: count, sum, S1, S2, shift, ring of n inputs.
    """
    c = int(st[so])
    st[so] = c + 1
    ring = so + 5
    slot = ring + c % n
    total = st[so + 1] + x
    shift = st[so + 4]
    s1 = st[so + 2]
    s2 = st[so + 3]
    if c >= n:
        d = st[slot] - shift
        s1 -= d
        s2 -= d * d
    st[slot] = x
    d = x - shift
    s1 += d
    s2 += d * d
    if c >= n - 1:
        mid = total / n
        total -= st[ring + (c + 1) % n]
        if (c + 1) % n == 0:
            shift = mid
            s1 = 0.0
            s2 = 0.0
            for j in range(n):
                d = st[ring + j] - shift
                s1 += d
                s2 += d * d
            st[so + 4] = shift
        m1 = s1 / n
        var = s2 / n - m1 * m1
        sd = math.sqrt(var) if var > 0.0 else 0.0
        dev = sd * nbdev
        upper = mid + dev
        lower = mid - dev
        res[0] = upper
        res[1] = mid
        res[2] = lower
        res[3] = (upper - lower) / mid if mid != 0.0 else 0.0
        res[4] = (x - lower) / (upper - lower) if upper != lower else 0.5
    else:
        for j in range(5):
            res[j] = NAN
    st[so + 1] = total
    st[so + 2] = s1
    st[so + 3] = s2


@kernel
def atr_step_nb(st, so, high, low, close, n, res):  # type: ignore[no-untyped-def]
    """Average true range (Wilder) and ATR as a percent of the close.

    Oracles: ``talib.ATR(h, l, c, n)`` and ``talib.NATR(h, l, c, n)``.
    """
    c = int(st[so])
    st[so] = c + 1
    if c == 0:
        st[so + 1] = close
        res[0] = NAN
        res[1] = NAN
        return
    tr = true_range_nb(high, low, st[so + 1])
    st[so + 1] = close
    if c <= n:
        st[so + 2] += tr
        if c < n:
            res[0] = NAN
            res[1] = NAN
            return
        atr = st[so + 2] / n
    else:
        atr = st[so + 2]
        atr *= n - 1
        atr += tr
        atr /= n
    st[so + 2] = atr
    res[0] = atr
    res[1] = (atr / close) * 100.0 if not _is_zero(close) else 0.0


@kernel
def obv_step_nb(st, so, close, volume, res):  # type: ignore[no-untyped-def]
    """On-balance volume, starting at the first bar's volume. Oracle: ``talib.OBV(c, v)``."""
    c = int(st[so])
    st[so] = c + 1
    if c == 0:
        obv = volume
    else:
        obv = st[so + 2]
        prev = st[so + 1]
        if close > prev:
            obv += volume
        elif close < prev:
            obv -= volume
    st[so + 1] = close
    st[so + 2] = obv
    res[0] = obv


@kernel
def dmi_step_nb(st, so, high, low, close, n, res):  # type: ignore[no-untyped-def]
    """Wilder's directional movement: ADX, +DI, -DI (``res[0..3)``).

    Oracles: ``talib.ADX``, ``talib.PLUS_DI``, ``talib.MINUS_DI`` with period n (n >= 2).
    +DI/-DI start at bar n; ADX starts at bar 2n-1 (the mean of the first n DX values).
    As in TA-Lib, a DX that cannot be computed (TR or DI sum ~0) leaves ADX unchanged and a DI
    whose TR is ~0 is 0.
    """
    c = int(st[so])
    st[so] = c + 1
    if c == 0:
        st[so + 1] = high
        st[so + 2] = low
        st[so + 3] = close
        res[0] = NAN
        res[1] = NAN
        res[2] = NAN
        return
    diff_p = high - st[so + 1]
    diff_m = st[so + 2] - low
    st[so + 1] = high
    st[so + 2] = low
    tr = true_range_nb(high, low, st[so + 3])
    st[so + 3] = close
    pdm = st[so + 4]
    mdm = st[so + 5]
    trs = st[so + 6]
    if c < n:
        if diff_m > 0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm += diff_p
        trs += tr
        st[so + 4] = pdm
        st[so + 5] = mdm
        st[so + 6] = trs
        res[0] = NAN
        res[1] = NAN
        res[2] = NAN
        return
    mdm -= mdm / n
    pdm -= pdm / n
    if diff_m > 0 and diff_p < diff_m:
        mdm += diff_m
    elif diff_p > 0 and diff_p > diff_m:
        pdm += diff_p
    trs = trs - trs / n + tr
    st[so + 4] = pdm
    st[so + 5] = mdm
    st[so + 6] = trs
    dx = NAN
    if not _is_zero(trs):
        minus_di = 100.0 * (mdm / trs)
        plus_di = 100.0 * (pdm / trs)
        s = minus_di + plus_di
        if not _is_zero(s):
            dx = 100.0 * (abs(minus_di - plus_di) / s)
    else:
        minus_di = 0.0
        plus_di = 0.0
    res[1] = plus_di
    res[2] = minus_di
    if c < 2 * n - 1:
        if not math.isnan(dx):
            st[so + 7] += dx
        res[0] = NAN
    elif c == 2 * n - 1:
        if not math.isnan(dx):
            st[so + 7] += dx
        st[so + 8] = st[so + 7] / n
        res[0] = st[so + 8]
    else:
        if not math.isnan(dx):
            st[so + 8] = (st[so + 8] * (n - 1) + dx) / n
        res[0] = st[so + 8]


@kernel
def candle_step_nb(st, so, op, high, low, close, res):  # type: ignore[no-untyped-def]
    """Body, upper and lower shadow as fractions of the bar's range (0 when high == low).

    Oracle: the formulas themselves, e.g. ``abs(close - open) / (high - low)``; the three add
    up to 1 on any bar with a range.
    """
    st[so] += 1.0
    rng = high - low
    if rng > 0.0:
        res[0] = abs(close - op) / rng
        res[1] = (high - max(op, close)) / rng
        res[2] = (min(op, close) - low) / rng
    else:
        res[0] = 0.0
        res[1] = 0.0
        res[2] = 0.0


@kernel
def mom_step_nb(st, so, x, n, res):  # type: ignore[no-untyped-def]
    """Momentum x[t] - x[t-n]. Oracle: ``talib.MOM(x, n)``."""
    c = int(st[so])
    st[so] = c + 1
    slot = so + 1 + c % n
    res[0] = x - st[slot] if c >= n else NAN
    st[slot] = x


@kernel
def logret_step_nb(st, so, x, n, res):  # type: ignore[no-untyped-def]
    """Log return ln(x[t] / x[t-n]); NaN if either price is not positive.

    Oracle: ``numpy.log(x[n:] / x[:-n])``.
    """
    c = int(st[so])
    st[so] = c + 1
    slot = so + 1 + c % n
    if c >= n:
        old = st[slot]
        res[0] = math.log(x / old) if (x > 0.0 and old > 0.0) else NAN
    else:
        res[0] = NAN
    st[slot] = x


@kernel
def funding_step_nb(st, so, open_time, rate, base_ms, res):  # type: ignore[no-untyped-def]
    """Funding rate known at the bar's close and minutes from the close to the next funding.

    ``rate`` is the rate of the last funding event at or before the close (NaN if none is
    known); funding happens at 00, 08 and 16 UTC, so a bar closing exactly on one of those
    hours is 480 minutes from the next. Oracle: the definitions themselves.
    """
    st[so] += 1.0
    close_ms = open_time + base_ms
    res[0] = rate
    res[1] = (FUNDING_PERIOD_MS - close_ms % FUNDING_PERIOD_MS) / 60_000.0


@kernel
def op_step_nb(kind, st, so, p0, p1, p2, pf, t, op, hi, lo, cl, vo, fr, base_ms, res):  # type: ignore[no-untyped-def]
    """Run one indicator of any kind on one bar (the dispatcher of the streaming plan)."""
    if kind == RAW_VOLUME:
        raw_volume_step_nb(st, so, vo, res)
    elif kind == SMA:
        sma_step_nb(st, so, vo if p1 == SRC_VOLUME else cl, p0, res)
    elif kind == EMA:
        ema_step_nb(st, so, vo if p1 == SRC_VOLUME else cl, p0, res)
    elif kind == RSI:
        rsi_step_nb(st, so, cl, p0, res)
    elif kind == MACD:
        macd_step_nb(st, so, cl, p0, p1, p2, res)
    elif kind == BBANDS:
        bbands_step_nb(st, so, cl, p0, pf, res)
    elif kind == ATR:
        atr_step_nb(st, so, hi, lo, cl, p0, res)
    elif kind == OBV:
        obv_step_nb(st, so, cl, vo, res)
    elif kind == DMI:
        dmi_step_nb(st, so, hi, lo, cl, p0, res)
    elif kind == CANDLE:
        candle_step_nb(st, so, op, hi, lo, cl, res)
    elif kind == MOM:
        mom_step_nb(st, so, vo if p1 == SRC_VOLUME else cl, p0, res)
    elif kind == LOGRET:
        logret_step_nb(st, so, cl, p0, res)
    elif kind == FUNDING:
        funding_step_nb(st, so, t, fr, base_ms, res)


# --------------------------------------------------------------------------------------
# Plans: all features on all timeframes, one bar at a time.

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


@kernel
def _is_valid(op, hi, lo, cl, vo):  # type: ignore[no-untyped-def]
    return not (np.isnan(op) or np.isnan(hi) or np.isnan(lo) or np.isnan(cl) or np.isnan(vo))


@kernel
def _run_ops(ops, pf, first, end, st, last, res, t, op, hi, lo, cl, vo, fr, base_ms):  # type: ignore[no-untyped-def]
    for i in range(first, end):
        kind = ops[i, 0]
        op_step_nb(
            kind,
            st,
            ops[i, 2],
            ops[i, 4],
            ops[i, 5],
            ops[i, 6],
            pf[i],
            t,
            op,
            hi,
            lo,
            cl,
            vo,
            fr,
            base_ms,
            res,
        )
        slot = ops[i, 3]
        for j in range(ops[i, 7]):
            last[slot + j] = res[j]


@kernel
def step_plan_nb(ops, pf, tfs, sel, st, last, fin, res, out, t, op, hi, lo, cl, vo, fr):  # type: ignore[no-untyped-def]
    """One closed base bar through the whole plan (all features, all timeframes).

    Updates ``st`` and ``last`` in place and writes the requested features to ``out``
    (all NaN for an invalid bar). Cost is O(size of the plan), independent of history.
    """
    base_ms = tfs[0, 0]
    valid = _is_valid(op, hi, lo, cl, vo)
    if valid:
        _run_ops(ops, pf, tfs[0, 2], tfs[0, 3], st, last, res, t, op, hi, lo, cl, vo, fr, base_ms)
    for k in range(1, tfs.shape[0]):
        nfin = agg_step_nb(st, tfs[k, 1], t, op, hi, lo, cl, vo, valid, base_ms, tfs[k, 0], fin)
        for f in range(nfin):
            _run_ops(
                ops,
                pf,
                tfs[k, 2],
                tfs[k, 3],
                st,
                last,
                res,
                fin[f, 0],
                fin[f, 1],
                fin[f, 2],
                fin[f, 3],
                fin[f, 4],
                fin[f, 5],
                np.nan,
                tfs[k, 0],
            )
    if valid:
        for j in range(sel.shape[0]):
            out[j] = last[sel[j]]
    else:
        out[:] = np.nan


@kernel
def fold_plan_nb(ops, pf, tfs, sel, st, last, t, op, hi, lo, cl, vo, fr):  # type: ignore[no-untyped-def]
    """Fold :func:`step_plan_nb` over arrays of bars; returns ``[n_names, n_bars]``."""
    n = t.shape[0]
    out2 = np.empty((sel.shape[0], n))
    fin = np.empty((2, 6))
    res = np.empty(MAX_OUTPUTS)
    out = np.empty(sel.shape[0])
    for i in range(n):
        step_plan_nb(
            ops,
            pf,
            tfs,
            sel,
            st,
            last,
            fin,
            res,
            out,
            t[i],
            op[i],
            hi[i],
            lo[i],
            cl[i],
            vo[i],
            fr[i],
        )
        out2[:, i] = out
    return out2


# --------------------------------------------------------------------------------------
# Specialised batch path: the same step kernels, one tight loop per indicator.


@kernel
def valid_mask_nb(op, hi, lo, cl, vo):  # type: ignore[no-untyped-def]
    """True where the bar has no NaN in open/high/low/close/volume."""
    n = op.shape[0]
    m = np.empty(n, dtype=np.bool_)
    for i in range(n):
        m[i] = _is_valid(op[i], hi[i], lo[i], cl[i], vo[i])
    return m


@kernel
def check_times_nb(t, step):  # type: ignore[no-untyped-def]
    """``(i, ok)``: i is the first row whose open time does not exceed the previous one's (-1
    if none); ok is False when some open time is not a multiple of ``step``."""
    n = t.shape[0]
    if n == 0:
        return -1, True
    ok = t[0] % step == 0
    for i in range(1, n):
        d = t[i] - t[i - 1]
        if d <= 0:
            return i, ok
        if d != step and d % step != 0:
            ok = False
    return -1, ok


@kernel
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


# Each *_batch_nb below is the fold of one step kernel over arrays of valid bars, rewritten
# with the state in local variables (the input array is the ring buffer) and one output array
# per output: the same floating-point operations in the same order, so the values are equal
# bit for bit (tests/features/test_batch_kernels.py proves each against the fold of its step).
# Arrays may be empty. Outputs nobody asked for go to a scratch array.


@kernel
def sma_batch_nb(x, n, out_avg, out_ratio):  # type: ignore[no-untyped-def]
    """:func:`sma_step_nb` folded over ``x`` (oracle: that fold, and ``talib.SMA(x, n)``)."""
    m = x.shape[0]
    total = 0.0
    for i in range(min(n - 1, m)):
        total += x[i]
        out_avg[i] = NAN
        out_ratio[i] = NAN
    for i in range(n - 1, m):
        xi = x[i]
        total += xi
        avg = total / n
        total -= x[i - n + 1]
        out_avg[i] = avg
        out_ratio[i] = xi / avg if avg != 0.0 else 1.0


@kernel
def ema_batch_nb(x, n, out):  # type: ignore[no-untyped-def]
    """:func:`ema_step_nb` folded over ``x`` (oracle: that fold, and ``talib.EMA(x, n)``)."""
    m = x.shape[0]
    k = 2.0 / (n + 1)
    total = 0.0
    for i in range(min(n - 1, m)):
        total += x[i]
        out[i] = NAN
    if m < n:
        return
    total += x[n - 1]
    prev = total / n
    out[n - 1] = prev
    for i in range(n, m):
        prev = ((x[i] - prev) * k) + prev
        out[i] = prev


@kernel
def ema2_batch_nb(x, na, nb, out_a, out_b):  # type: ignore[no-untyped-def]
    """Two EMAs of one series in one loop (their dependency chains overlap): equal to
    :func:`ema_batch_nb` for each, bit for bit (once seeded, an EMA's state is its output)."""
    m = x.shape[0]
    s = min(max(na, nb), m)
    ema_batch_nb(x[:s], na, out_a[:s])
    ema_batch_nb(x[:s], nb, out_b[:s])
    if s == m:
        return
    ka = 2.0 / (na + 1)
    kb = 2.0 / (nb + 1)
    pa = out_a[s - 1]
    pb = out_b[s - 1]
    for i in range(s, m):
        xi = x[i]
        pa = ((xi - pa) * ka) + pa
        pb = ((xi - pb) * kb) + pb
        out_a[i] = pa
        out_b[i] = pb


@kernel
def rsi_batch_nb(x, n, out):  # type: ignore[no-untyped-def]
    """:func:`rsi_step_nb` folded over ``x`` (oracle: that fold, and ``talib.RSI(x, n)``).

    Returns the state after the last bar: (average gain, average loss) once past bar n.
    """
    m = x.shape[0]
    if m == 0:
        return 0.0, 0.0
    out[0] = NAN
    prev = x[0]
    gain = 0.0
    loss = 0.0
    for i in range(1, min(n, m)):
        xi = x[i]
        d = xi - prev
        prev = xi
        if d < 0:
            loss -= d
        else:
            gain += d
        out[i] = NAN
    if m <= n:
        return gain, loss
    xi = x[n]
    d = xi - prev
    prev = xi
    if d < 0:
        loss -= d
    else:
        gain += d
    loss /= n
    gain /= n
    out[n] = _rsi_value(gain, loss)
    for i in range(n + 1, m):
        xi = x[i]
        d = xi - prev
        prev = xi
        loss *= n - 1
        gain *= n - 1
        if d < 0:
            loss -= d
        else:
            gain += d
        loss /= n
        gain /= n
        out[i] = _rsi_value(gain, loss)
    return gain, loss


@kernel
def rsi2_batch_nb(x, na, nb, out_a, out_b):  # type: ignore[no-untyped-def]
    """Two RSIs of one series in one loop (their dependency chains overlap): equal to
    :func:`rsi_batch_nb` for each, bit for bit (same operations per RSI, in the same order)."""
    m = x.shape[0]
    s = min(max(na, nb) + 1, m)
    ga, la = rsi_batch_nb(x[:s], na, out_a[:s])
    gb, lb = rsi_batch_nb(x[:s], nb, out_b[:s])
    if s == m:
        return
    prev = x[s - 1]
    for i in range(s, m):
        xi = x[i]
        d = xi - prev
        prev = xi
        la *= na - 1
        ga *= na - 1
        lb *= nb - 1
        gb *= nb - 1
        if d < 0:
            la -= d
            lb -= d
        else:
            ga += d
            gb += d
        la /= na
        ga /= na
        lb /= nb
        gb /= nb
        out_a[i] = _rsi_value(ga, la)
        out_b[i] = _rsi_value(gb, lb)


@kernel
def macd_batch_nb(x, fast, slow, signal, out_macd, out_signal, out_hist):  # type: ignore[no-untyped-def]
    """:func:`macd_step_nb` folded over ``x``, the three outputs from one pass.

    Oracle: that fold, and ``talib.MACD(x, fast, slow, signal)``.
    """
    if fast > slow:
        fast, slow = slow, fast
    m = x.shape[0]
    ks = 2.0 / (slow + 1)
    kf = 2.0 / (fast + 1)
    kg = 2.0 / (signal + 1)
    slow_sum = 0.0
    fast_sum = 0.0
    for i in range(min(slow - 1, m)):
        slow_sum += x[i]
        if i >= slow - fast:
            fast_sum += x[i]
        out_macd[i] = NAN
        out_signal[i] = NAN
        out_hist[i] = NAN
    if m < slow:
        return
    xi = x[slow - 1]
    slow_sum += xi
    if slow - 1 >= slow - fast:
        fast_sum += xi
    slow_ema = slow_sum / slow
    fast_ema = fast_sum / fast
    sig_sum = 0.0
    sig = 0.0
    # j = i - (slow - 1) counts MACD values; the signal is seeded by the first `signal` ones.
    for i in range(slow - 1, m):
        if i >= slow:
            xi = x[i]
            slow_ema = ((xi - slow_ema) * ks) + slow_ema
            fast_ema = ((xi - fast_ema) * kf) + fast_ema
        mv = fast_ema - slow_ema
        j = i - (slow - 1)
        if j < signal:
            sig_sum += mv
            if j == signal - 1:
                sig = sig_sum / signal
                out_macd[i] = mv
                out_signal[i] = sig
                out_hist[i] = mv - sig
            else:
                out_macd[i] = NAN
                out_signal[i] = NAN
                out_hist[i] = NAN
        else:
            sig = ((mv - sig) * kg) + sig
            out_macd[i] = mv
            out_signal[i] = sig
            out_hist[i] = mv - sig


@kernel
def bbands_batch_nb(x, n, nbdev, out_up, out_mid, out_low, out_width, out_pct, extras):  # type: ignore[no-untyped-def]
    """:func:`bbands_step_nb` folded over ``x``, all bands from one pass (``x`` is the ring).

    Width and %b are computed only when ``extras`` (otherwise their arrays are untouched).
    Oracle: that fold, and ``talib.BBANDS(x, n, nbdev, nbdev, 0)``.
    """
    m = x.shape[0]
    total = 0.0
    s1 = 0.0
    s2 = 0.0
    shift = 0.0
    for i in range(min(n - 1, m)):
        xi = x[i]
        total += xi
        d = xi - shift
        s1 += d
        s2 += d * d
        out_up[i] = NAN
        out_mid[i] = NAN
        out_low[i] = NAN
        if extras:
            out_width[i] = NAN
            out_pct[i] = NAN
    rebuild = n - 1  # the next bar at which (i + 1) % n == 0
    for i in range(n - 1, m):
        xi = x[i]
        total += xi
        if i >= n:
            d = x[i - n] - shift
            s1 -= d
            s2 -= d * d
        d = xi - shift
        s1 += d
        s2 += d * d
        mid = total / n
        total -= x[i - n + 1]
        if i == rebuild:
            rebuild += n
            shift = mid
            s1 = 0.0
            s2 = 0.0
            for j in range(i - n + 1, i + 1):
                d = x[j] - shift
                s1 += d
                s2 += d * d
        m1 = s1 / n
        var = s2 / n - m1 * m1
        sd = math.sqrt(var) if var > 0.0 else 0.0
        dev = sd * nbdev
        upper = mid + dev
        lower = mid - dev
        out_up[i] = upper
        out_mid[i] = mid
        out_low[i] = lower
        if extras:
            out_width[i] = (upper - lower) / mid if mid != 0.0 else 0.0
            out_pct[i] = (xi - lower) / (upper - lower) if upper != lower else 0.5


@kernel
def atr_batch_nb(hi, lo, cl, n, out_atr, out_pct):  # type: ignore[no-untyped-def]
    """:func:`atr_step_nb` folded over the bars, ATR and NATR from one pass.

    Oracle: that fold, and ``talib.ATR`` / ``talib.NATR``.
    """
    m = cl.shape[0]
    if m == 0:
        return
    out_atr[0] = NAN
    out_pct[0] = NAN
    prev = cl[0]
    total = 0.0
    for i in range(1, min(n, m)):
        total += true_range_nb(hi[i], lo[i], prev)
        prev = cl[i]
        out_atr[i] = NAN
        out_pct[i] = NAN
    if m <= n:
        return
    total += true_range_nb(hi[n], lo[n], prev)
    prev = cl[n]
    atr = total / n
    out_atr[n] = atr
    out_pct[n] = (atr / prev) * 100.0 if not _is_zero(prev) else 0.0
    for i in range(n + 1, m):
        tr = true_range_nb(hi[i], lo[i], prev)
        prev = cl[i]
        atr *= n - 1
        atr += tr
        atr /= n
        out_atr[i] = atr
        out_pct[i] = (atr / prev) * 100.0 if not _is_zero(prev) else 0.0


@kernel
def obv_batch_nb(cl, vo, out):  # type: ignore[no-untyped-def]
    """:func:`obv_step_nb` folded over the bars (oracle: that fold, and ``talib.OBV``)."""
    m = cl.shape[0]
    if m == 0:
        return
    obv = vo[0]
    prev = cl[0]
    out[0] = obv
    for i in range(1, m):
        ci = cl[i]
        if ci > prev:
            obv += vo[i]
        elif ci < prev:
            obv -= vo[i]
        prev = ci
        out[i] = obv


@kernel
def dmi_batch_nb(hi, lo, cl, n, out_adx, out_plus, out_minus):  # type: ignore[no-untyped-def]
    """:func:`dmi_step_nb` folded over the bars: ADX, +DI and -DI from one pass.

    Oracle: that fold, and ``talib.ADX`` / ``talib.PLUS_DI`` / ``talib.MINUS_DI``.
    """
    m = cl.shape[0]
    if m == 0:
        return
    out_adx[0] = NAN
    out_plus[0] = NAN
    out_minus[0] = NAN
    ph = hi[0]
    pl = lo[0]
    pc = cl[0]
    pdm = 0.0
    mdm = 0.0
    trs = 0.0
    for i in range(1, min(n, m)):
        h = hi[i]
        low = lo[i]
        diff_p = h - ph
        diff_m = pl - low
        ph = h
        pl = low
        tr = true_range_nb(h, low, pc)
        pc = cl[i]
        if diff_m > 0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm += diff_p
        trs += tr
        out_adx[i] = NAN
        out_plus[i] = NAN
        out_minus[i] = NAN
    sum_dx = 0.0
    adx = 0.0
    for i in range(n, m):
        h = hi[i]
        low = lo[i]
        diff_p = h - ph
        diff_m = pl - low
        ph = h
        pl = low
        tr = true_range_nb(h, low, pc)
        pc = cl[i]
        mdm -= mdm / n
        pdm -= pdm / n
        if diff_m > 0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm += diff_p
        trs = trs - trs / n + tr
        dx = NAN
        if not _is_zero(trs):
            minus_di = 100.0 * (mdm / trs)
            plus_di = 100.0 * (pdm / trs)
            s = minus_di + plus_di
            if not _is_zero(s):
                dx = 100.0 * (abs(minus_di - plus_di) / s)
        else:
            minus_di = 0.0
            plus_di = 0.0
        out_plus[i] = plus_di
        out_minus[i] = minus_di
        if i < 2 * n - 1:
            if not math.isnan(dx):
                sum_dx += dx
            out_adx[i] = NAN
        elif i == 2 * n - 1:
            if not math.isnan(dx):
                sum_dx += dx
            adx = sum_dx / n
            out_adx[i] = adx
        else:
            if not math.isnan(dx):
                adx = (adx * (n - 1) + dx) / n
            out_adx[i] = adx


@kernel
def dmi_atr_batch_nb(hi, lo, cl, n, out_adx, out_plus, out_minus, out_atr, out_natr):  # type: ignore[no-untyped-def]
    """:func:`dmi_batch_nb` and :func:`atr_batch_nb` of the same period in one pass: one true
    range per bar, and the ATR's dependency chain overlaps the DMI's. Equal to the two kernels
    (each keeps its own operations in its own order), so to the folds of both step kernels.
    """
    m = cl.shape[0]
    if m == 0:
        return
    out_adx[0] = NAN
    out_plus[0] = NAN
    out_minus[0] = NAN
    out_atr[0] = NAN
    out_natr[0] = NAN
    ph = hi[0]
    pl = lo[0]
    pc = cl[0]
    pdm = 0.0
    mdm = 0.0
    trs = 0.0
    atr = 0.0  # the sum of the true ranges until bar n, then Wilder's average
    for i in range(1, min(n, m)):
        h = hi[i]
        low = lo[i]
        diff_p = h - ph
        diff_m = pl - low
        ph = h
        pl = low
        tr = true_range_nb(h, low, pc)
        pc = cl[i]
        if diff_m > 0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm += diff_p
        trs += tr
        atr += tr
        out_adx[i] = NAN
        out_plus[i] = NAN
        out_minus[i] = NAN
        out_atr[i] = NAN
        out_natr[i] = NAN
    sum_dx = 0.0
    adx = 0.0
    for i in range(n, m):
        h = hi[i]
        low = lo[i]
        diff_p = h - ph
        diff_m = pl - low
        ph = h
        pl = low
        tr = true_range_nb(h, low, pc)
        pc = cl[i]
        mdm -= mdm / n
        pdm -= pdm / n
        if diff_m > 0 and diff_p < diff_m:
            mdm += diff_m
        elif diff_p > 0 and diff_p > diff_m:
            pdm += diff_p
        trs = trs - trs / n + tr
        if i == n:
            atr += tr
            atr = atr / n
        else:
            atr *= n - 1
            atr += tr
            atr /= n
        out_atr[i] = atr
        out_natr[i] = (atr / pc) * 100.0 if not _is_zero(pc) else 0.0
        dx = NAN
        if not _is_zero(trs):
            minus_di = 100.0 * (mdm / trs)
            plus_di = 100.0 * (pdm / trs)
            s = minus_di + plus_di
            if not _is_zero(s):
                dx = 100.0 * (abs(minus_di - plus_di) / s)
        else:
            minus_di = 0.0
            plus_di = 0.0
        out_plus[i] = plus_di
        out_minus[i] = minus_di
        if i < 2 * n - 1:
            if not math.isnan(dx):
                sum_dx += dx
            out_adx[i] = NAN
        elif i == 2 * n - 1:
            if not math.isnan(dx):
                sum_dx += dx
            adx = sum_dx / n
            out_adx[i] = adx
        else:
            if not math.isnan(dx):
                adx = (adx * (n - 1) + dx) / n
            out_adx[i] = adx


@kernel
def candle_batch_nb(op, hi, lo, cl, out_body, out_upper, out_lower):  # type: ignore[no-untyped-def]
    """:func:`candle_step_nb` over the bars (oracle: that fold, and its formulas)."""
    for i in range(cl.shape[0]):
        high = hi[i]
        low = lo[i]
        o = op[i]
        c = cl[i]
        rng = high - low
        if rng > 0.0:
            out_body[i] = abs(c - o) / rng
            out_upper[i] = (high - max(o, c)) / rng
            out_lower[i] = (min(o, c) - low) / rng
        else:
            out_body[i] = 0.0
            out_upper[i] = 0.0
            out_lower[i] = 0.0


@kernel
def mom_batch_nb(x, n, out):  # type: ignore[no-untyped-def]
    """:func:`mom_step_nb` folded over ``x`` (oracle: that fold, and ``talib.MOM(x, n)``)."""
    m = x.shape[0]
    for i in range(min(n, m)):
        out[i] = NAN
    for i in range(n, m):
        out[i] = x[i] - x[i - n]


@kernel
def logret_batch_nb(x, n, out):  # type: ignore[no-untyped-def]
    """:func:`logret_step_nb` folded over ``x`` (oracle: that fold, and ``numpy.log``)."""
    m = x.shape[0]
    for i in range(min(n, m)):
        out[i] = NAN
    for i in range(n, m):
        xi = x[i]
        old = x[i - n]
        out[i] = math.log(xi / old) if (xi > 0.0 and old > 0.0) else NAN


@kernel
def funding_batch_nb(t, fr, base_ms, out_rate, out_minutes):  # type: ignore[no-untyped-def]
    """:func:`funding_step_nb` over the bars (oracle: that fold, and its definitions)."""
    nxt = -1  # the next funding time strictly after the close (exact integers in ms)
    for i in range(t.shape[0]):
        close_ms = np.int64(t[i]) + base_ms
        if close_ms >= nxt or close_ms < nxt - FUNDING_PERIOD_MS:
            nxt = close_ms - close_ms % FUNDING_PERIOD_MS + FUNDING_PERIOD_MS
        out_rate[i] = fr[i]
        out_minutes[i] = (nxt - close_ms) / 60_000.0


@kernel
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
def scatter_nb(values, rows, n, dest):  # type: ignore[no-untyped-def]
    """``dest[rows[i]] = values[i]``; NaN elsewhere (values computed on valid bars only)."""
    dest[:] = np.nan
    for i in range(rows.shape[0]):
        dest[rows[i]] = values[i]


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
