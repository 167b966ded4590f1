"""The one place where the exchange simulator meets the backtest's accounting kernels.

Everything the simulator computes about money (filter rounding and checks, fill prices,
slippage, fees, position updates, unrealised PnL, funding, maintenance margin, liquidation
prices and intrabar triggers) goes through these wrappers onto :mod:`engine.sim.accounting`,
so the simulator and ``engine backtest`` agree to the last bit on the same bars.
"""

from __future__ import annotations

import math

import numpy as np

from engine.exchange_sim import errors as E
from engine.sim import accounting as K
from engine.sim.enums import FillKind, OrderCheck
from engine.sim.specs import SymbolSpec

NAN = float("nan")


def check_filters(spec: SymbolSpec, *, qty: float, price: float, value_price: float, reduce_only: bool, market: bool) -> None:
    """Binance's filter checks on a new order; raise the error Binance answers.

    ``price`` is the limit price (NaN for market-type orders), ``value_price`` the price the
    notional is valued at (limit price, trigger price or last price).
    """
    if qty <= 0:
        raise E.qty_le_zero()
    if not math.isnan(price):
        if price <= 0:
            raise E.price_le_zero()
        if abs(K.round_price_nb(price, spec.tick_size, 0) - price) > 1e-9 * max(1.0, price):
            raise E.price_not_tick()
        if price < spec.min_price or price > spec.max_price:
            raise E.BinanceError(-4016, f"Limit price can't be higher than {spec.max_price}.")
    max_qty = spec.market_max_qty if market else spec.max_qty
    code = K.check_order_nb(qty, value_price, spec.step_size, spec.min_qty, max_qty, spec.min_notional, reduce_only)
    if code == OrderCheck.STEP:
        raise E.qty_not_step()
    if code == OrderCheck.MIN_QTY:
        raise E.qty_below_min()
    if code == OrderCheck.MAX_QTY:
        raise E.qty_above_max()
    if code == OrderCheck.MIN_NOTIONAL:
        raise E.min_notional(_fmt_plain(spec.min_notional))


def _fmt_plain(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".")


def market_fill_price(side: int, price: float, slippage_bps: float) -> float:
    """Price of a market (or triggered market) fill: ``price`` moved against the trader."""
    return float(K.slipped_price_nb(side, price, slippage_bps))


def limit_fill_price(side: int, limit_price: float, o: float, h: float, low: float) -> float:
    """Fill price of a resting limit over a price segment, NaN when untouched."""
    return float(K.limit_fill_price_nb(side, limit_price, o, h, low))


def trigger_price(side: int, is_take_profit: bool, trigger: float, o: float, h: float, low: float) -> float:
    """Price at which a STOP_MARKET / TAKE_PROFIT_MARKET order of ``side`` triggers over a
    segment, NaN when it does not.

    Uses the backtest's intrabar rule (:func:`engine.sim.accounting.exit_trigger_nb`): a sell
    order protects a long (``qty > 0``), a buy order a short; a level the segment opens
    beyond triggers at the open.
    """
    held = -float(side)  # the position such an order closes
    stop = NAN if is_take_profit else trigger
    target = trigger if is_take_profit else NAN
    kind, price = K.exit_trigger_nb(held, o, h, low, stop, target, NAN)
    if kind == FillKind.STOP or kind == FillKind.TARGET:
        return float(price)
    return NAN


def liquidation_trigger(qty: float, liq: float, o: float, h: float, low: float) -> float:
    """Price at which a position is liquidated over a segment, NaN when it is not."""
    kind, price = K.exit_trigger_nb(qty, o, h, low, NAN, NAN, liq)
    return float(price) if kind == FillKind.LIQUIDATION else NAN


def fee(qty: float, price: float, rate: float) -> float:
    return float(K.fee_nb(qty, price, rate))


def apply_fill(pos_qty: float, entry: float, fill_qty: float, price: float) -> tuple[float, float, float, float]:
    """(new_qty, new_entry, realized_pnl, closed_qty) after a signed fill."""
    q, e, r, c = K.apply_fill_nb(pos_qty, entry, fill_qty, price)
    return float(q), float(e), float(r), float(c)


def unrealized(qty: float, entry: float, mark: float) -> float:
    return float(K.unrealized_pnl_nb(qty, entry, mark))


def funding_paid(qty: float, mark: float, rate: float) -> float:
    """Funding the holder pays (negative: receives)."""
    return float(K.funding_payment_nb(qty, mark, rate))


def maint_margin(spec: SymbolSpec, notional: float) -> float:
    return float(K.maint_margin_nb(notional, spec.bracket_cap, spec.bracket_mmr, spec.bracket_cum, len(spec.bracket_cap)))


def max_notional(spec: SymbolSpec, leverage: float) -> float:
    return float(K.max_notional_nb(float(leverage), spec.bracket_cap, spec.bracket_leverage, len(spec.bracket_cap)))


def liquidation_price(spec: SymbolSpec, qty: float, entry: float, wallet: float) -> float:
    """Binance's liquidation price for ``qty`` backed by ``wallet`` (NaN when flat)."""
    return float(
        K.liquidation_price_nb(
            qty, entry, wallet, spec.bracket_floor, spec.bracket_cap, spec.bracket_mmr, spec.bracket_cum,
            len(spec.bracket_cap),
        )
    )


def round_price(price: float, tick: float, mode: int = 0) -> float:
    return float(K.round_price_nb(price, tick, mode))


def floor_qty(qty: float, step: float) -> float:
    return float(K.floor_qty_nb(qty, step))


def warm_up() -> None:
    """Compile (or load from cache) every kernel once, so the first order is not slow."""
    caps = np.array([1e9])
    K.round_price_nb(1.0, 0.1, 0)
    K.floor_qty_nb(1.0, 0.001)
    K.check_order_nb(1.0, 1.0, 0.001, 0.001, 10.0, 5.0, False)
    K.slipped_price_nb(1, 1.0, 0.0)
    K.limit_fill_price_nb(1, 1.0, 1.0, 1.0, 1.0)
    K.fee_nb(1.0, 1.0, 0.0)
    K.apply_fill_nb(0.0, 0.0, 1.0, 1.0)
    K.unrealized_pnl_nb(1.0, 1.0, 1.0)
    K.funding_payment_nb(1.0, 1.0, 0.0)
    K.maint_margin_nb(1.0, caps, np.array([0.01]), np.array([0.0]), 1)
    K.max_notional_nb(1.0, caps, np.array([10.0]), 1)
    K.liquidation_price_nb(1.0, 1.0, 1.0, np.array([0.0]), caps, np.array([0.01]), np.array([0.0]), 1)
    K.exit_trigger_nb(1.0, 1.0, 1.0, 1.0, NAN, NAN, NAN)
