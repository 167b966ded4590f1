"""Indicator step kernels: one indicator, one bar (numba).

Every indicator is a numba function ``<name>_step_nb(st, so, <inputs>, <params>, res)``:

- ``st`` is a float64 state vector shared by many indicators and ``so`` the offset of this
  indicator's slice in it (``st[so]`` is always the number of bars seen so far). The slice is
  zero-filled before the first bar; :func:`engine.features.kinds.state_size` says how long it is.
- the inputs are the bar's values (floats, never NaN: a bar with a NaN is skipped before any
  kernel sees it, see :mod:`engine.features.plan_nb`);
- the outputs are written to ``res[0..k)``; an output is NaN until the indicator is warm
  (:func:`engine.features.kinds.warmup`).

The kernels follow TA-Lib's C code operation by operation (same seeding, same order of
additions; Bollinger's sigma is the one deliberate exception, see :func:`bbands_step_nb`), so
their values agree with TA-Lib to rounding; each docstring names its oracle. The batch path
folds the same operations in :mod:`engine.features.indicators_batch_nb`.
"""

from __future__ import annotations

import math

from engine.features.kinds import FUNDING_PERIOD_MS, NAN
from engine.kernels import kernel


@kernel
def is_zero_nb(v: float) -> bool:
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
def rsi_value_nb(gain: float, loss: float) -> float:
    s = gain + loss
    if not is_zero_nb(s):
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
            res[0] = rsi_value_nb(gain, loss)
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
        res[0] = rsi_value_nb(gain, loss)
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
    res[1] = (atr / close) * 100.0 if not is_zero_nb(close) else 0.0


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
    if not is_zero_nb(trs):
        minus_di = 100.0 * (mdm / trs)
        plus_di = 100.0 * (pdm / trs)
        s = minus_di + plus_di
        if not is_zero_nb(s):
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
