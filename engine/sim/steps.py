"""Account-level step kernels: fills, funding, exits, liquidation, valuation (numba).

Each function updates an :class:`~engine.sim.state.Account` in place and appends to the
:class:`~engine.sim.state.Records` buffers. The batch loop (:mod:`engine.sim.loop`) and the
local exchange simulator call the same functions, so both books agree to the cent.

Arguments follow one order: ``acct, spec, prm, recs, bar, s, ...`` where ``spec`` is a
:class:`~engine.sim.specs.SpecArrays`, ``prm`` a :class:`~engine.sim.config.SimParams`,
``bar`` the bar index (or any integer clock the caller uses) and ``s`` the symbol column.

The kernels an order books through (:func:`place_order_nb`, :func:`affordable_qty_nb`,
:func:`execute_fill_nb`, :func:`record_fill_nb`, :func:`_close_trade_nb`, and
:mod:`engine.sim.loop`'s ``fill_pending_nb`` and ``_size_nb``) are inlined into their callers:
an out-of-line call that takes the state passes every array's pointer, shape and strides one
by one (~600 machine words, ~0.24 us), several times an order. Inlined, an order costs ~40%
less in ``simulate_nb`` and the fused sweep kernel ~15% less a bar-combination
(docs/architecture.md, "The order path inlined"), at ~15 s more of a cold compile.

Oracle: the hand-computed cases in ``tests/sim/test_accounting.py`` and
``tests/sim/test_simulate.py`` (Binance's formulas for fees, funding, margin and
liquidation price worked out on paper).
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel
from engine.sim.accounting import (
    apply_fill_nb,
    check_order_nb,
    exit_trigger_nb,
    fee_nb,
    floor_qty_nb,
    funding_payment_nb,
    liquidation_price_nb,
    maint_margin_nb,
    slipped_price_nb,
    unrealized_pnl_nb,
)
from engine.sim.enums import FillKind, MarginMode, OrderCheck, OrderType

INSUFFICIENT_MARGIN = 6  # order rejected: margin + fee exceed the available balance (-2019)


@kernel(inline=True)
def record_fill_nb(fills, bar, s, side, qty, price, fee, realized, kind, order_type):  # type: ignore[no-untyped-def]
    """Append one fill to ``fills`` (counts past capacity without writing)."""
    k = fills.n[0]
    if k < fills.bar.shape[0]:
        fills.bar[k] = bar
        fills.symbol[k] = s
        fills.side[k] = side
        fills.qty[k] = qty
        fills.price[k] = price
        fills.fee[k] = fee
        fills.realized[k] = realized
        fills.kind[k] = kind
        fills.order_type[k] = order_type
    fills.n[0] = k + 1


@kernel(inline=True)
def _close_trade_nb(acct, trades, s, bar, side, kind):  # type: ignore[no-untyped-def]
    k = trades.n[0]
    fees = acct.tr_fees[s]
    funding = acct.tr_funding[s]
    pnl = acct.tr_realized[s] - fees - funding
    if k < trades.symbol.shape[0]:
        trades.symbol[k] = s
        trades.side[k] = side
        trades.entry_bar[k] = acct.tr_entry_bar[s]
        trades.exit_bar[k] = bar
        trades.entry_price[k] = acct.tr_value_in[s] / acct.tr_qty_in[s]
        trades.exit_price[k] = acct.tr_value_out[s] / acct.tr_qty_out[s]
        trades.qty[k] = acct.tr_qty_in[s]
        trades.pnl[k] = pnl
        trades.fees[k] = fees
        trades.funding[k] = funding
        trades.exit_kind[k] = kind
    trades.n[0] = k + 1
    if pnl < 0.0:
        acct.loss_streak[0] += 1
    else:
        acct.loss_streak[0] = 0
    acct.tr_entry_bar[s] = -1


@kernel(inline=True)
def execute_fill_nb(acct, recs, bar, s, fill_qty, price, fee, kind, order_type, leverage):  # type: ignore[no-untyped-def]
    """Book a signed fill of ``fill_qty`` at ``price`` paying ``fee`` USDT; return the
    realised PnL.

    Handles open, increase, reduce, close and flip (one fill through zero closes the trade
    and opens a new one; the fee is split pro rata). Margin: an opening quantity adds
    ``qty * price / leverage``; a reduction releases margin pro rata to the closed
    quantity. The wallet moves by ``realised - fee``. A trade record is written when a
    position returns to zero (or flips).
    """
    if fill_qty == 0.0:
        return 0.0
    q = acct.qty[s]
    new_q, new_e, realized, closed = apply_fill_nb(q, acct.entry_price[s], fill_qty, price)
    opened = abs(fill_qty) - closed
    if opened < 1e-12:
        opened = 0.0
    fee_close = fee * closed / abs(fill_qty)
    fee_open = fee - fee_close
    side = 1 if fill_qty > 0 else -1
    acct.wallet[0] += realized - fee
    record_fill_nb(recs.fills, bar, s, side, abs(fill_qty), price, fee, realized, kind, order_type)
    if closed > 0.0:
        acct.tr_qty_out[s] += closed
        acct.tr_value_out[s] += closed * price
        acct.tr_realized[s] += realized
        acct.tr_fees[s] += fee_close
        if abs(q) - closed <= 1e-12:
            acct.margin[s] = 0.0
            acct.stop[s] = np.nan
            acct.target[s] = np.nan
            _close_trade_nb(acct, recs.trades, s, bar, 1 if q > 0 else -1, kind)
        else:
            acct.margin[s] *= 1.0 - closed / abs(q)
    if opened > 0.0:
        if acct.tr_entry_bar[s] < 0:
            acct.tr_entry_bar[s] = bar
            acct.tr_qty_in[s] = opened
            acct.tr_value_in[s] = opened * price
            acct.tr_qty_out[s] = 0.0
            acct.tr_value_out[s] = 0.0
            acct.tr_realized[s] = 0.0
            acct.tr_fees[s] = fee_open
            acct.tr_funding[s] = 0.0
        else:
            acct.tr_qty_in[s] += opened
            acct.tr_value_in[s] += opened * price
            acct.tr_fees[s] += fee_open
        acct.margin[s] += opened * price / leverage
    acct.qty[s] = new_q
    acct.entry_price[s] = new_e
    return realized


@kernel(inline=True)
def equity_nb(acct):  # type: ignore[no-untyped-def]
    """Wallet plus the unrealised PnL of every position at ``acct.last_price``."""
    return equity_at_nb(acct, acct.last_price)


@kernel(inline=True)
def equity_at_nb(acct, marks):  # type: ignore[no-untyped-def]
    """Wallet plus the unrealised PnL of every position at ``marks`` (one per symbol)."""
    eq = acct.wallet[0]
    for j in range(acct.qty.shape[0]):
        eq = plus_position_nb(eq, acct.qty[j], acct.entry_price[j], marks[j])
    return eq


@kernel(inline=True)
def plus_position_nb(eq, qty, entry_price, mark):  # type: ignore[no-untyped-def]
    """``eq`` plus the unrealised PnL of one position marked at ``mark`` (``eq`` itself when
    flat): :func:`equity_at_nb`'s term, which a one-symbol steady run adds to its wallet."""
    if qty != 0.0:
        eq += unrealized_pnl_nb(qty, entry_price, mark)
    return eq


@kernel(inline=True)
def available_nb(acct, margin_mode):  # type: ignore[no-untyped-def]
    """Balance free for new margin: wallet - used margin (+ unrealised PnL in cross)."""
    avail = acct.wallet[0]
    for j in range(acct.qty.shape[0]):
        avail -= acct.margin[j]
        if margin_mode == MarginMode.CROSS and acct.qty[j] != 0.0:
            avail += unrealized_pnl_nb(acct.qty[j], acct.entry_price[j], acct.last_price[j])
    return avail


@kernel(inline=True)
def maint_margin_of_nb(acct, spec, j):  # type: ignore[no-untyped-def]
    """Maintenance margin of symbol ``j``'s position at its ``last_price``."""
    if acct.qty[j] == 0.0:
        return 0.0
    notional = abs(acct.qty[j]) * acct.last_price[j]
    return maint_margin_nb(notional, spec.br_cap[j], spec.br_mmr[j], spec.br_cum[j], spec.n_br[j])


@kernel(inline=True)
def liq_backing_nb(acct, spec, margin_mode, s):  # type: ignore[no-untyped-def]
    """The wallet balance backing symbol ``s``'s position in its liquidation price:
    isolated, its isolated margin; cross, the wallet less the other positions'
    maintenance margin plus their unrealised PnL, all at ``last_price``."""
    if margin_mode == MarginMode.CROSS:
        wb = acct.wallet[0]
        for j in range(acct.qty.shape[0]):
            if j != s and acct.qty[j] != 0.0:
                wb += unrealized_pnl_nb(acct.qty[j], acct.entry_price[j], acct.last_price[j])
                wb -= maint_margin_of_nb(acct, spec, j)
        return wb
    return acct.margin[s]


@kernel(inline=True)
def liquidation_price_of_nb(acct, spec, margin_mode, s):  # type: ignore[no-untyped-def]
    """Liquidation price of symbol ``s``'s position (NaN when flat).

    Isolated: backed by its isolated margin. Cross: backed by the wallet less the other
    positions' maintenance margin plus their unrealised PnL, all at ``last_price``.
    """
    q = acct.qty[s]
    if q == 0.0:
        return np.nan
    return liquidation_price_nb(
        q,
        acct.entry_price[s],
        liq_backing_nb(acct, spec, margin_mode, s),
        spec.br_floor[s],
        spec.br_cap[s],
        spec.br_mmr[s],
        spec.br_cum[s],
        spec.n_br[s],
    )


@kernel()
def funding_step_nb(acct, prm, recs, bar, s, rate, mark):  # type: ignore[no-untyped-def]
    """Settle one funding payment for symbol ``s``; return the amount paid (negative:
    received). ``qty * mark * rate`` leaves the wallet (and, in isolated mode, the
    position's isolated margin) and is added to the open trade's funding."""
    q = acct.qty[s]
    if q == 0.0 or np.isnan(rate) or np.isnan(mark):
        return 0.0
    amount = funding_payment_nb(q, mark, rate)
    acct.wallet[0] -= amount
    if prm.margin_mode == MarginMode.ISOLATED:
        acct.margin[s] -= amount
    acct.tr_funding[s] += amount
    f = recs.funding
    k = f.n[0]
    if k < f.bar.shape[0]:
        f.bar[k] = bar
        f.symbol[k] = s
        f.qty[k] = q
        f.mark[k] = mark
        f.rate[k] = rate
        f.amount[k] = amount
    f.n[0] = k + 1
    return amount


@kernel()
def liquidate_nb(acct, spec, prm, recs, bar, s, price):  # type: ignore[no-untyped-def]
    """Close symbol ``s`` (and in cross mode every position) as the exchange's liquidation
    engine does.

    Symbol ``s`` closes at ``price`` (its liquidation price, or the open when the bar
    gapped through it), but never beyond the bankruptcy price, so an isolated position
    loses at most its margin and a cross account never goes below zero (the insurance
    fund takes the rest). In cross mode the other positions close first at their
    ``last_price``. The clearance fee is ``liquidationFee * notional`` of every closed
    position, capped by what margin remains; it is charged on ``s``'s fill.
    """
    q = acct.qty[s]
    if q == 0.0:
        return
    e = acct.entry_price[s]
    fee_cap = spec.liq_fee[s] * abs(q) * price
    if prm.margin_mode == MarginMode.CROSS:
        for j in range(acct.qty.shape[0]):
            qj = acct.qty[j]
            if j != s and qj != 0.0:
                pj = acct.last_price[j]
                fee_cap += spec.liq_fee[j] * abs(qj) * pj
                execute_fill_nb(
                    acct,
                    recs,
                    bar,
                    j,
                    -qj,
                    pj,
                    0.0,
                    FillKind.LIQUIDATION,
                    OrderType.LIQUIDATION,
                    prm.leverage,
                )
                acct.n_liquidations[0] += 1
        backing = acct.wallet[0]
    else:
        backing = acct.margin[s]
    bankrupt = e - backing / q  # price where backing + q * (p - e) = 0
    if q > 0:
        price = max(price, bankrupt)
    else:
        price = min(price, bankrupt)
    remaining = backing + q * (price - e)
    fee = min(max(remaining, 0.0), fee_cap)
    execute_fill_nb(
        acct,
        recs,
        bar,
        s,
        -q,
        price,
        fee,
        FillKind.LIQUIDATION,
        OrderType.LIQUIDATION,
        prm.leverage,
    )
    acct.n_liquidations[0] += 1


@kernel(inline=True)
def exit_step_nb(acct, spec, prm, recs, bar, s, open_, high, low):  # type: ignore[no-untyped-def]
    """Check symbol ``s``'s stop-loss, liquidation and take-profit against one bar and
    execute whichever fires first (see :func:`engine.sim.accounting.exit_trigger_nb`).

    Stops and targets fill as market orders (slippage against the trader, taker fee).
    Returns the :data:`FillKind` that fired, or -1.
    """
    q = acct.qty[s]
    if q == 0.0:
        return -1
    liq = liquidation_price_of_nb(acct, spec, prm.margin_mode, s)
    kind, price = exit_trigger_nb(q, open_, high, low, acct.stop[s], acct.target[s], liq)
    if kind < 0:
        return -1
    if kind == FillKind.LIQUIDATION:
        liquidate_nb(acct, spec, prm, recs, bar, s, price)
        return kind
    side = -1 if q > 0 else 1
    fill_price = slipped_price_nb(side, price, prm.slippage_bps)
    fee = fee_nb(q, fill_price, prm.taker_fee)
    otype = OrderType.STOP_MARKET if kind == FillKind.STOP else OrderType.TAKE_PROFIT_MARKET
    execute_fill_nb(acct, recs, bar, s, -q, fill_price, fee, kind, otype, prm.leverage)
    return kind


@kernel(inline=True)
def affordable_qty_nb(acct, prm, s, qty, price, fee_rate, step):  # type: ignore[no-untyped-def]
    """Largest quantity (<= ``|qty|``, floored to ``step``) whose opening margin plus fee
    fits in the available balance; keeps ``qty``'s sign."""
    avail = available_nb(acct, prm.margin_mode)
    per_unit = price * (1.0 / prm.leverage + max(fee_rate, 0.0))
    if avail <= 0.0:
        return 0.0
    most = floor_qty_nb(avail / per_unit, step)
    if abs(qty) <= most:
        return qty
    return most if qty > 0 else -most


@kernel(inline=True)
def place_order_nb(
    acct, spec, prm, recs, bar, s, qty, price, fee_rate, kind, order_type, is_market
):  # type: ignore[no-untyped-def]
    """Validate and fill one order of signed ``qty`` at ``price`` (already slipped / the
    limit fill price). Returns an :data:`OrderCheck` code, or :data:`INSUFFICIENT_MARGIN`;
    nothing is booked unless the result is ``OrderCheck.OK``.

    Filters: step, minQty, maxQty (MARKET_LOT_SIZE for market orders), MIN_NOTIONAL
    (waived for a pure reduction). Margin: the opening part's ``qty * price / leverage``
    plus the whole fee must fit in the available balance (after the closing part's margin
    is released).
    """
    q = acct.qty[s]
    max_qty = spec.market_max_qty[s] if is_market else spec.max_qty[s]
    reducing = q != 0.0 and (q > 0) != (qty > 0) and abs(qty) <= abs(q) + 1e-12
    code = check_order_nb(
        abs(qty), price, spec.step[s], spec.min_qty[s], max_qty, spec.min_notional[s], reducing
    )
    if code != OrderCheck.OK:
        return code
    if not reducing:
        if q != 0.0 and (q > 0) != (qty > 0):
            # a flip: the close leg releases its margin and realises its PnL first
            opening = abs(qty) - abs(q)
            released = acct.margin[s] + unrealized_pnl_nb(q, acct.entry_price[s], price)
            if prm.margin_mode == MarginMode.CROSS:
                released -= unrealized_pnl_nb(q, acct.entry_price[s], acct.last_price[s])
        else:
            opening = abs(qty)
            released = 0.0
        need = opening * price / prm.leverage + fee_nb(qty, price, fee_rate)
        if need > available_nb(acct, prm.margin_mode) + released + 1e-9:
            return INSUFFICIENT_MARGIN
    fee = fee_nb(qty, price, fee_rate)
    execute_fill_nb(acct, recs, bar, s, qty, price, fee, kind, order_type, prm.leverage)
    return OrderCheck.OK
