"""Folding the bar step over many bars: steady runs, and the batch backtest's fold (numba).

A steady bar is a quiet bar (:func:`engine.sim.loop.quiet_open_nb`: every symbol has a bar,
none pays funding, none has a pending order, no stop, target or liquidation triggers) whose
decision changes nothing: the circuit breaker is not halted and does not trip, and every
symbol's decision holds its position as it is (:func:`engine.sim.risk.risk_hold_nb` settles
it at the current quantity), so no order is placed. Such a bar only marks the positions to
the close, steps the breaker's references and records the equity. Most bars of a backtest
and of every sweep combination are steady (a position held between two signals).

:func:`steady_run_nb` folds a run of steady bars with the account's state read once into
local variables and written back once at the end: per bar it calls the same pieces the bar
step calls (:func:`~engine.sim.loop.exits_nb`, :func:`~engine.sim.steps.equity_at_nb`
at the closes, :func:`~engine.sim.risk.breaker_marks_nb`,
:func:`~engine.sim.risk.breaker_trip_nb`, :func:`~engine.sim.risk.risk_hold_nb`), and it
stops BEFORE the first bar that is not steady, which the full step
(:func:`~engine.sim.loop.fold_step_nb`) then processes. Nothing of a bar is kept unless the
whole bar is steady, so a stop leaves the state exactly as the bars before it made it. The
arrays the bar step would store into on every bar are left alone until the run ends, which
is where the time went: numba cannot tell the state's arrays apart, so every store to one
forced every later load from memory (about 60 ns a bar for a one-symbol account in the
sweep kernel). A one-symbol account, the sweeps' and most backtests' case, runs in
:func:`_run_one_nb`, which takes its position, wallet, liquidation price and breaker
references as numbers, so that no store can invalidate them (steady bars 1.5-2x faster);
accounts of several symbols take the general loop, :func:`_run_many_nb`. Both make the same
checks; as a failed check ends the run before the bar whatever their order, the one-symbol
loop settles before it what the run cannot change (the next funding bar, the exit levels,
whether the breaker can trip, what the hold rule settles). Where no bar depends on the bars
before it but for the breaker's day, its bars are tested a chunk at a time without a branch
per bar (:func:`_one_settled_nb`), and a whole block of bars that cannot stop the run by its
prices or times (:func:`~engine.sim.bars.bar_blocks`, computed once per market) a test of
its directions alone. :func:`steady_run_nb` and :func:`_run_one_nb` are inlined into
their callers and :func:`_run_many_nb` is not: a call that passes the state costs ~0.24 us,
and any other split measured slower on order-heavy backtests (docs/architecture.md).

Runs need a liquidation price that the marks cannot move: isolated margin, or one symbol.
Other accounts fold every bar through :func:`~engine.sim.loop.fold_step_nb`.

Oracle: :func:`~engine.sim.loop.fold_step_nb` bar by bar (``tests/sim/test_steady.py``: the
same state, outputs and records, ``==``, on random accounts and decisions), and every
backtest and sweep test.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel
from engine.kernels.simd import range_nb
from engine.sim.accounting import exit_levels_nb
from engine.sim.bars import CHUNK
from engine.sim.enums import MarginMode, Sizing
from engine.sim.loop import close_all_nb, exits_nb, fold_step_nb, memo_liq_price_nb
from engine.sim.risk import (
    BAD_PRICE,
    DAY_MS,
    DIR_NAN,
    DIR_NEG,
    DIR_POS,
    DIR_ZERO,
    bar_class_nb,
    breaker_marks_nb,
    breaker_may_trip_nb,
    breaker_trip_nb,
    hold_classes_nb,
    risk_hold_nb,
)
from engine.sim.steps import equity_at_nb, equity_nb, plus_position_nb

#: the smallest positive float64: ``d >= TINY`` is ``d > 0``
TINY = float(np.nextafter(0.0, 1.0))


@kernel(inline=True)
def run_possible_nb(acct, pend, brk, prm):  # type: ignore[no-untyped-def]
    """Whether a steady run can start: the breaker not halted, no order pending, and a
    liquidation price the marks cannot move (isolated margin, or one symbol). The callers
    ask first (a run is usually impossible right after an order)."""
    if brk.halted[0]:
        return False
    if acct.qty.shape[0] > 1 and prm.margin_mode != MarginMode.ISOLATED:
        return False
    for s in range(acct.qty.shape[0]):
        if pend.active[s]:
            return False
    return True


@kernel(inline=True)
def one_views_nb(o, h, lo, c, direction, prob, target_out, reason_out):  # type: ignore[no-untyped-def]
    """The one-symbol loop's columns as 1-D C views (``reshape``: the arrays are
    C-contiguous ``[rows, 1]``), made once by the caller of :func:`steady_run_nb` and
    passed to every run: numba's ``reshape`` calls into its C helper, ~22 ns a call, and the
    eight views made at each run's start cost ~1.5 ns a bar-combination of the fused sweep
    (~1,900 runs of ~75 bars a combination). For several symbols every view is empty (the
    general loop reads the 2-D arrays). For kernels only: called from Python, a kernel
    compiled without NRT can return only its arguments, so it would hand back the 2-D
    arrays."""
    one = o.shape[1] == 1
    return (
        _view1_nb(o, one), _view1_nb(h, one), _view1_nb(lo, one), _view1_nb(c, one),
        _view1_nb(direction, one), _view1_nb(prob, one), _view1_nb(target_out, one),
        _view1_nb(reason_out, one),
    )  # fmt: skip


@kernel(inline=True)
def _view1_nb(x, one):  # type: ignore[no-untyped-def]
    """``x`` as a 1-D C view when ``one``, else its empty prefix (the same type both ways:
    kernels do not allocate)."""
    return x.reshape(x.size)[: x.size if one else 0]


@kernel(inline=True)
def steady_run_nb(  # type: ignore[no-untyped-def]
    acct, pend, brk, spec, prm, o, h, lo, c, funding, next_funding, time_ms, direction, prob,
    t0, t1, row0, equity_out, target_out, reason_out, memo, one, blocks,
):  # fmt: skip
    """Fold the steady bars from ``t0`` (at most up to ``t1``); return the first bar not
    folded (``t0`` when bar ``t0`` is not steady, ``t1`` when every bar was).

    ``o, h, lo, c, funding``: ``[n_bars, n_symbols]``; ``next_funding``: their
    :func:`~engine.sim.bars.next_funding_bars`; ``time_ms``: the bars' open times
    (length 0: unknown); ``direction`` and ``prob`` (0 rows: none) hold bar ``t`` in row
    ``t - row0``, as do ``target_out`` / ``reason_out`` (what
    :func:`~engine.sim.loop.decide_phase_nb` writes: the held quantity and its reason);
    ``equity_out[t]`` gets bar ``t``'s equity at the close. ``memo``: the account's
    :func:`~engine.sim.loop.new_liq_memo`; ``one``: :func:`one_views_nb` of the same
    ``o, h, lo, c, direction, prob, target_out, reason_out`` (the one-symbol loop's views,
    made once for every run); ``blocks``: :func:`~engine.sim.bars.bar_blocks` of the same
    prices and times (0 rows: every bar tested alone). The bar a run stops before leaves the
    state and ``equity_out`` untouched; its ``target_out`` / ``reason_out`` row may hold
    some symbols' holds, which the step that books the bar writes over.
    """
    if not run_possible_nb(acct, pend, brk, prm):
        return t0
    n_sym = acct.qty.shape[0]
    if n_sym == 1:
        q = acct.qty[0]
        # the memo asked where exits_nb would first ask it, at bar t0 or never (asking it
        # unconditionally measured ~20 ns a bar slower with a flip every 20 bars)
        liq = np.nan
        if q != 0.0 and t0 < t1 and not np.isnan(o[t0, 0]) and not np.isnan(c[t0, 0]):
            if np.isnan(funding[t0, 0]):
                liq = memo_liq_price_nb(acct, spec, prm.margin_mode, 0, memo)
        t, day, start, peak, prev = _run_one_nb(
            q, acct.entry_price[0], acct.stop[0], acct.target[0], acct.wallet[0], liq,
            acct.loss_streak[0], brk.day[0], brk.day_start_equity[0], brk.peak[0],
            brk.prev_equity[0], prm.daily_loss_pct, prm.max_drawdown_pct, prm.max_loss_streak,
            prm.sizing, prm.rebalance, one, next_funding, time_ms, t0, t1, row0, equity_out,
            blocks,
        )  # fmt: skip
    else:
        t, day, start, peak, prev = _run_many_nb(
            acct, brk, spec, prm, o, h, lo, c, funding, time_ms, direction, prob, t0, t1, row0,
            equity_out, target_out, reason_out, memo,
        )  # fmt: skip
    if t > t0:
        for s in range(n_sym):
            acct.last_price[s] = c[t - 1, s]
        brk.day[0] = day
        brk.day_start_equity[0] = start
        brk.peak[0] = peak
        brk.prev_equity[0] = prev
    return t


@kernel
def _run_many_nb(  # type: ignore[no-untyped-def]
    acct, brk, spec, prm, o, h, lo, c, funding, time_ms, direction, prob, t0, t1, row0,
    equity_out, target_out, reason_out, memo,
):  # fmt: skip
    """:func:`steady_run_nb`'s loop for an account of several symbols (isolated margin):
    ``(first bar not folded, day, day-start equity, peak, previous equity)``; the state is
    left untouched."""
    n_sym = acct.qty.shape[0]
    streak = acct.loss_streak[0]
    day = brk.day[0]
    start = brk.day_start_equity[0]
    peak = brk.peak[0]
    prev = brk.prev_equity[0]
    has_time = time_ms.shape[0] > 0
    has_prob = prob.shape[0] > 0
    t = t0
    while t < t1:
        # phases 1-3: quiet (marks at the opens, nothing triggers)
        steady = True
        for s in range(n_sym):
            if np.isnan(o[t, s]) or np.isnan(c[t, s]):
                steady = False
            elif acct.qty[s] != 0.0 and not np.isnan(funding[t, s]):
                steady = False
            elif exits_nb(acct, spec, prm, s, o[t, s], h[t, s], lo[t, s], memo):
                steady = False
        if not steady:
            break
        # phase 4: the equity at the close
        eq = equity_at_nb(acct, c[t])
        # phase 5: the breaker's references and trip rules, then every decision a hold
        tm = time_ms[t] if has_time else -1
        day2, start2, peak2 = breaker_marks_nb(day, start, peak, prev, tm, eq)
        code, _ = breaker_trip_nb(
            start2, peak2, streak, tm, eq, prm.daily_loss_pct, prm.max_drawdown_pct,
            prm.max_loss_streak,
        )  # fmt: skip
        if code >= 0:
            break
        r = t - row0
        for s in range(n_sym):
            q = acct.qty[s]
            p = prob[r, s] if has_prob else np.nan
            done, target, reason = risk_hold_nb(
                direction[r, s], p, c[t, s], q, False, prm.sizing, prm.rebalance
            )
            if not done or target != q:
                steady = False
                break
            target_out[r, s] = target
            reason_out[r, s] = reason
        if not steady:
            break
        day, start, peak, prev = day2, start2, peak2, eq
        equity_out[t] = eq
        t += 1
    return t, day, start, peak, prev


@kernel(inline=True)
def _run_one_nb(  # type: ignore[no-untyped-def]
    q, entry, stop, target, wallet, liq, streak, day, start, peak, prev, daily, drawdown,
    losses, sizing, rebalance, one, next_funding, time_ms, t0, t1, row0, equity_out, blocks,
):  # fmt: skip
    """:func:`steady_run_nb`'s loop for a one-symbol account: the same checks as the general
    loop, with the position (quantity ``q``, ``entry``, ``stop``, ``target``), the
    ``wallet``, the liquidation price ``liq`` and the breaker's references passed as numbers
    (none moves in a steady run), so that the bar's stores cannot force them back from
    memory. What cannot change within the run is settled before its loop (any failed check
    ends the run before the bar, so their order within a bar does not matter): a position
    stops at the next funding bar (``next_funding``,
    :func:`~engine.sim.bars.next_funding_bars`). When no bar of the run depends on the bars
    before it but for the breaker's day (a breaker that cannot trip,
    :func:`~engine.sim.risk.breaker_may_trip_nb`; no Kelly hold reading a probability; known
    times; the hold rule settling one range of directions), the run is
    :func:`_one_settled_nb`, which tests its bars a chunk at a time without a branch per
    bar; otherwise :func:`_one_loop_nb` asks every rule per bar. The two are ``==``
    (``tests/sim/test_steady.py``). In the fused sweep over BTCUSDT's 5m bars the steady
    bars cost ~7.3 -> ~3.3 ns a bar-combination (docs/architecture.md, "Settled runs")."""
    if q != 0.0 and t0 < t1:
        t1 = min(t1, next_funding[t0, 0])
    kelly_p = one[5].shape[0] > 0 and sizing == Sizing.KELLY  # a hold reads p per bar
    may_trip = breaker_may_trip_nb(streak, daily, drawdown, losses)
    if not (may_trip or kelly_p or time_ms.shape[0] == 0):
        steady, why = hold_classes_nb(q, sizing, rebalance)
        lo, hi, interval = _hold_range_nb(steady)
        # the settled test needs a NaN direction and an invalid price to hold (risk_hold_nb
        # settles both at the held quantity); the loop below covers any other rule
        if interval and steady[DIR_NAN] and steady[BAD_PRICE]:
            return _one_settled_nb(
                q, entry, stop, target, wallet, liq, day, start, peak, prev, sizing,
                rebalance, lo, hi, why, one, time_ms, t0, t1, row0, equity_out, blocks,
            )  # fmt: skip
    # the breaker's rules per bar (breaker_trip_nb finds nothing where none can trip)
    return _one_loop_nb(
        q, entry, stop, target, wallet, liq, streak, day, start, peak, prev, daily, drawdown,
        losses, sizing, rebalance, one, time_ms, t0, t1, row0, equity_out,
    )  # fmt: skip


@kernel(inline=True)
def _hold_range_nb(steady):  # type: ignore[no-untyped-def]
    """The directions (not NaN) that a :func:`~engine.sim.risk.hold_classes_nb` table
    settles, as the range ``lo <= d <= hi``: ``(lo, hi, True)``, or ``(.., False)`` when
    they are not one range (negative and positive but not zero)."""
    neg, zero, pos = steady[DIR_NEG], steady[DIR_ZERO], steady[DIR_POS]
    lo = -np.inf if neg else (0.0 if zero else (TINY if pos else np.inf))
    hi = np.inf if pos else (0.0 if zero else (-TINY if neg else -np.inf))
    return lo, hi, not (neg and pos and not zero)


@kernel(inline=True)
def _one_settled_nb(  # type: ignore[no-untyped-def]
    q, entry, stop, target, wallet, liq, day, start, peak, prev, sizing, rebalance, lo, hi,
    why, one, time_ms, t0, t1, row0, equity_out, blocks,
):  # fmt: skip
    """:func:`_run_one_nb`'s run when nothing of a bar depends on the bars before it but the
    breaker's day: the breaker cannot trip, the hold rule reads no probability, and the
    bars' times are known. Then a bar is steady by its own columns alone, which are tested
    ``CHUNK`` bars at a time without a branch per bar (chunks aligned on the blocks of
    :func:`~engine.sim.bars.bar_blocks`: a whole block whose lowest low and highest high
    touch no exit level, with every open and close and every time within the day, tests
    only its bars' directions): a bar and a close, no exit level touched, and a hold of its
    class (:func:`~engine.sim.risk.hold_classes_nb`, the table of ``risk_hold_nb`` for this
    position, as the range ``lo <= d <= hi``; a NaN direction and
    an invalid price hold). A new UTC day also stops the test. The test may stop at a bar
    that is steady after all; the bar it stops at is checked by the rules themselves, and a
    steady one (a new day) is marked by :func:`~engine.sim.risk.breaker_marks_nb` and booked. The equity of the steady bars
    is then written (:func:`~engine.sim.steps.plus_position_nb` of the wallet, as
    :func:`_one_loop_nb` forms it) and the peak taken over them. The result is
    :func:`_one_loop_nb`'s, ``==`` (``tests/sim/test_steady.py``): any failed check ends a run
    before its bar whatever the order of the checks, and between two new days the breaker's
    references only follow the peak and the previous equity."""
    o1, h1, l1, c1, d1, _, held_out, why_out = one
    block_prices, block_times = blocks
    keep = held_out.shape[0] > 0
    low_level, high_level = exit_levels_nb(q, stop, target, liq)
    day_lo, day_span = _day_bounds_nb(day)
    t = max(t0, 0)
    r = max(t - row0, 0)
    m = max(t1 - t, 0)
    n = 0  # the run's steady bars so far
    while n < m:
        a = t + n
        k = min(CHUNK - a % CHUNK, m - n)  # to the end of a's block
        # the chunk's columns through slices indexed by the loop counter (no index fix-up)
        b = a + k
        oc, hc, lc, cc, tc = o1[a:b], h1[a:b], l1[a:b], c1[a:b], time_ms[a:b]
        dc = d1[r + n : r + n + k]
        stop_at = k
        blk = a // CHUNK
        if k == CHUNK and blk < block_prices.shape[0] and _block_holds_nb(
            block_prices[blk], block_times[blk], low_level, high_level, day_lo, day_span
        ):  # a whole block no bar of which stops the run by its prices or time
            for j in range(k):
                stop_at = min(stop_at, j if _off_class_nb(cc[j], dc[j], lo, hi) else k)
        else:
            for j in range(k):  # bitwise, not short-circuit: no branch per bar
                c, d = cc[j], dc[j]
                # a missing open or close (their sum is NaN), an exit level touched, a valid
                # price with a direction the run does not hold (a NaN one holds), or a time
                # outside the day (unsigned: before it wraps round); a stop where the bar is
                # steady after all (two infinite prices, an unknown time) is only a bar the
                # scalar check below books exactly
                stop_here = (
                    np.isnan(oc[j] + c) | (lc[j] <= low_level) | (hc[j] >= high_level)
                    | _off_class_nb(c, d, lo, hi)
                    | (np.uint64(tc[j] - day_lo) >= day_span)
                )  # fmt: skip
                stop_at = min(stop_at, j if stop_here else k)
        ec = equity_out[t + n : t + n + k]
        for j in range(stop_at):
            ec[j] = plus_position_nb(wallet, q, entry, cc[j])
        if q == 0.0:  # every bar's equity is the wallet: one comparison
            if stop_at > 0 and wallet > peak:
                peak = wallet
        else:  # the high of the equities (NaN skipped), four lanes at a time, then the rest
            whole = stop_at - stop_at % 4
            if whole > 0:
                peak = _above_nb(peak, range_nb(equity_out, t + n, whole)[0])
            for j in range(whole, stop_at):
                peak = _above_nb(peak, ec[j])
        if keep:
            rows = slice(r + n, r + n + stop_at)
            _held_rows_nb(q, cc, dc, why, held_out[rows], why_out[rows])
        if stop_at > 0:
            prev = ec[stop_at - 1]
        n += stop_at
        if stop_at == k:
            continue
        # bar stop_at of the chunk: not steady (the run ends before it), or a new day
        j = stop_at
        c, d = cc[j], dc[j]
        if c != c or oc[j] != oc[j] or lc[j] <= low_level or hc[j] >= high_level:
            break
        done, held, reason = risk_hold_nb(d, np.nan, c, q, False, sizing, rebalance)
        if not done or held != q:
            break
        eq = plus_position_nb(wallet, q, entry, c)
        day, start, peak = breaker_marks_nb(day, start, peak, prev, tc[j], eq)
        day_lo, day_span = _day_bounds_nb(day)
        ec[j] = eq
        if keep:
            held_out[r + n] = held
            why_out[r + n] = reason
        prev = eq
        n += 1
    return t + n, day, start, peak, prev


@kernel(inline=True)
def _off_class_nb(c, d, lo, hi):  # type: ignore[no-untyped-def]
    """Whether a bar with close ``c`` and direction ``d`` is outside the run's settled
    classes: a valid price (above 0) with a direction outside ``lo <= d <= hi`` (a NaN
    direction holds). Bitwise, not short-circuit: no branch per bar."""
    return (c > 0.0) & ((d < lo) | (d > hi))


@kernel(inline=True)
def _block_holds_nb(prices, times, low_level, high_level, day_lo, day_span):  # type: ignore[no-untyped-def]
    """Whether no bar of a :func:`~engine.sim.bars.bar_blocks` block stops a settled run by
    its prices or its time: every open and close there, no low at or below ``low_level``,
    no high at or above ``high_level``, and the earliest and latest times (so every time)
    within the day."""
    return (
        prices[2] == 0.0 and prices[0] > low_level and prices[1] < high_level
        and np.uint64(times[0] - day_lo) < day_span and np.uint64(times[1] - day_lo) < day_span
    )  # fmt: skip


@kernel(inline=True)
def _above_nb(peak, e):  # type: ignore[no-untyped-def]
    """The peak after equity ``e``: ``e`` when above it (a NaN is not)."""
    return e if e > peak else peak


@kernel(inline=True)
def _day_bounds_nb(day):  # type: ignore[no-untyped-def]
    """UTC day ``day``'s first open time and length, ``(lo, span)`` (span uint64;
    :func:`~engine.sim.risk.breaker_marks_nb`'s day is ``time_ms // DAY_MS``): a bar whose
    ``uint64(time - lo) >= span`` is outside it. A day before the epoch, or none yet (the
    breaker's first), gives span 0: every bar asks the rule."""
    if day < 0:
        return 0, np.uint64(0)
    return day * DAY_MS, np.uint64(DAY_MS)


@kernel(inline=True)
def _held_rows_nb(q, cc, dc, why, held_out, why_out):  # type: ignore[no-untyped-def]
    """The steady bars' decisions (what :func:`~engine.sim.loop.decide_phase_nb` writes): the
    held quantity ``q`` and the reason of each bar's class (``why``: the reasons of
    :func:`~engine.sim.risk.hold_classes_nb`)."""
    for j in range(held_out.shape[0]):
        held_out[j] = q
        why_out[j] = why[bar_class_nb(dc[j], cc[j])]


@kernel(inline=True)
def _one_loop_nb(  # type: ignore[no-untyped-def]
    q, entry, stop, target, wallet, liq, streak, day, start, peak, prev, daily, drawdown,
    losses, sizing, rebalance, one, time_ms, t0, t1, row0, equity_out,
):  # fmt: skip
    """:func:`_run_one_nb`'s loop over ``t0 .. t1-1`` (no funding bar among them while a
    position is held) when a bar's steadiness may depend on the bars before it (the breaker
    may trip, a Kelly hold reads each bar's probability) or the times are unknown. Per bar:
    a bar and a close (phases 1-2), no exit level touched (phase 3,
    :func:`~engine.sim.accounting.exit_levels_nb`), the equity at the close (phase 4,
    :func:`~engine.sim.steps.equity_at_nb`'s sum), the breaker's references and trip rules
    and the decision a hold (phase 5).

    The run's columns are slices of the one symbol's 1-D views (``one``: :func:`one_views_nb`,
    made once by the caller) indexed by the loop counter, so an index costs no row stride and
    no negative-index fix-up; ``held_out`` / ``why_out`` of length 0 are not written (the
    sweep does not read them)."""
    o1, h1, l1, c1, d1, p1, held_out, why_out = one
    has_time = time_ms.shape[0] > 0
    has_prob = p1.shape[0] > 0
    keep = held_out.shape[0] > 0
    low_level, high_level = exit_levels_nb(q, stop, target, liq)
    t = max(t0, 0)
    r = max(t - row0, 0)
    m = max(t1 - t, 0)
    oc, hc, lc, cc, ec = (
        o1[t : t + m],
        h1[t : t + m],
        l1[t : t + m],
        c1[t : t + m],
        equity_out[t : t + m],
    )
    tc, dc, pc = time_ms[t : t + m], d1[r : r + m], p1[r : r + m]
    hold_c, why_c = held_out[r : r + m], why_out[r : r + m]
    n = m
    for j in range(m):
        ct = cc[j]
        if np.isnan(oc[j]) or np.isnan(ct) or lc[j] <= low_level or hc[j] >= high_level:
            n = j
            break
        eq = plus_position_nb(wallet, q, entry, ct)
        tm = tc[j] if has_time else -1
        day2, start2, peak2 = breaker_marks_nb(day, start, peak, prev, tm, eq)
        code, _ = breaker_trip_nb(start2, peak2, streak, tm, eq, daily, drawdown, losses)
        if code >= 0:
            n = j
            break
        p = pc[j] if has_prob else np.nan
        done, held, reason = risk_hold_nb(dc[j], p, ct, q, False, sizing, rebalance)
        if not done or held != q:
            n = j
            break
        if keep:
            hold_c[j] = held
            why_c[j] = reason
        day, start, peak, prev = day2, start2, peak2, eq
        ec[j] = eq
    return t + n, day, start, peak, prev


@kernel()
def simulate_nb(  # type: ignore[no-untyped-def]
    open_,
    high,
    low,
    close,
    funding,
    mark,
    direction,
    prob,
    payoff,
    atr,
    time_ms,
    spec,
    prm,
    acct,
    pend,
    brk,
    recs,
    equity_out,
    wallet_out,
    position_out,
    target_out,
    reason_out,
    empty,
    memo,
    next_funding,
    blocks,
):
    """Fold the bar step over all bars (the batch backtest): steady runs
    (:func:`steady_run_nb`) and every other bar through
    :func:`~engine.sim.loop.fold_step_nb`. 2-D inputs are ``[n_bars, n_symbols]``;
    ``mark``, ``prob``, ``payoff``, ``atr`` may have 0 rows and ``time_ms`` 0 length (not
    given); ``empty`` is a float64[0] array. Outputs are written into the ``*_out`` arrays;
    ``memo`` is a :func:`~engine.sim.loop.new_liq_memo` (scratch), ``next_funding`` the
    funding's :func:`~engine.sim.bars.next_funding_bars`, ``blocks`` the prices'
    :func:`~engine.sim.bars.bar_blocks`."""
    n = open_.shape[0]
    one = one_views_nb(open_, high, low, close, direction, prob, target_out, reason_out)
    t = 0
    while t < n:
        end = t
        if run_possible_nb(acct, pend, brk, prm):
            end = steady_run_nb(
                acct, pend, brk, spec, prm, open_, high, low, close, funding, next_funding,
                time_ms, direction, prob, t, n, 0, equity_out, target_out, reason_out, memo,
                one, blocks,
            )  # fmt: skip
        while t < end:
            _account_row_nb(acct, t, wallet_out, position_out)
            t += 1
        if t >= n:
            break
        tm = time_ms[t] if time_ms.shape[0] > 0 else -1
        mark_row = mark[t] if mark.shape[0] > 0 else empty
        prob_row = prob[t] if prob.shape[0] > 0 else empty
        payoff_row = payoff[t] if payoff.shape[0] > 0 else empty
        atr_row = atr[t] if atr.shape[0] > 0 else empty
        equity_out[t] = fold_step_nb(
            acct, pend, brk, spec, prm, recs, t, tm, open_[t], high[t], low[t], close[t],
            funding[t], mark_row, direction[t], prob_row, payoff_row, atr_row, target_out[t],
            reason_out[t], memo,
        )  # fmt: skip
        _account_row_nb(acct, t, wallet_out, position_out)
        t += 1
    if n > 0 and prm.close_at_end:
        close_all_nb(acct, pend, prm, recs, n - 1)
        equity_out[n - 1] = equity_nb(acct)
        _account_row_nb(acct, n - 1, wallet_out, position_out)


@kernel(inline=True)
def _account_row_nb(acct, t, wallet_out, position_out):  # type: ignore[no-untyped-def]
    """Bar ``t``'s wallet and positions into the backtest's output rows."""
    wallet_out[t] = acct.wallet[0]
    for s in range(acct.qty.shape[0]):
        position_out[t, s] = acct.qty[s]
