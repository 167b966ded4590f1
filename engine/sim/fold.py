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
whether the breaker can trip). :func:`steady_run_nb` and :func:`_run_one_nb` are inlined into
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
from engine.sim.accounting import exit_levels_nb, unrealized_pnl_nb
from engine.sim.enums import MarginMode
from engine.sim.loop import close_all_nb, exits_nb, fold_step_nb, memo_liq_price_nb
from engine.sim.risk import breaker_marks_nb, breaker_may_trip_nb, breaker_trip_nb, risk_hold_nb
from engine.sim.steps import equity_at_nb, equity_nb


def next_funding_bars(funding: np.ndarray) -> np.ndarray:
    """int64 ``[n_bars, n_symbols]``: for each bar ``t`` and symbol ``s`` the first bar
    ``>= t`` at which ``s`` has a funding rate (``funding`` not NaN), ``n_bars`` when none
    follows. A one-symbol steady run holding a position ends before it (one lookup a run,
    no test per bar)."""
    n = funding.shape[0]
    at = np.where(np.isnan(funding), n, np.arange(n, dtype=np.int64)[:, None])
    return np.ascontiguousarray(np.minimum.accumulate(at[::-1], axis=0)[::-1], dtype=np.int64)


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
    t0, t1, row0, equity_out, target_out, reason_out, memo, one,
):  # fmt: skip
    """Fold the steady bars from ``t0`` (at most up to ``t1``); return the first bar not
    folded (``t0`` when bar ``t0`` is not steady, ``t1`` when every bar was).

    ``o, h, lo, c, funding``: ``[n_bars, n_symbols]``; ``next_funding``: their
    :func:`next_funding_bars`; ``time_ms``: the bars' open times
    (length 0: unknown); ``direction`` and ``prob`` (0 rows: none) hold bar ``t`` in row
    ``t - row0``, as do ``target_out`` / ``reason_out`` (what
    :func:`~engine.sim.loop.decide_phase_nb` writes: the held quantity and its reason);
    ``equity_out[t]`` gets bar ``t``'s equity at the close. ``memo``: the account's
    :func:`~engine.sim.loop.new_liq_memo`; ``one``: :func:`one_views_nb` of the same
    ``o, h, lo, c, direction, prob, target_out, reason_out`` (the one-symbol loop's views,
    made once for every run). The bar a run stops before leaves the state and
    ``equity_out`` untouched; its ``target_out`` / ``reason_out`` row may hold some symbols'
    holds, which the step that books the bar writes over.
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
    losses, sizing, rebalance, one, next_funding, time_ms, t0, t1, row0, equity_out,
):  # fmt: skip
    """:func:`steady_run_nb`'s loop for a one-symbol account: the same checks as the general
    loop, with the position (quantity ``q``, ``entry``, ``stop``, ``target``), the
    ``wallet``, the liquidation price ``liq`` and the breaker's references passed as numbers
    (none moves in a steady run), so that the bar's stores cannot force them back from
    memory. What cannot change within the run is settled before its loop (any failed check
    ends the run before the bar, so their order within a bar does not matter): a position
    stops at the next funding bar (``next_funding``, :func:`next_funding_bars`), and a
    breaker that cannot trip (:func:`~engine.sim.risk.breaker_may_trip_nb`) is not asked per
    bar (:func:`_one_loop_nb` is inlined once with the trip rules and once without)."""
    if q != 0.0 and t0 < t1:
        t1 = min(t1, next_funding[t0, 0])
    if breaker_may_trip_nb(streak, daily, drawdown, losses):
        return _one_loop_nb(
            q, entry, stop, target, wallet, liq, streak, day, start, peak, prev, daily,
            drawdown, losses, sizing, rebalance, one, time_ms, t0, t1, row0, equity_out, True,
        )  # fmt: skip
    return _one_loop_nb(
        q, entry, stop, target, wallet, liq, streak, day, start, peak, prev, daily, drawdown,
        losses, sizing, rebalance, one, time_ms, t0, t1, row0, equity_out, False,
    )  # fmt: skip


@kernel(inline=True)
def _one_loop_nb(  # type: ignore[no-untyped-def]
    q, entry, stop, target, wallet, liq, streak, day, start, peak, prev, daily, drawdown,
    losses, sizing, rebalance, one, time_ms, t0, t1, row0, equity_out, may_trip,
):  # fmt: skip
    """:func:`_run_one_nb`'s loop over ``t0 .. t1-1`` (no funding bar among them while a
    position is held); ``may_trip`` a constant at each call site. Per bar: a bar and a close
    (phases 1-2), no exit level touched (phase 3, :func:`~engine.sim.accounting.exit_levels_nb`),
    the equity at the close (phase 4, :func:`~engine.sim.steps.equity_at_nb`'s sum), the
    breaker's references and trip rules and the decision a hold (phase 5).

    The one symbol's columns are read as 1-D views (``one``: :func:`one_views_nb`, made once
    by the caller) and the bar and row indices start at ``max(..., 0)`` (``t0 >= row0 >= 0``),
    so an index costs no row stride and no negative-index fix-up. Measured alone over BTCUSDT's
    143,900 5m bars: ~17 -> ~11 ns a bar holding a position, ~13 -> ~7 ns flat;
    ``simulate_nb`` with one position held throughout 26 -> 18 ns a bar."""
    o1, h1, l1, c1, d1, p1, held_out, why_out = one
    has_time = time_ms.shape[0] > 0
    has_prob = p1.shape[0] > 0
    low_level, high_level = exit_levels_nb(q, stop, target, liq)
    t = max(t0, 0)
    r = max(t - row0, 0)
    while t < t1:
        ot = o1[t]
        ct = c1[t]
        if np.isnan(ot) or np.isnan(ct):
            break
        if l1[t] <= low_level or h1[t] >= high_level:
            break
        eq = wallet
        if q != 0.0:
            eq += unrealized_pnl_nb(q, entry, ct)
        tm = time_ms[t] if has_time else -1
        day2, start2, peak2 = breaker_marks_nb(day, start, peak, prev, tm, eq)
        if may_trip:
            code, _ = breaker_trip_nb(start2, peak2, streak, tm, eq, daily, drawdown, losses)
            if code >= 0:
                break
        p = p1[r] if has_prob else np.nan
        done, held, reason = risk_hold_nb(d1[r], p, ct, q, False, sizing, rebalance)
        if not done or held != q:
            break
        held_out[r] = held
        why_out[r] = reason
        day, start, peak, prev = day2, start2, peak2, eq
        equity_out[t] = eq
        t += 1
        r += 1
    return t, day, start, peak, prev


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
):
    """Fold the bar step over all bars (the batch backtest): steady runs
    (:func:`steady_run_nb`) and every other bar through
    :func:`~engine.sim.loop.fold_step_nb`. 2-D inputs are ``[n_bars, n_symbols]``;
    ``mark``, ``prob``, ``payoff``, ``atr`` may have 0 rows and ``time_ms`` 0 length (not
    given); ``empty`` is a float64[0] array. Outputs are written into the ``*_out`` arrays;
    ``memo`` is a :func:`~engine.sim.loop.new_liq_memo` (scratch), ``next_funding`` the
    funding's :func:`next_funding_bars`."""
    n = open_.shape[0]
    one = one_views_nb(open_, high, low, close, direction, prob, target_out, reason_out)
    t = 0
    while t < n:
        end = t
        if run_possible_nb(acct, pend, brk, prm):
            end = steady_run_nb(
                acct, pend, brk, spec, prm, open_, high, low, close, funding, next_funding,
                time_ms, direction, prob, t, n, 0, equity_out, target_out, reason_out, memo,
                one,
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
