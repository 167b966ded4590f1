"""What happens to orders and the account as the market moves: resting limits fill, algo
orders trigger, positions liquidate, funding settles; every change is booked through the
kernels (:mod:`.accounting`), recorded in the income ledger and published as a user-data
event (``kind`` and payload; the server stamps and sends them, :mod:`.events`).

Algo (conditional) orders, as Binance runs them since 2025-12-09: when the traded price
reaches the trigger, the algo order goes NEW -> TRIGGERING -> TRIGGERED (a MARKET order is
placed: its own ``orderId``, ``actualOrderId`` of the algo order, a client id of its own)
-> FINISHED once that order is final. A reduce-only or close-position order with no position
to reduce is REJECTED at the trigger and places nothing (Binance checks margin and
reduce-only only when the trigger fires). Events, in order: ALGO_UPDATE TRIGGERING,
ALGO_UPDATE TRIGGERED, ORDER_TRADE_UPDATE NEW, TRADE_LITE, ORDER_TRADE_UPDATE TRADE,
ACCOUNT_UPDATE (ORDER), ALGO_UPDATE FINISHED.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Callable
from typing import Any

from engine.exchange_sim import accounting as A
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.order import NAN, Order
from engine.sim.enums import FillKind, OrderType

Sink = Callable[[str, dict[str, Any]], None]


def otype(type_: str) -> int:
    return {
        "MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT, "STOP_MARKET": OrderType.STOP_MARKET,
        "TAKE_PROFIT_MARKET": OrderType.TAKE_PROFIT_MARKET,
    }.get(type_, OrderType.LIQUIDATION)


def fill_kind(pos_qty: float, sgn: int) -> int:
    return FillKind.EXIT if pos_qty != 0 and (pos_qty > 0) != (sgn > 0) else FillKind.ENTRY


def fill_qty(o: Order, pos_qty: float) -> float:
    """Quantity an order fills now: reduce-only and closePosition orders shrink to the position."""
    qty = o.qty - o.executed
    against = pos_qty != 0 and (pos_qty > 0) != (o.sgn > 0)
    if o.close_position:
        return abs(pos_qty) if against else 0.0
    if o.reduce_only:
        return min(qty, abs(pos_qty)) if against else 0.0
    return qty


class Matching:
    """The market-driven half of :class:`engine.exchange_sim.exchange.Exchange`."""

    market: MarketData
    book: A.Book
    last: dict[str, float]
    orders: dict[int, Order]
    algo: dict[int, Order]
    open_plain: dict[int, Order]  # the resting ones of ``orders``, by order id
    open_algo: dict[int, Order]  # the NEW ones of ``algo``, by algo id
    sinks: list[Sink]
    slippage_bps: float
    next_funding: dict[str, int]
    pos_time: dict[str, int]
    update_time: int
    income: list[dict[str, Any]]
    _oid: itertools.count[int]
    _tran: itertools.count[int]

    @property
    def fills(self) -> list[dict[str, Any]]:
        """Every fill so far (records of the shared kernels, plus order and trade ids)."""
        return self.book.fills

    # ------------------------------------------------------------------ one sub-step
    def _match(self, s: str, so: float, sh: float, sl: float, sc: float, t: int) -> None:
        """Resting orders, then liquidation, against the prices traded in one sub-step."""
        self.book.set_last(s, so)
        for o in [o for o in self.open_plain.values() if o.symbol == s]:
            px = A.limit_fill_price(o.sgn, o.price, so, sh, sl)
            if not math.isnan(px):
                self._fill_resting(o, px, t)
        for a in [a for a in self.open_algo.values() if a.symbol == s]:
            px = A.trigger_price(a.sgn, a.type == "TAKE_PROFIT_MARKET", a.stop_price, so, sh, sl)
            if not math.isnan(px):
                self._trigger_algo(a, A.market_fill_price(a.sgn, px, self.slippage_bps), t)
        q = self.book.qty(s)
        if q != 0:
            px = A.liquidation_trigger(q, self.book.liquidation_price(s), so, sh, sl)
            if not math.isnan(px):
                self._liquidate(s, px, t)
        self.book.set_last(s, sc)

    def _fill_resting(self, o: Order, price: float, t: int) -> None:
        """A resting LIMIT order the market reached: a maker fill (or EXPIRED when a
        reduce-only one has nothing left to reduce)."""
        pos_qty = self.book.qty(o.symbol)
        qty = fill_qty(o, pos_qty)
        if qty <= 0:
            o.status = "EXPIRED"
            o.update_time = t
            self.open_plain.pop(o.order_id, None)
            self._user_order(o, "EXPIRED")
            return
        before = len(self.fills)
        self.book.fill(o.symbol, o.sgn * qty, price, maker=True, kind=fill_kind(pos_qty, o.sgn),
                       order_type=otype(o.type), t=t)
        if o.executed + qty >= o.qty - 1e-12 or o.reduce_only:
            self.open_plain.pop(o.order_id, None)
        self._after_fill(o, qty, price, maker=True, t=t, first=before)

    # ------------------------------------------------------------------ algo orders
    def _set_algo(self, a: Order, status: str, t: int) -> None:
        a.algo_status = status
        a.update_time = t
        if not a.is_open and a.algo_id is not None:
            self.open_algo.pop(a.algo_id, None)
        self._publish("algo", {"order": a, "t": t})

    def _trigger_algo(self, a: Order, price: float, t: int) -> None:
        """An algo order whose trigger the market reached, at fill ``price`` (slipped)."""
        a.trigger_time = t
        self._set_algo(a, "TRIGGERING", t)
        s = a.symbol
        pos_qty = self.book.qty(s)
        reduce = a.reduce_only or a.close_position
        qty = fill_qty(a, pos_qty)
        if qty <= 0:
            self._set_algo(a, "REJECTED", t)  # reduce-only with nothing to reduce
            return
        child = Order(
            order_id=next(self._oid), client_id="algo" + secrets.token_hex(9), symbol=s,
            side=a.side, position_side=a.position_side, type="MARKET", tif="GTC", qty=qty,
            price=NAN, stop_price=NAN, reduce_only=reduce, close_position=False,
            working_type=a.working_type, time=t, update_time=t, parent_algo=a.algo_id,
        )
        kind = fill_kind(pos_qty, a.sgn)
        if kind == FillKind.EXIT:
            kind = FillKind.TARGET if a.type == "TAKE_PROFIT_MARKET" else FillKind.STOP
        before = len(self.fills)
        if reduce:
            self.book.fill(s, a.sgn * qty, price, maker=False, kind=kind, order_type=otype(a.type), t=t)
        elif self.book.place_market(s, a.sgn * qty, price, kind=kind, order_type=otype(a.type), t=t):
            self._set_algo(a, "REJECTED", t)  # margin or filters refused the order
            return
        a.actual_order_id = child.order_id
        self._set_algo(a, "TRIGGERED", t)
        self.orders[child.order_id] = child
        self._user_order(child, "NEW")
        self._after_fill(child, qty, price, maker=False, t=t, first=before)
        a.executed, a.cum_quote = child.executed, child.cum_quote
        self._set_algo(a, "FINISHED", t)

    # ------------------------------------------------------------------ books
    def _record(self, o: Order, first: int, t: int, *, maker: bool) -> tuple[float, float]:
        """Book the fills from ``first`` on as ``o``'s; return their (fee, realized)."""
        fee = realized = 0.0
        for n in range(first, len(self.fills)):
            f_fee, f_realized = self._record_fill(o, n, t, maker=maker)
            fee += f_fee
            realized += f_realized
        return fee, realized

    def _record_fill(self, o: Order, n: int, t: int, *, maker: bool) -> tuple[float, float]:
        """Fill ``n`` is ``o``'s: its order and trade id (``n + 1``), its income rows."""
        f = self.fills[n]
        f.update(order_id=o.order_id, client_id=o.client_id, type=o.type, time=t, trade_id=n + 1,
                 maker=maker)
        fee, realized = float(f["fee"]), float(f["realized"])
        if realized != 0.0:
            self._income(o.symbol, "REALIZED_PNL", realized, t, trade_id=n + 1)
        self._income(o.symbol, "COMMISSION", -fee, t, trade_id=n + 1)
        o.last_trade_id = n + 1
        return fee, realized

    def _income(self, s: str, kind: str, amount: float, t: int, *, trade_id: int | None = None) -> None:
        self.income.append({
            "symbol": s, "incomeType": kind, "income": amount, "time": t, "tranId": next(self._tran),
            "tradeId": "" if trade_id is None else str(trade_id),
        })

    def _after_fill(self, o: Order, qty: float, price: float, *, maker: bool, t: int, first: int) -> None:
        fee, realized = self._record(o, first, t, maker=maker)
        o.executed += qty
        o.cum_quote += qty * price
        done = o.executed >= o.qty - 1e-12 or o.close_position or o.reduce_only
        o.status = "FILLED" if done else "PARTIALLY_FILLED"
        o.update_time = t
        o.last_fill_qty, o.last_fill_price, o.last_fee, o.last_realized, o.maker = qty, price, fee, realized, maker
        self.pos_time[o.symbol] = t
        self.update_time = t
        self._publish("trade", {"order": o, "t": t})
        self._user_order(o, "TRADE")
        self._user_account("ORDER", o.symbol, t)

    def _liquidate(self, s: str, price: float, t: int) -> None:
        before = len(self.fills)
        self.book.liquidate(s, price, t)
        for n in range(before, len(self.fills)):
            f = self.fills[n]
            sym = str(f["symbol"])
            child = Order(
                order_id=next(self._oid), client_id=f"autoclose-{t}", symbol=sym,
                side="BUY" if int(f["side"]) > 0 else "SELL", position_side="BOTH", type="LIQUIDATION",
                tif="IOC", qty=float(f["qty"]), price=float(f["price"]), stop_price=NAN, reduce_only=True,
                close_position=False, working_type="CONTRACT_PRICE", time=t, update_time=t, status="FILLED",
                executed=float(f["qty"]), cum_quote=float(f["qty"]) * float(f["price"]),
            )
            child.last_fill_qty, child.last_fill_price = child.qty, child.price
            child.last_fee, child.last_realized = float(f["fee"]), float(f["realized"])
            self._record_fill(child, n, t, maker=False)
            self.orders[child.order_id] = child
            self.pos_time[sym] = t
            self._publish("trade", {"order": child, "t": t})
            self._user_order(child, "TRADE")
            self._user_account("ORDER", sym, t)

    def _pay_funding(self, s: str, t: int) -> None:
        sb = self.market.bars[s]
        n = self.next_funding[s]
        while n < len(sb.funding_time) and int(sb.funding_time[n]) <= t:
            if self.book.qty(s) != 0:
                ft = int(sb.funding_time[n])
                self.book.pay_funding(s, float(sb.funding_rate[n]), self.last[s], ft)
                paid = float(self.book.funding[-1]["amount"])
                self._income(s, "FUNDING_FEE", -paid, ft)
                self.update_time = ft
                self._user_account("FUNDING_FEE", s, ft, balance_change=-paid)
            n += 1
        self.next_funding[s] = n

    # ------------------------------------------------------------------ user data
    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink(kind, payload)

    def _user_order(self, o: Order, exec_type: str) -> None:
        self._publish("order", {"order": o, "x": exec_type, "t": o.update_time})

    def _user_account(self, reason: str, s: str, t: int, *, balance_change: float = 0.0) -> None:
        self._publish("account", {"reason": reason, "symbol": s, "t": t, "bc": balance_change})
