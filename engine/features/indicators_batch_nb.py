"""Indicator batch kernels: each step kernel of :mod:`engine.features.indicators_nb` folded
over arrays, one tight loop per indicator (numba).

Each ``*_batch_nb`` is the fold of one step kernel over arrays of valid bars, rewritten with
the state in local variables (the input array is the ring buffer) and one output array per
output: the same floating-point operations in the same order, so the values are equal bit for
bit (tests/features/test_batch_kernels.py proves each against the fold of its step). A few
fused kernels overlap two or four dependency chains in one loop (``ema2_batch_nb``,
``ema4_batch_nb``, ``rsi2_batch_nb``, ``dmi_atr_batch_nb``), each chain keeping its own
operations. Arrays may be empty. Outputs nobody asked for go to a scratch array.
"""

from __future__ import annotations

import math

import numpy as np

from engine.features.indicators_nb import is_zero_nb, rsi_value_nb, true_range_nb
from engine.features.kinds import FUNDING_PERIOD_MS, NAN
from engine.kernels import kernel


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
def ema4_batch_nb(x, na, nb, nc, nd, out_a, out_b, out_c, out_d):  # type: ignore[no-untyped-def]
    """Four EMAs of one series in one loop: :func:`ema2_batch_nb`'s overlap, four chains
    wide (the four dependency chains fill the latency one chain leaves idle: 20 EMAs of
    143,900 bars 4.1 -> 2.2 ms); equal to :func:`ema_batch_nb` for each, bit for bit."""
    m = x.shape[0]
    s = min(max(max(na, nb), max(nc, nd)), m)
    ema_batch_nb(x[:s], na, out_a[:s])
    ema_batch_nb(x[:s], nb, out_b[:s])
    ema_batch_nb(x[:s], nc, out_c[:s])
    ema_batch_nb(x[:s], nd, out_d[:s])
    if s == m:
        return
    ka, kb, kc, kd = 2.0 / (na + 1), 2.0 / (nb + 1), 2.0 / (nc + 1), 2.0 / (nd + 1)
    pa, pb, pc, pd = out_a[s - 1], out_b[s - 1], out_c[s - 1], out_d[s - 1]
    for i in range(s, m):
        xi = x[i]
        pa = ((xi - pa) * ka) + pa
        pb = ((xi - pb) * kb) + pb
        pc = ((xi - pc) * kc) + pc
        pd = ((xi - pd) * kd) + pd
        out_a[i] = pa
        out_b[i] = pb
        out_c[i] = pc
        out_d[i] = pd


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
    out[n] = rsi_value_nb(gain, loss)
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
        out[i] = rsi_value_nb(gain, loss)
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
        out_a[i] = rsi_value_nb(ga, la)
        out_b[i] = rsi_value_nb(gb, lb)


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
    out_pct[n] = (atr / prev) * 100.0 if not is_zero_nb(prev) else 0.0
    for i in range(n + 1, m):
        tr = true_range_nb(hi[i], lo[i], prev)
        prev = cl[i]
        atr *= n - 1
        atr += tr
        atr /= n
        out_atr[i] = atr
        out_pct[i] = (atr / prev) * 100.0 if not is_zero_nb(prev) else 0.0


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
        if not is_zero_nb(trs):
            minus_di = 100.0 * (mdm / trs)
            plus_di = 100.0 * (pdm / trs)
            s = minus_di + plus_di
            if not is_zero_nb(s):
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
        out_natr[i] = (atr / pc) * 100.0 if not is_zero_nb(pc) else 0.0
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
