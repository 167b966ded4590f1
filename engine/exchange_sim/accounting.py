"""The one place where the exchange simulator meets the backtest's accounting kernels.

Everything the simulator computes about money (filter rounding and checks, fill prices,
slippage, fees, position updates, unrealised PnL, funding, maintenance margin, liquidation
prices and intrabar triggers) goes through these wrappers onto :mod:`engine.sim.accounting`,
so the simulator and ``engine backtest`` agree to the last bit on the same bars.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import ValidationError

from engine.exchange_sim import errors as E
from engine.sim import accounting as K
from engine.sim import steps as ST
from engine.sim.config import SimConfig
from engine.sim.enums import FillKind, MarginMode, OrderCheck
from engine.sim.settings import ExecutionSettings, settings_error
from engine.sim.specs import SymbolSpec, load_specs, spec_arrays
from engine.sim.state import new_account, new_records

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
        if price < spec.min_price:
            raise E.BinanceError(-4013, "Price less than min price.")
        if price > spec.max_price:
            raise E.BinanceError(-4002, "Price greater than max price.")
    max_qty = spec.market_max_qty if market else spec.max_qty
    code = K.check_order_nb(qty, value_price, spec.step_size, spec.min_qty, max_qty, spec.min_notional, reduce_only)
    raise_check(int(code), spec)


INSUFFICIENT_MARGIN = int(ST.INSUFFICIENT_MARGIN)


def raise_check(code: int, spec: SymbolSpec) -> None:
    """Raise the Binance error of an :data:`OrderCheck` code from the kernels."""
    if code == OrderCheck.STEP:
        raise E.qty_not_step()
    if code == OrderCheck.MIN_QTY:
        raise E.qty_below_min()
    if code == OrderCheck.MAX_QTY:
        raise E.qty_above_max()
    if code == OrderCheck.MIN_NOTIONAL:
        raise E.min_notional(_fmt_plain(spec.min_notional))
    if code == OrderCheck.TICK:
        raise E.price_not_tick()
    if code == INSUFFICIENT_MARGIN:
        raise E.margin_insufficient()
    if code != OrderCheck.OK:
        raise E.unknown(f"order check failed with code {code}")


def fee_of(qty: float, price: float, rate: float) -> float:
    return float(K.fee_nb(qty, price, rate))


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


class Book:
    """The account, held in :class:`engine.sim.state.Account` and moved only by the step
    kernels of :mod:`engine.sim.steps` (the backtest's own), one symbol column per symbol.

    Binance sets leverage and margin type per symbol; the kernels take them from a
    :class:`~engine.sim.config.SimParams`, so each call gets the params of the symbol it
    touches. (The kernels value the whole account in that symbol's margin mode, which is
    exact when every symbol uses the same mode, as the engine's strategies do.)
    """

    def __init__(
        self,
        specs: list[SymbolSpec],
        *,
        cash: float,
        taker_fee: float,
        maker_fee: float,
        slippage_bps: float,
        leverage: int,
    ) -> None:
        self.symbols = [sp.symbol for sp in specs]
        self.col = {sp.symbol: i for i, sp in enumerate(specs)}
        self.specs = {sp.symbol: sp for sp in specs}
        self.arr = spec_arrays(specs)
        n = len(specs)
        self.acct = new_account(n, cash=cash)
        self.recs = new_records(fills=16, trades=16, funding=16, events=4)
        # the exchange's fees and slippage, checked against the simulator's own ranges; leverage
        # and margin type are per symbol (see prm)
        try:
            execution = ExecutionSettings(
                initial_cash=cash, margin_mode="cross", taker_fee=taker_fee, maker_fee=maker_fee, slippage_bps=slippage_bps
            )
        except ValidationError as err:
            raise settings_error(err, where="exchange simulator") from None
        self._base = SimConfig(execution=execution).to_params()
        self.leverage = {s: int(leverage) for s in self.symbols}
        self.isolated = {s: False for s in self.symbols}
        self.fills: list[dict[str, Any]] = []
        self.funding: list[dict[str, Any]] = []
        self.fees_paid = 0.0
        self.funding_paid = 0.0
        self.realized = 0.0

    # -------------------------------------------------------------- params and views
    def prm(self, s: str):  # type: ignore[no-untyped-def]
        return self._base._replace(
            leverage=float(self.leverage[s]), margin_mode=MarginMode.ISOLATED if self.isolated[s] else MarginMode.CROSS
        )

    @property
    def wallet(self) -> float:
        return float(self.acct.wallet[0])

    def qty(self, s: str) -> float:
        return float(self.acct.qty[self.col[s]])

    def entry(self, s: str) -> float:
        return float(self.acct.entry_price[self.col[s]])

    def margin(self, s: str) -> float:
        """Isolated margin (isolated mode) or initial margin at entry (cross)."""
        return float(self.acct.margin[self.col[s]])

    def last(self, s: str) -> float:
        return float(self.acct.last_price[self.col[s]])

    def set_last(self, s: str, price: float) -> None:
        self.acct.last_price[self.col[s]] = price

    def upnl(self, s: str) -> float:
        j = self.col[s]
        return float(K.unrealized_pnl_nb(self.acct.qty[j], self.acct.entry_price[j], self.acct.last_price[j]))

    def available(self, s: str) -> float:
        """Free balance for new margin (``engine.sim.steps.available_nb``)."""
        return float(ST.available_nb(self.acct, self.prm(s).margin_mode))

    def maint(self, s: str) -> float:
        return float(ST.maint_margin_of_nb(self.acct, self.arr, self.col[s]))

    def liquidation_price(self, s: str) -> float:
        return float(ST.liquidation_price_of_nb(self.acct, self.arr, self.prm(s).margin_mode, self.col[s]))

    def equity(self) -> float:
        return float(ST.equity_nb(self.acct))

    # -------------------------------------------------------------- moves
    def place_market(self, s: str, qty: float, price: float, *, kind: int, order_type: int, t: int) -> int:
        """Filter, margin-check and fill an immediate order (``place_order_nb``) at ``price``
        (already slipped) with the taker fee; return the OrderCheck code (OK: booked)."""
        code = ST.place_order_nb(
            self.acct, self.arr, self.prm(s), self.recs, t, self.col[s], qty, price, self._base.taker_fee,
            kind, order_type, True,
        )
        self._drain(t)
        return int(code)

    def fill(self, s: str, qty: float, price: float, *, maker: bool, kind: int, order_type: int, t: int) -> None:
        """Book a fill that was accepted earlier (resting limit, triggered stop)."""
        rate = self._base.maker_fee if maker else self._base.taker_fee
        f = K.fee_nb(qty, price, rate)
        ST.execute_fill_nb(self.acct, self.recs, t, self.col[s], qty, price, f, kind, order_type, float(self.leverage[s]))
        self._drain(t)

    def pay_funding(self, s: str, rate: float, mark: float, t: int) -> None:
        ST.funding_step_nb(self.acct, self.prm(s), self.recs, t, self.col[s], rate, mark)
        self._drain(t)

    def liquidate(self, s: str, price: float, t: int) -> None:
        ST.liquidate_nb(self.acct, self.arr, self.prm(s), self.recs, t, self.col[s], price)
        self._drain(t)

    def _drain(self, t: int) -> None:
        r = self.recs
        n = int(r.fills.n[0])
        for k in range(min(n, len(r.fills.bar))):
            fee_ = float(r.fills.fee[k])
            realized = float(r.fills.realized[k])
            self.fees_paid += fee_
            self.realized += realized
            self.fills.append(
                {
                    "time": int(r.fills.bar[k]), "symbol": self.symbols[int(r.fills.symbol[k])],
                    "side": int(r.fills.side[k]), "qty": float(r.fills.qty[k]), "price": float(r.fills.price[k]),
                    "fee": fee_, "realized": realized, "kind": int(r.fills.kind[k]),
                    "order_type": int(r.fills.order_type[k]),
                }
            )
        if n > len(r.fills.bar):
            raise RuntimeError("exchange simulator: fill buffer overflow in one step")
        r.fills.n[0] = 0
        nf = int(r.funding.n[0])
        for k in range(min(nf, len(r.funding.bar))):
            amount = float(r.funding.amount[k])
            self.funding_paid += amount
            self.funding.append(
                {
                    "time": int(r.funding.bar[k]), "symbol": self.symbols[int(r.funding.symbol[k])],
                    "qty": float(r.funding.qty[k]), "mark": float(r.funding.mark[k]),
                    "rate": float(r.funding.rate[k]), "amount": amount,
                }
            )
        r.funding.n[0] = 0
        r.trades.n[0] = 0
        r.events.n[0] = 0


def max_notional(spec: SymbolSpec, leverage: float) -> float:
    return float(K.max_notional_nb(float(leverage), spec.bracket_cap, spec.bracket_leverage, len(spec.bracket_cap)))


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
    book = Book(load_specs(["BTCUSDT"]), cash=1e6, taker_fee=0.0005, maker_fee=0.0002, slippage_bps=0.0, leverage=10)
    book.set_last("BTCUSDT", 30000.0)
    book.place_market("BTCUSDT", 0.01, 30000.0, kind=0, order_type=0, t=0)
    book.fill("BTCUSDT", 0.01, 30000.0, maker=True, kind=0, order_type=1, t=0)
    book.pay_funding("BTCUSDT", 0.0001, 30000.0, 0)
    book.available("BTCUSDT"), book.maint("BTCUSDT"), book.liquidation_price("BTCUSDT"), book.equity()
    book.liquidate("BTCUSDT", 30000.0, 0)
