"""The simulator's bar step and its batch fold (numba).

One bar ``t`` (rows ``o[t], h[t], l[t], c[t]`` over the symbols) is processed in five
phases, each a separately callable kernel:

1. :func:`funding_phase_nb`: where ``funding[t, s]`` is not NaN (the bar opens at a
   funding time) the position held at that instant, i.e. BEFORE the order decided at
   close t-1 fills, pays or receives ``qty * mark * rate``, ``mark`` = ``mark[t, s]`` if
   given, else the bar's open. (Binance exchanges funding at exactly hh:00:00.000; an
   order sent after the previous bar closed reaches it later.)
2. :func:`open_phase_nb`: every symbol's pending order (decided at close t-1) fills at the
   open: the closing leg at market, the opening leg at market or, for limit entries, at
   its limit price if the bar touches it. New stop/target levels are set from the entry.
3. :func:`exit_phase_nb`: stop-loss, liquidation and take-profit against the bar's high
   and low, adverse levels first (stop before target when both are touched).
4. :func:`close_phase_nb`: mark to market at the close; returns the equity.
5. :func:`decide_phase_nb`: the circuit breaker steps, then the risk manager turns each
   symbol's decision into a target position that becomes the pending order for t+1.

:func:`bar_step_nb` runs the five phases; :func:`simulate_nb` folds it over all bars.

Quiet bars. On most bars of a backtest phases 1-3 only mark each symbol to its open: no
symbol pays funding, none has a pending order, no stop, target or liquidation triggers.
:func:`fold_step_nb` (what :func:`simulate_nb` and the sweep's fused kernel fold) checks
that first (:func:`quiet_open_nb`, with the liquidation price remembered per symbol while
its inputs stay bit-for-bit the same: :func:`memo_liq_price_nb`) and then runs phases 4-5;
any other bar goes through :func:`bar_step_nb`. Same state, same floats (tested on random
states in ``tests/sim/test_quiet_bar.py`` and by every backtest).
A NaN open means the symbol has no bar at t: it is skipped in every phase (its pending
order waits for its next bar, its position is valued at its last close).

Oracle: hand-computed bar series in ``tests/sim/test_simulate.py`` and the step-by-step
replay in ``tests/sim/test_steps_parity.py``.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel
from engine.sim.accounting import (
    exit_trigger_nb,
    fee_nb,
    limit_fill_price_nb,
    liquidation_price_nb,
    max_notional_nb,
    order_legs_nb,
    round_price_nb,
    slipped_price_nb,
    stop_target_prices_nb,
)
from engine.sim.enums import FillKind, OrderCheck, OrderType, Reason
from engine.sim.risk import breaker_step_nb, risk_hold_nb, risk_target_nb
from engine.sim.steps import (
    affordable_qty_nb,
    equity_nb,
    execute_fill_nb,
    exit_step_nb,
    funding_step_nb,
    liq_backing_nb,
    place_order_nb,
)

#: columns of a liquidation-price memo row (:func:`new_liq_memo`)
MEMO_QTY, MEMO_ENTRY, MEMO_BACKING, MEMO_MODE, MEMO_LIQ = range(5)


@kernel(inline=True)
def fill_pending_nb(acct, pend, spec, prm, recs, bar, s, open_, high, low):  # type: ignore[no-untyped-def]
    """Fill symbol ``s``'s pending order over one bar (phase 1 for one symbol).

    The leg that reduces or closes the current position is a market order at the open
    (kind EXIT); the leg that opens or increases is a market order at the open or a
    limit order at ``pend.limit_price`` (kind ENTRY), shrunk to what the free margin
    affords and dropped if it then fails the exchange filters.
    """
    if not pend.active[s]:
        return
    pend.active[s] = False
    target = pend.target[s]
    q = acct.qty[s]
    if target == q:
        return
    close_qty, open_qty = order_legs_nb(q, target)
    if close_qty != 0.0:
        side = 1 if close_qty > 0 else -1
        price = slipped_price_nb(side, open_, prm.slippage_bps)
        fee = fee_nb(close_qty, price, prm.taker_fee)
        execute_fill_nb(
            acct, recs, bar, s, close_qty, price, fee, FillKind.EXIT, OrderType.MARKET, prm.leverage
        )
    if open_qty == 0.0:
        return
    side = 1 if open_qty > 0 else -1
    if prm.entry_type == OrderType.LIMIT:
        price = limit_fill_price_nb(side, pend.limit_price[s], open_, high, low)
        if np.isnan(price):
            return
        rate = prm.maker_fee
        is_market = False
    else:
        price = slipped_price_nb(side, open_, prm.slippage_bps)
        rate = prm.taker_fee
        is_market = True
    open_qty = affordable_qty_nb(acct, prm, s, open_qty, price, rate, spec.step[s])
    if open_qty == 0.0:
        return
    code = place_order_nb(
        acct,
        spec,
        prm,
        recs,
        bar,
        s,
        open_qty,
        price,
        rate,
        FillKind.ENTRY,
        prm.entry_type,
        is_market,
    )
    if code == OrderCheck.OK:
        pos_side = 1 if acct.qty[s] > 0 else -1
        stop, target_px = stop_target_prices_nb(
            pos_side,
            acct.entry_price[s],
            prm.stop_pct,
            prm.target_pct,
            prm.stop_atr,
            prm.target_atr,
            pend.atr[s],
            spec.tick[s],
        )
        acct.stop[s] = stop
        acct.target[s] = target_px


@kernel(inline=True)
def funding_phase_nb(acct, prm, recs, bar, o, funding_row, mark_row):  # type: ignore[no-untyped-def]
    """Phase 1: settle funding where the bar opens at a funding time (non-NaN rate), on
    the position held before this bar's pending order fills, at ``mark_row[s]`` (the
    bar's open when it is empty or NaN)."""
    for s in range(o.shape[0]):
        if np.isnan(o[s]) or np.isnan(funding_row[s]) or acct.qty[s] == 0.0:
            continue
        mark = o[s]
        if mark_row.shape[0] > 0 and not np.isnan(mark_row[s]):
            mark = mark_row[s]
        funding_step_nb(acct, prm, recs, bar, s, funding_row[s], mark)


@kernel(inline=True)
def open_phase_nb(acct, pend, spec, prm, recs, bar, o, h, lo):  # type: ignore[no-untyped-def]
    """Phase 2: set each symbol's mark to its open and fill its pending order."""
    for s in range(o.shape[0]):
        if np.isnan(o[s]):
            continue
        acct.last_price[s] = o[s]
        if pend.active[s]:
            fill_pending_nb(acct, pend, spec, prm, recs, bar, s, o[s], h[s], lo[s])


@kernel(inline=True)
def exit_phase_nb(acct, spec, prm, recs, bar, o, h, lo):  # type: ignore[no-untyped-def]
    """Phase 3: stops, liquidations and targets against each symbol's high and low."""
    for s in range(o.shape[0]):
        if np.isnan(o[s]) or acct.qty[s] == 0.0:
            continue
        exit_step_nb(acct, spec, prm, recs, bar, s, o[s], h[s], lo[s])


@kernel(inline=True)
def close_phase_nb(acct, c):  # type: ignore[no-untyped-def]
    """Phase 4: mark every symbol with a bar to its close; return the account equity."""
    for s in range(c.shape[0]):
        if not np.isnan(c[s]):
            acct.last_price[s] = c[s]
    return equity_nb(acct)


@kernel(inline=True)
def _size_nb(  # type: ignore[no-untyped-def]
    acct, spec, prm, s, planned, planned_margin, direction, p, payoff, close, equity, q, halted
):
    """Size symbol ``s``'s new position (:func:`engine.sim.risk.risk_target_nb`) with the
    caps of this bar: the other symbols' planned notional and margin, the order's max
    quantity and the brackets' largest notional at the leverage."""
    n_sym = planned.shape[0]
    other_notional = 0.0
    other_margin = 0.0
    for j in range(n_sym):
        if j != s and planned[j] != 0.0 and not np.isnan(acct.last_price[j]):
            other_notional += abs(planned[j]) * acct.last_price[j]
            other_margin += planned_margin[j]
    b = prm.payoff_ratio
    if payoff.shape[0] > 0 and not np.isnan(payoff[s]):
        b = payoff[s]
    is_market = prm.entry_type == OrderType.MARKET
    max_qty = spec.market_max_qty[s] if is_market else spec.max_qty[s]
    bmax = max_notional_nb(prm.leverage, spec.br_cap[s], spec.br_lev[s], spec.n_br[s])
    return risk_target_nb(
        direction,
        p,
        b,
        close,
        equity,
        q,
        other_notional,
        other_margin,
        halted,
        prm.sizing,
        prm.fixed_fraction,
        prm.kelly_fraction,
        prm.leverage,
        prm.taker_fee,
        prm.max_position_pct,
        prm.max_leverage,
        prm.max_exposure_pct,
        prm.rebalance,
        spec.step[s],
        spec.min_qty[s],
        max_qty,
        spec.min_notional[s],
        bmax,
    )


@kernel(inline=True)
def decide_phase_nb(  # type: ignore[no-untyped-def]
    acct,
    pend,
    brk,
    spec,
    prm,
    recs,
    bar,
    time_ms,
    equity,
    c,
    direction,
    prob,
    payoff,
    atr,
    target_out,
    reason_out,
):
    """Phase 5: step the breaker, then size each symbol's decision into a pending order.

    ``prob``, ``payoff`` and ``atr`` may be empty arrays (not given); a missing payoff
    uses ``prm.payoff_ratio``. Writes the target position and the :data:`Reason` code of
    every symbol into ``target_out`` / ``reason_out``. Symbols are sized in column order;
    the exposure and margin caps of a later symbol see the earlier ones' new targets.
    """
    n_sym = c.shape[0]
    halted = breaker_step_nb(
        brk,
        recs.events,
        acct.loss_streak,
        bar,
        time_ms,
        equity,
        prm.daily_loss_pct,
        prm.max_drawdown_pct,
        prm.max_loss_streak,
        prm.cooldown_bars,
    )
    planned = pend.planned
    planned_margin = pend.planned_margin
    for s in range(n_sym):
        planned[s] = acct.qty[s]
        planned_margin[s] = acct.margin[s]
    for s in range(n_sym):
        q = acct.qty[s]
        if np.isnan(c[s]):
            target_out[s] = q
            reason_out[s] = Reason.NO_DECISION
            continue
        p = prob[s] if prob.shape[0] > 0 else np.nan
        done, target, reason = risk_hold_nb(
            direction[s], p, c[s], q, halted, prm.sizing, prm.rebalance
        )
        if not done:  # a new position to size: the caps, then risk_target_nb
            target, reason = _size_nb(
                acct, spec, prm, s, planned, planned_margin, direction[s], p, payoff, c[s],
                equity, q, halted,
            )  # fmt: skip
        target_out[s] = target
        reason_out[s] = reason
        planned[s] = target
        if target != q:
            planned_margin[s] = abs(target) * c[s] / prm.leverage
            pend.active[s] = True
            pend.target[s] = target
            pend.bar[s] = bar
            pend.atr[s] = atr[s] if atr.shape[0] > 0 else np.nan
            if target != 0.0:
                side = 1 if target > 0 else -1
                raw = c[s] * (1.0 - side * prm.limit_offset_bps * 1e-4)
                pend.limit_price[s] = round_price_nb(raw, spec.tick[s], -side)
            else:
                pend.limit_price[s] = np.nan
        else:
            pend.active[s] = False


@kernel(inline=True)
def bar_step_nb(  # type: ignore[no-untyped-def]
    acct,
    pend,
    brk,
    spec,
    prm,
    recs,
    bar,
    time_ms,
    o,
    h,
    lo,
    c,
    funding_row,
    mark_row,
    direction,
    prob,
    payoff,
    atr,
    target_out,
    reason_out,
):
    """Process one bar (all five phases) for every symbol; return the equity at its close.

    Row arguments are 1-D over symbols; ``mark_row``, ``prob``, ``payoff``, ``atr`` may be
    empty. ``time_ms`` is the bar's open time (ms) or -1 when unknown (the daily-loss rule
    of the breaker is then off).
    """
    funding_phase_nb(acct, prm, recs, bar, o, funding_row, mark_row)
    open_phase_nb(acct, pend, spec, prm, recs, bar, o, h, lo)
    exit_phase_nb(acct, spec, prm, recs, bar, o, h, lo)
    equity = close_phase_nb(acct, c)
    decide_phase_nb(
        acct,
        pend,
        brk,
        spec,
        prm,
        recs,
        bar,
        time_ms,
        equity,
        c,
        direction,
        prob,
        payoff,
        atr,
        target_out,
        reason_out,
    )
    return equity


def new_liq_memo(n_symbols: int) -> np.ndarray:
    """An empty liquidation-price memo for :func:`fold_step_nb`: one row per symbol
    (columns ``MEMO_*``), NaN: nothing remembered."""
    return np.full((n_symbols, 5), np.nan)


@kernel(inline=True)
def memo_liq_price_nb(acct, spec, margin_mode, s, memo):  # type: ignore[no-untyped-def]
    """:func:`engine.sim.steps.liquidation_price_of_nb`, remembered in ``memo[s]``.

    The price is a pure function of the position's quantity and entry price, its backing
    (:func:`engine.sim.steps.liq_backing_nb`), the margin mode and the symbol's brackets
    (fixed for a memo's life): when the first four equal the remembered ones (``==``; a
    NaN never matches) the remembered price is returned, else it is computed and kept.
    """
    q = acct.qty[s]
    if q == 0.0:
        return np.nan
    e = acct.entry_price[s]
    wb = liq_backing_nb(acct, spec, margin_mode, s)
    m = memo[s]
    if m[MEMO_QTY] == q and m[MEMO_ENTRY] == e and m[MEMO_BACKING] == wb:
        if m[MEMO_MODE] == margin_mode:
            return m[MEMO_LIQ]
    liq = liquidation_price_nb(
        q, e, wb, spec.br_floor[s], spec.br_cap[s], spec.br_mmr[s], spec.br_cum[s], spec.n_br[s]
    )
    m[MEMO_QTY] = q
    m[MEMO_ENTRY] = e
    m[MEMO_BACKING] = wb
    m[MEMO_MODE] = margin_mode
    m[MEMO_LIQ] = liq
    return liq


@kernel(inline=True)
def quiet_open_nb(acct, pend, spec, prm, o, h, lo, funding_row, memo):  # type: ignore[no-untyped-def]
    """Phases 1-3 of a quiet bar: True when every symbol has a bar, none pays funding
    (no rate at this bar, or flat) and none has a pending order, so that phases 1-2 only
    set each mark to the open (done here), and then no stop, target or liquidation
    triggers (phase 3 books nothing; each symbol is checked against the same state, the
    marks at the opens, as :func:`exit_phase_nb` checks it when nothing fires).

    False: not quiet, and nothing changed but (maybe) the marks set to the opens, which
    phase 2 of the full :func:`bar_step_nb` then sets again.
    """
    n = o.shape[0]
    for s in range(n):
        if np.isnan(o[s]) or pend.active[s]:
            return False
        if acct.qty[s] != 0.0 and not np.isnan(funding_row[s]):
            return False
    for s in range(n):
        acct.last_price[s] = o[s]
    for s in range(n):
        if exits_nb(acct, spec, prm, s, o[s], h[s], lo[s], memo):
            return False
    return True


@kernel(inline=True)
def exits_nb(acct, spec, prm, s, o, h, lo, memo):  # type: ignore[no-untyped-def]
    """Whether symbol ``s``'s position (none: False) hits its stop, target or liquidation
    price (:func:`memo_liq_price_nb`) in a bar of open ``o``, high ``h`` and low ``lo``."""
    q = acct.qty[s]
    if q == 0.0:
        return False
    liq = memo_liq_price_nb(acct, spec, prm.margin_mode, s, memo)
    kind, _ = exit_trigger_nb(q, o, h, lo, acct.stop[s], acct.target[s], liq)
    return kind >= 0


@kernel(inline=True)
def fold_step_nb(  # type: ignore[no-untyped-def]
    acct,
    pend,
    brk,
    spec,
    prm,
    recs,
    bar,
    time_ms,
    o,
    h,
    lo,
    c,
    funding_row,
    mark_row,
    direction,
    prob,
    payoff,
    atr,
    target_out,
    reason_out,
    memo,
):
    """:func:`bar_step_nb` with the quiet-bar fast path: a bar whose phases 1-3 only mark
    the opens (:func:`quiet_open_nb`) goes straight on to phases 4-5, any other bar
    through :func:`bar_step_nb`. ``memo``: a :func:`new_liq_memo` kept across the bars of
    one account. Same state and equity as :func:`bar_step_nb`, bit for bit."""
    if quiet_open_nb(acct, pend, spec, prm, o, h, lo, funding_row, memo):
        equity = close_phase_nb(acct, c)
        decide_phase_nb(
            acct, pend, brk, spec, prm, recs, bar, time_ms, equity, c, direction, prob, payoff,
            atr, target_out, reason_out,
        )  # fmt: skip
        return equity
    return bar_step_nb(
        acct, pend, brk, spec, prm, recs, bar, time_ms, o, h, lo, c, funding_row, mark_row,
        direction, prob, payoff, atr, target_out, reason_out,
    )  # fmt: skip


@kernel()
def close_all_nb(acct, pend, prm, recs, bar):  # type: ignore[no-untyped-def]
    """Close every open position at its ``last_price`` as a market order (kind END) and
    cancel pending orders; used at the end of a backtest when ``close_at_end``."""
    for s in range(acct.qty.shape[0]):
        pend.active[s] = False
        q = acct.qty[s]
        if q == 0.0:
            continue
        side = -1 if q > 0 else 1
        price = slipped_price_nb(side, acct.last_price[s], prm.slippage_bps)
        fee = fee_nb(q, price, prm.taker_fee)
        execute_fill_nb(
            acct, recs, bar, s, -q, price, fee, FillKind.END, OrderType.MARKET, prm.leverage
        )
