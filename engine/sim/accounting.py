"""Pure per-order and per-position arithmetic of a Binance USD-M account (numba).

Every function here takes and returns scalars or reads read-only arrays; none keeps state.
They are the building blocks of :mod:`engine.sim.steps` and are meant to be called directly
by the exchange simulator. Oracles are the formulas on Binance's help pages ("How to
calculate liquidation price", "Leverage and margin of USDS-M futures", "Funding rate") and
hand-computed cases in ``tests/sim``.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel
from engine.sim.enums import FillKind, OrderCheck

_EPS = 1e-9


@kernel
def round_price_nb(price: float, tick: float, mode: int) -> float:
    """Round ``price`` to a multiple of ``tick``: mode -1 down, 0 nearest, +1 up.

    Oracle: ``float(Decimal(str(price)).quantize(Decimal(str(tick)), ROUND_FLOOR /
    ROUND_HALF_UP / ROUND_CEILING))`` for positive prices with at most ~12 significant
    digits (1e-9 of a tick plus a relative 1e-12 absorb binary noise such as
    0.15 / 0.1 = 1.4999... or 4290394.1 / 0.1 = 42903940.99999999).
    """
    x = price / tick
    eps = _EPS + abs(x) * 1e-12
    if mode < 0:
        k = np.floor(x + eps)
    elif mode > 0:
        k = np.ceil(x - eps)
    else:
        k = np.floor(x + 0.5 + eps)
    digits = int(round(-np.log10(tick))) + 1 if tick < 1.0 else 0
    return np.round(k * tick, max(digits, 0) + 2)


@kernel
def floor_qty_nb(qty: float, step: float) -> float:
    """Floor ``|qty|`` to a multiple of ``step`` keeping the sign (orders never round up).

    A relative epsilon absorbs binary noise (0.003 / 0.001 = 2.9999999999999996 -> 3 steps).
    """
    sign = 1.0 if qty >= 0 else -1.0
    x = abs(qty) / step
    k = np.floor(x + _EPS + x * 1e-12)
    digits = int(round(-np.log10(step))) + 2 if step < 1.0 else 2
    return sign * np.round(k * step, digits)


@kernel
def check_order_nb(
    qty: float,
    price: float,
    step: float,
    min_qty: float,
    max_qty: float,
    min_notional: float,
    reduce_only: bool,
) -> int:
    """Check an order against LOT_SIZE and MIN_NOTIONAL; return an :data:`OrderCheck` code.

    ``qty`` is the absolute order quantity, ``price`` the price the notional is valued at
    (the limit price, or the last price for a market order). Reduce-only orders are exempt
    from MIN_NOTIONAL, as on Binance.
    """
    q = abs(qty)
    k = q / step
    if abs(k - np.round(k)) > max(1e-6, abs(k) * 1e-9):
        return OrderCheck.STEP
    if q < min_qty - _EPS * step:
        return OrderCheck.MIN_QTY
    if q > max_qty + _EPS * step:
        return OrderCheck.MAX_QTY
    if not reduce_only and q * price < min_notional - 1e-9:
        return OrderCheck.MIN_NOTIONAL
    return OrderCheck.OK


@kernel
def slipped_price_nb(side: int, price: float, slippage_bps: float) -> float:
    """Price of a market fill: ``price`` moved ``slippage_bps`` against the trader.

    A buy (side +1) pays ``price * (1 + bps/1e4)``, a sell receives ``price * (1 - bps/1e4)``.
    """
    return price * (1.0 + side * slippage_bps * 1e-4)


@kernel
def limit_fill_price_nb(
    side: int, limit_price: float, open_: float, high: float, low: float
) -> float:
    """Fill price of a resting limit order over one bar, or NaN when the bar does not touch it.

    A buy limit fills when ``low <= limit``; at the open if the bar opened below the limit
    (a better price), otherwise at the limit. A sell limit mirrors this with the high.
    """
    if side > 0:
        if low <= limit_price:
            return min(open_, limit_price)
        return np.nan
    if high >= limit_price:
        return max(open_, limit_price)
    return np.nan


@kernel
def fee_nb(qty: float, price: float, rate: float) -> float:
    """Commission in USDT: ``|qty| * price * rate``."""
    return abs(qty) * price * rate


@kernel
def apply_fill_nb(
    pos_qty: float, entry_price: float, fill_qty: float, price: float
) -> tuple[float, float, float, float]:
    """Update a one-way position with a signed fill.

    Returns ``(new_qty, new_entry_price, realized_pnl, closed_qty)``: an increase averages
    the entry price, a reduction realises ``closed * (price - entry) * sign(pos)``, a fill
    larger than the position flips it and the remainder opens at ``price``.
    """
    if pos_qty == 0.0 or (pos_qty > 0) == (fill_qty > 0):
        new_qty = pos_qty + fill_qty
        new_entry = (abs(pos_qty) * entry_price + abs(fill_qty) * price) / abs(new_qty)
        return new_qty, new_entry, 0.0, 0.0
    sign = 1.0 if pos_qty > 0 else -1.0
    closed = min(abs(fill_qty), abs(pos_qty))
    realized = closed * (price - entry_price) * sign
    new_qty = pos_qty + fill_qty
    if abs(new_qty) < 1e-12:
        return 0.0, 0.0, realized, closed
    if (new_qty > 0) == (pos_qty > 0):
        return new_qty, entry_price, realized, closed
    return new_qty, price, realized, closed


@kernel
def order_legs_nb(pos_qty: float, target: float) -> tuple[float, float]:
    """Split the move from ``pos_qty`` to ``target`` into ``(exit_qty, entry_qty)``.

    The exit leg closes or reduces the position (a market order, reduce-only); the entry leg
    opens or increases it, from the position the exit leg leaves: ``pos_qty + exit_qty``
    with :func:`apply_fill_nb`'s rule that less than 1e-12 is flat. A flip is both legs; a
    move with nothing to close has an exit leg of 0. The simulator's fill phase and live
    mode's order manager both split a target here.
    """
    if pos_qty != 0.0 and (target == 0.0 or (target > 0) != (pos_qty > 0)):
        exit_qty = -pos_qty
    elif pos_qty != 0.0 and abs(target) < abs(pos_qty):
        exit_qty = target - pos_qty
    else:
        exit_qty = 0.0
    after = pos_qty + exit_qty
    if abs(after) < 1e-12:
        after = 0.0
    return exit_qty, target - after


@kernel
def unrealized_pnl_nb(qty: float, entry_price: float, mark: float) -> float:
    """Unrealised PnL of a position marked at ``mark``: ``qty * (mark - entry)``."""
    if qty == 0.0:
        return 0.0
    return qty * (mark - entry_price)


@kernel
def funding_payment_nb(qty: float, mark: float, rate: float) -> float:
    """Funding the position holder PAYS: ``qty * mark * rate``.

    Positive for a long when the rate is positive (longs pay shorts); negative (received)
    for a short then. Oracle: Binance "Introduction to funding rates".
    """
    return qty * mark * rate


@kernel
def bracket_index_nb(notional: float, caps: np.ndarray, n: int) -> int:
    """Index of the leverage bracket holding ``|notional|`` (the last one beyond all caps)."""
    x = abs(notional)
    for i in range(n):
        if x < caps[i]:
            return i
    return n - 1


@kernel
def maint_margin_nb(
    notional: float, caps: np.ndarray, mmrs: np.ndarray, cums: np.ndarray, n: int
) -> float:
    """Maintenance margin: ``|notional| * mmr[b] - cum[b]`` for the bracket b of the notional."""
    i = bracket_index_nb(notional, caps, n)
    return abs(notional) * mmrs[i] - cums[i]


@kernel
def max_notional_nb(leverage: float, caps: np.ndarray, levs: np.ndarray, n: int) -> float:
    """Largest notional allowed at ``leverage``: the cap of the last bracket whose
    initialLeverage is at least ``leverage`` (0 when the leverage is above every bracket's)."""
    best = 0.0
    for i in range(n):
        if levs[i] >= leverage and caps[i] > best:
            best = caps[i]
    return best


@kernel(inline=True)
def _not_positive_nb(num: float, denom: float) -> bool:
    """``num / denom <= 0`` (or -0.0) from the signs alone: a nonzero finite ``denom`` and
    ``num`` of the other sign or zero (False when unsure: zero or NaN ``denom``, NaN ``num``)."""
    return (num >= 0.0 and denom < 0.0) or (num <= 0.0 and denom > 0.0)


@kernel
def liquidation_price_nb(
    qty: float,
    entry_price: float,
    wallet_balance: float,
    floors: np.ndarray,
    caps: np.ndarray,
    mmrs: np.ndarray,
    cums: np.ndarray,
    n: int,
) -> float:
    """Binance's one-way liquidation price.

    ``LP = (WB + cum_b - side*Q*E) / (Q*mmr_b - side*Q)`` with ``Q = |qty|``, ``side = +1``
    long / ``-1`` short, ``WB`` the wallet balance backing the position (isolated: the
    isolated margin; cross: wallet - other positions' maintenance margin + their
    unrealised PnL), and ``b`` the bracket whose range holds ``LP * Q``. At ``LP`` the
    position's margin plus unrealised PnL equals its maintenance margin.

    Returns 0.0 for a long that cannot be liquidated (LP <= 0) and NaN for no position.
    Oracle: Binance "How to calculate liquidation price of USDS-M contracts".
    """
    if qty == 0.0:
        return np.nan
    q = abs(qty)
    side = 1.0 if qty > 0 else -1.0
    fallback = np.nan
    for i in range(n):
        denom = q * mmrs[i] - side * q
        num = wallet_balance + cums[i] - side * q * entry_price
        if i > 0 and floors[i] - 1e-9 > 0.0 and _not_positive_nb(num, denom):
            continue  # lp <= 0: below this bracket's floor, known without the division
        lp = num / denom
        if i == 0:
            fallback = lp
        notional = lp * q
        if notional >= floors[i] - 1e-9 and notional <= caps[i] + 1e-9:
            return max(lp, 0.0)
    return max(fallback, 0.0)


@kernel
def stop_target_prices_nb(
    side: int,
    entry_price: float,
    stop_pct: float,
    target_pct: float,
    stop_atr: float,
    target_atr: float,
    atr: float,
    tick: float,
) -> tuple[float, float]:
    """Stop-loss and take-profit trigger prices for a position on ``side`` (+1 long, -1 short).

    Percent distances (``stop_pct=2`` means 2 %) or ATR multiples (``stop_atr * atr``, with
    the ATR of the decision bar); a value that is NaN or <= 0 disables that level. Prices are
    rounded to the nearest tick. Returns NaN for a disabled level.
    """
    stop = np.nan
    target = np.nan
    if stop_pct > 0:
        stop = entry_price * (1.0 - side * stop_pct * 0.01)
    elif stop_atr > 0 and atr > 0:
        stop = entry_price - side * stop_atr * atr
    if target_pct > 0:
        target = entry_price * (1.0 + side * target_pct * 0.01)
    elif target_atr > 0 and atr > 0:
        target = entry_price + side * target_atr * atr
    if not np.isnan(stop):
        stop = round_price_nb(stop, tick, 0)
        if stop <= 0:
            stop = np.nan
    if not np.isnan(target):
        target = round_price_nb(target, tick, 0)
        if target <= 0:
            target = np.nan
    return stop, target


@kernel
def exit_trigger_nb(
    qty: float,
    open_: float,
    high: float,
    low: float,
    stop: float,
    target: float,
    liq: float,
) -> tuple[int, float]:
    """Which exit, if any, a bar triggers for a position, and at what price.

    Returns ``(kind, price)``: kind -1 for none, else FillKind.STOP, .TARGET or
    .LIQUIDATION. Intrabar order (pessimistic, documented in architecture.md):
    the adverse levels come first: between the stop and the liquidation price, whichever
    lies nearer the open on the losing side is hit first; the take-profit is checked only
    if neither adverse level was touched, so when a bar touches both the stop and the
    target, the stop fills. A level the bar OPENS beyond fills at the open (a gap).
    """
    if qty == 0.0:
        return -1, np.nan
    if qty > 0:
        has_stop = not np.isnan(stop)
        has_liq = not np.isnan(liq) and liq > 0
        # nearest adverse level below the open
        if has_stop and has_liq:
            stop_first = stop >= liq
        else:
            stop_first = has_stop
        if has_stop and stop_first and low <= stop:
            return FillKind.STOP, min(open_, stop)
        if has_liq and low <= liq:
            return FillKind.LIQUIDATION, min(open_, liq)
        if has_stop and low <= stop:
            return FillKind.STOP, min(open_, stop)
        if not np.isnan(target) and high >= target:
            return FillKind.TARGET, max(open_, target)
        return -1, np.nan
    has_stop = not np.isnan(stop)
    has_liq = not np.isnan(liq)
    if has_stop and has_liq:
        stop_first = stop <= liq
    else:
        stop_first = has_stop
    if has_stop and stop_first and high >= stop:
        return FillKind.STOP, max(open_, stop)
    if has_liq and high >= liq:
        return FillKind.LIQUIDATION, max(open_, liq)
    if has_stop and high >= stop:
        return FillKind.STOP, max(open_, stop)
    if not np.isnan(target) and low <= target:
        return FillKind.TARGET, min(open_, target)
    return -1, np.nan


@kernel(inline=True)
def exit_levels_nb(qty: float, stop: float, target: float, liq: float) -> tuple[float, float]:
    """The levels behind :func:`exit_trigger_nb`'s decision to exit: ``(low, high)`` such
    that a bar of low ``lo`` and high ``hi`` triggers an exit (kind >= 0) exactly when
    ``lo <= low or hi >= high``, whatever its open; ``(-inf, inf)`` when flat.

    A long exits on the higher of its stop and liquidation price (a liquidation price above
    0) from below and on its target from above; a short on the lower of its stop and
    liquidation price from above and on its target from below. A NaN level is absent. A
    steady run (:mod:`engine.sim.fold`) asks this once for the run and compares each bar's
    low and high with the two levels.

    Oracle: :func:`exit_trigger_nb` (``tests/sim/test_accounting.py``, random levels and
    bars, NaN and infinite values included).
    """
    if qty == 0.0:
        return -np.inf, np.inf
    if qty > 0:
        low = -np.inf
        if not np.isnan(stop):
            low = stop
        if not np.isnan(liq) and liq > 0 and liq > low:
            low = liq
        return low, (np.inf if np.isnan(target) else target)
    high = np.inf
    if not np.isnan(stop):
        high = stop
    if not np.isnan(liq) and liq < high:
        high = liq
    return (-np.inf if np.isnan(target) else target), high
