"""The simulated venue: replay position, account, orders, matching and accounting.

Single-threaded by design: the server calls it from its event loop only. :meth:`Exchange.catch_up`
plays every sub-step whose market time has come (see :mod:`engine.exchange_sim.market`); each
sub-step, per symbol, first matches the resting orders against the prices traded in it, then
checks liquidation, then publishes the kline and mark-price updates. When a bar closes the
next bar's open becomes the last price, and funding due at that time is paid at it.

Market orders fill at the last traded price moved by ``slippage_bps``: an order sent after a
bar's ``x: true`` frame fills at the next bar's open, as the backtest fills a decision made at
the close of bar t at the open of bar t+1. Money goes through :mod:`.accounting`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.exchange_sim import accounting as A
from engine.exchange_sim import errors as E
from engine.exchange_sim.market import MarketData
from engine.sim.enums import FillKind, OrderType
from engine.sim.specs import SymbolSpec

NAN = float("nan")
MARKET_TYPES = ("MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET")
CONDITIONAL = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    position_side: str
    type: str
    tif: str
    qty: float
    price: float  # NaN for market types
    stop_price: float  # NaN when none
    reduce_only: bool
    close_position: bool
    working_type: str
    time: int
    update_time: int
    status: str = "NEW"
    executed: float = 0.0
    cum_quote: float = 0.0
    algo_id: int | None = None  # set on orders placed through /fapi/v1/algoOrder
    algo_status: str = "NEW"  # NEW | TRIGGERED | FINISHED | CANCELED | EXPIRED
    actual_order_id: int | None = None  # the market order an algo order triggered
    price_protect: bool = False
    good_till: int = 0
    last_fill_qty: float = 0.0
    last_fill_price: float = 0.0
    last_fee: float = 0.0
    last_realized: float = 0.0
    maker: bool = False

    @property
    def sgn(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def avg_price(self) -> float:
        return self.cum_quote / self.executed if self.executed > 0 else 0.0

    @property
    def is_open(self) -> bool:
        if self.algo_id is not None:
            return self.algo_status == "NEW"
        return self.status in OPEN_STATUSES


Sink = Callable[[str, dict[str, Any]], None]


def _otype(type_: str) -> int:
    return {
        "MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT, "STOP_MARKET": OrderType.STOP_MARKET,
        "TAKE_PROFIT_MARKET": OrderType.TAKE_PROFIT_MARKET,
    }.get(type_, OrderType.LIQUIDATION)


class Exchange:
    """The venue state. All times are market-clock ms.

    Parameters
    ----------
    market:
        The replay data.
    specs:
        Trading rules per symbol (``engine.sim.specs.load_specs``).
    start_ms:
        Market time at which the replay starts (the clock's start).
    end_ms:
        Last market time (inclusive); defaults to the close of the last stored bar.
    balance:
        Starting USDT wallet.
    taker_fee, maker_fee:
        Commission rates (Binance's defaults 0.05 % and 0.02 %).
    slippage_bps:
        Adverse move of market fills, in basis points.
    default_leverage:
        Leverage of a symbol before ``POST /fapi/v1/leverage`` (Binance's default is 20).
    """

    def __init__(
        self,
        market: MarketData,
        specs: dict[str, SymbolSpec],
        *,
        start_ms: int,
        end_ms: int | None = None,
        balance: float = 10_000.0,
        taker_fee: float = 0.0005,
        maker_fee: float = 0.0002,
        slippage_bps: float = 0.0,
        default_leverage: int = 20,
    ) -> None:
        self.market = market
        self.specs = specs
        self.symbols = list(market.bars)
        for s in self.symbols:
            if s not in specs:
                raise E.bad_symbol()
        market.ticks.update({s: specs[s].tick_size for s in self.symbols})
        self.I = market.interval_ms
        self.K = market.substeps
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.slippage_bps = slippage_bps
        self.default_leverage = default_leverage
        self.T0 = (start_ms // self.I) * self.I
        last_open = max(int(sb.open_time[-1]) for sb in market.bars.values())
        if end_ms is not None:
            last_open = min(last_open, ((end_ms - self.I + 1) // self.I) * self.I if end_ms >= self.T0 + self.I - 1 else self.T0)
        self.n_bars = max(0, (last_open - self.T0) // self.I + 1)
        self.end_ms = self.T0 + self.n_bars * self.I
        grid = self.T0 + np.arange(self.n_bars, dtype=np.int64) * self.I
        self.rows: dict[str, np.ndarray] = {}
        for s, sb in market.bars.items():
            idx = np.searchsorted(sb.open_time, grid)
            ok = idx < len(sb.open_time)
            ok[ok] = sb.open_time[idx[ok]] == grid[ok]
            self.rows[s] = np.where(ok, idx, -1)
        # replay position: bar j has completed k sub-steps
        self.j = 0
        self.k = 0
        if start_ms > self.T0:
            self.k = min(self.K - 1, int((start_ms - self.T0) * self.K // self.I))
        self.last: dict[str, float] = {}
        for s in self.symbols:
            self.last[s] = self._price_now(s)
        self.next_funding: dict[str, int] = {}
        for s, sb in market.bars.items():
            self.next_funding[s] = int(np.searchsorted(sb.funding_time, start_ms, side="right"))
        self.book = A.Book(
            [specs[x] for x in self.symbols], cash=float(balance), taker_fee=taker_fee, maker_fee=maker_fee,
            slippage_bps=slippage_bps, leverage=default_leverage,
        )
        for x in self.symbols:
            self.book.set_last(x, self.last[x])
        self.update_time = start_ms
        self.pos_time: dict[str, int] = {x: 0 for x in self.symbols}
        self.orders: dict[int, Order] = {}
        self.algo: dict[int, Order] = {}
        self._oid = itertools.count(4_000_000_001)
        self._aid = itertools.count(1_000_001)
        self.sinks: list[Sink] = []

    # ------------------------------------------------------------------ replay
    def event_time(self, j: int, k: int) -> int:
        return self.T0 + j * self.I + (k * self.I) // self.K

    def next_event_ms(self) -> int | None:
        if self.j >= self.n_bars:
            return None
        return self.event_time(self.j, self.k + 1)

    def now_bar(self) -> tuple[int, int]:
        """(grid bar index, sub-steps done) of the bar in progress."""
        return self.j, self.k

    def _price_now(self, s: str) -> float:
        j = min(self.j, self.n_bars - 1)
        i = int(self.rows[s][j]) if self.n_bars else -1
        if i < 0:
            sb = self.market.bars[s]
            i0 = int(np.searchsorted(sb.open_time, self.T0 + j * self.I, side="right")) - 1
            return float(sb.c[i0]) if i0 >= 0 else NAN
        if self.j >= self.n_bars:
            return float(self.market.bars[s].c[i])
        return self.market.partial(s, i, self.k)[3]

    def row(self, s: str, j: int | None = None) -> int:
        j = self.j if j is None else j
        if j < 0 or j >= self.n_bars:
            return -1
        return int(self.rows[s][j])

    def catch_up(self, now_ms: int) -> int:
        """Play every sub-step due at or before market time ``now_ms``; return how many."""
        n = 0
        while self.j < self.n_bars:
            t = self.event_time(self.j, self.k + 1)
            if t > now_ms:
                break
            self._substep(t)
            n += 1
        return n

    def _substep(self, t: int) -> None:
        j, k = self.j, self.k + 1
        closed = k == self.K
        for s in self.symbols:
            i = int(self.rows[s][j])
            if i < 0:
                continue
            so, sh, sl, sc = self.market.segment(s, i, k)
            self._match(s, so, sh, sl, sc, t)
            self._set_last(s, sc)
            self._publish("kline", {"symbol": s, "row": i, "k": k, "closed": closed, "t": t})
        if closed:
            self.j, self.k = j + 1, 0
            if self.j < self.n_bars:
                for s in self.symbols:
                    i = int(self.rows[s][self.j])
                    if i >= 0:
                        self._set_last(s, float(self.market.bars[s].o[i]))
        else:
            self.k = k
        for s in self.symbols:
            self._pay_funding(s, t)
            self._publish("mark", {"symbol": s, "t": t})

    def _set_last(self, s: str, price: float) -> None:
        """The last traded price: what market orders fill at and positions are marked to."""
        self.last[s] = price
        self.book.set_last(s, price)

    # ------------------------------------------------------------------ events
    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink(kind, payload)

    # ------------------------------------------------------------------ settings
    @property
    def fills(self) -> list[dict[str, Any]]:
        """Every fill so far (records of the shared kernels, plus order ids)."""
        return self.book.fills

    @property
    def funding_events(self) -> list[dict[str, Any]]:
        return self.book.funding

    def set_leverage(self, s: str, leverage: int) -> tuple[int, float]:
        if leverage < 1 or leverage > int(self.specs[s].bracket_leverage.max()):
            raise E.bad_leverage()
        cap = A.max_notional(self.specs[s], leverage)
        if abs(self.book.qty(s)) * self.last[s] > cap:
            raise E.BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")
        self.book.leverage[s] = leverage
        return leverage, cap

    def set_margin_type(self, s: str, isolated: bool) -> None:
        if self.book.isolated[s] == isolated:
            raise E.margin_type_unchanged()
        if any(o.symbol == s and o.is_open for o in [*self.orders.values(), *self.algo.values()]):
            raise E.margin_type_open_orders()
        if self.book.qty(s) != 0:
            raise E.margin_type_position()
        self.book.isolated[s] = isolated

    def set_dual(self, dual: bool) -> None:
        if not dual:
            raise E.position_side_unchanged()
        raise E.BinanceError(-1000, "The simulator supports one-way position mode only (dualSidePosition=false).")

    # ------------------------------------------------------------------ money
    def open_order_im(self, s: str | None = None) -> float:
        """Initial margin held by resting LIMIT orders that would open exposure."""
        total = 0.0
        for o in self.orders.values():
            if not o.is_open or o.type != "LIMIT" or o.reduce_only or (s is not None and o.symbol != s):
                continue
            total += (o.qty - o.executed) * o.price / self.book.leverage[o.symbol]
        return total

    def available(self, s: str | None = None) -> float:
        """availableBalance: the kernels' free balance less resting orders' margin."""
        return self.book.available(s or self.symbols[0]) - self.open_order_im()

    def liq_price(self, s: str) -> float:
        return self.book.liquidation_price(s)

    # ------------------------------------------------------------------ orders
    def new_order(self, o: Order) -> Order:
        """Validate and place an order (already parsed); fill it now if it is marketable."""
        s = o.symbol
        spec = self.specs[s]
        if o.position_side != "BOTH":
            raise E.position_side_mismatch()
        last = self.last[s]
        is_market = o.type in MARKET_TYPES
        if o.close_position:
            if o.type not in CONDITIONAL:
                raise E.BinanceError(-4136, f"Target strategy invalid for orderType {o.type},closePosition true")
        else:
            value_price = o.price if not is_market else (o.stop_price if o.type in CONDITIONAL else last)
            A.check_filters(
                spec, qty=o.qty, price=o.price, value_price=value_price, reduce_only=o.reduce_only, market=is_market
            )
        if o.type in CONDITIONAL:
            self._check_trigger_side(o, last)
        pos_qty = self.book.qty(s)
        if o.reduce_only and o.type not in CONDITIONAL:
            if pos_qty == 0 or (pos_qty > 0) == (o.sgn > 0):
                raise E.reduce_only_rejected()
        marketable = o.type == "LIMIT" and ((o.sgn > 0 and last <= o.price) or (o.sgn < 0 and last >= o.price))
        if o.type == "LIMIT" and marketable and o.tif == "GTX":
            raise E.gtx_rejected()
        if o.type == "LIMIT" and not marketable and o.tif == "FOK":
            raise E.fok_rejected()
        if o.type == "LIMIT" and not marketable and not o.reduce_only:
            # a resting order reserves its opening margin and fee, as place_order_nb would ask
            opening = self._opening_qty(pos_qty, o.sgn, o.qty)
            need = opening * o.price / self.book.leverage[s] + A.fee_of(opening, o.price, self.maker_fee)
            if opening > 0 and need > self.available(s) + 1e-9:
                raise E.margin_insufficient()
        fill_now = o.type == "MARKET" or marketable
        fill_price = A.market_fill_price(o.sgn, last, self.slippage_bps) if o.type == "MARKET" else last
        if fill_now:
            qty = self._fill_qty(o, pos_qty)
            if qty > 0:
                before = len(self.fills)
                code = self.book.place_market(
                    s, o.sgn * qty, fill_price, kind=self._kind(pos_qty, o.sgn), order_type=_otype(o.type), t=o.time
                )
                if code == A.INSUFFICIENT_MARGIN:
                    raise E.margin_insufficient()
                if code != 0:
                    A.raise_check(code, spec)
                (self.algo if o.algo_id is not None else self.orders)[o.algo_id or o.order_id] = o
                self._user_order(o, "NEW")
                self._after_fill(o, qty, fill_price, maker=False, t=o.time, first=before)
                return o
        store = self.algo if o.algo_id is not None else self.orders
        store[o.algo_id if o.algo_id is not None else o.order_id] = o
        self._user_order(o, "NEW")
        if o.type == "LIMIT" and not marketable and o.tif == "IOC":
            o.status = "EXPIRED"
            self._user_order(o, "EXPIRED")
        return o

    @staticmethod
    def _opening_qty(pos_qty: float, sgn: int, qty: float) -> float:
        if pos_qty == 0 or (pos_qty > 0) == (sgn > 0):
            return qty
        return max(0.0, qty - abs(pos_qty))

    @staticmethod
    def _kind(pos_qty: float, sgn: int) -> int:
        return FillKind.EXIT if pos_qty != 0 and (pos_qty > 0) != (sgn > 0) else FillKind.ENTRY

    def _fill_qty(self, o: Order, pos_qty: float) -> float:
        """Quantity an order fills now: reduce-only and closePosition orders shrink to the position."""
        qty = o.qty - o.executed
        against = pos_qty != 0 and (pos_qty > 0) != (o.sgn > 0)
        if o.close_position:
            return abs(pos_qty) if against else 0.0
        if o.reduce_only:
            return min(qty, abs(pos_qty)) if against else 0.0
        return qty

    def _check_trigger_side(self, o: Order, last: float) -> None:
        """-2021 when a STOP/TAKE_PROFIT order would trigger at once."""
        sp = o.stop_price
        up = (o.type == "STOP_MARKET" and o.side == "BUY") or (o.type == "TAKE_PROFIT_MARKET" and o.side == "SELL")
        if (up and last >= sp) or (not up and last <= sp):
            raise E.would_trigger()

    def cancel(self, o: Order, t: int) -> Order:
        if not o.is_open:
            raise E.cancel_rejected()
        if o.algo_id is not None:
            o.algo_status = "CANCELED"
        o.status = "CANCELED"
        o.update_time = t
        self._user_order(o, "CANCELED")
        return o

    def open_orders(self, s: str | None, *, algo: bool) -> list[Order]:
        src = self.algo if algo else self.orders
        return [o for o in src.values() if o.is_open and (s is None or o.symbol == s)]

    # ------------------------------------------------------------------ matching
    def _match(self, s: str, so: float, sh: float, sl: float, sc: float, t: int) -> None:
        """Resting orders, then liquidation, against the prices traded in one sub-step."""
        self.book.set_last(s, so)
        for o in [o for o in self.orders.values() if o.symbol == s and o.is_open]:
            if o.type == "LIMIT":
                px = A.limit_fill_price(o.sgn, o.price, so, sh, sl)
                if not math.isnan(px):
                    self._fill_resting(o, px, maker=True, t=t)
            elif o.type in CONDITIONAL:
                px = A.trigger_price(o.sgn, o.type == "TAKE_PROFIT_MARKET", o.stop_price, so, sh, sl)
                if not math.isnan(px):
                    self._fill_resting(o, A.market_fill_price(o.sgn, px, self.slippage_bps), maker=False, t=t)
        for a in [a for a in self.algo.values() if a.symbol == s and a.is_open]:
            px = A.trigger_price(a.sgn, a.type == "TAKE_PROFIT_MARKET", a.stop_price, so, sh, sl)
            if not math.isnan(px):
                self._trigger_algo(a, A.market_fill_price(a.sgn, px, self.slippage_bps), t)
        q = self.book.qty(s)
        if q != 0:
            px = A.liquidation_trigger(q, self.book.liquidation_price(s), so, sh, sl)
            if not math.isnan(px):
                self._liquidate(s, px, t)
        self.book.set_last(s, sc)

    def _trigger_algo(self, a: Order, price: float, t: int) -> None:
        a.algo_status = "TRIGGERED"
        a.update_time = t
        self._user_order(a, "TRIGGERED")
        child = Order(
            order_id=next(self._oid), client_id=a.client_id, symbol=a.symbol, side=a.side,
            position_side=a.position_side, type="MARKET", tif="GTC", qty=a.qty if not math.isnan(a.qty) else 0.0,
            price=NAN, stop_price=a.stop_price, reduce_only=a.reduce_only, close_position=a.close_position,
            working_type=a.working_type, time=t, update_time=t,
        )
        a.actual_order_id = child.order_id
        self.orders[child.order_id] = child
        self._user_order(child, "NEW")
        self._fill_resting(child, price, maker=False, t=t)
        a.executed, a.cum_quote = child.executed, child.cum_quote
        a.algo_status = "FINISHED"
        a.status = child.status
        self._user_order(a, "FINISHED")

    def _fill_resting(self, o: Order, price: float, *, maker: bool, t: int) -> None:
        s = o.symbol
        pos_qty = self.book.qty(s)
        qty = self._fill_qty(o, pos_qty)
        if qty <= 0:
            o.status = "EXPIRED"
            o.update_time = t
            self._user_order(o, "EXPIRED")
            return
        before = len(self.fills)
        kind = self._kind(pos_qty, o.sgn)
        if o.type in CONDITIONAL or (o.type == "MARKET" and not math.isnan(o.stop_price)):
            kind = FillKind.TARGET if o.type == "TAKE_PROFIT_MARKET" or self._is_tp(o) else FillKind.STOP
        self.book.fill(s, o.sgn * qty, price, maker=maker, kind=kind, order_type=_otype(o.type), t=t)
        self._after_fill(o, qty, price, maker=maker, t=t, first=before)

    def _is_tp(self, o: Order) -> bool:
        a = next((x for x in self.algo.values() if x.actual_order_id == o.order_id), None)
        return a is not None and a.type == "TAKE_PROFIT_MARKET"

    def _after_fill(self, o: Order, qty: float, price: float, *, maker: bool, t: int, first: int) -> None:
        rec = self.fills[first:]
        fee = sum(float(f["fee"]) for f in rec)
        realized = sum(float(f["realized"]) for f in rec)
        for f in rec:
            f.update(order_id=o.order_id, client_id=o.client_id, type=o.type, time=t)
        o.executed += qty
        o.cum_quote += qty * price
        o.status = "FILLED" if (o.executed >= o.qty - 1e-12 or o.close_position or o.reduce_only) else "PARTIALLY_FILLED"
        o.update_time = t
        o.last_fill_qty, o.last_fill_price, o.last_fee, o.last_realized, o.maker = qty, price, fee, realized, maker
        self.pos_time[o.symbol] = t
        self.update_time = t
        self._user_order(o, "TRADE")
        self._user_account("ORDER", o.symbol)

    def _liquidate(self, s: str, price: float, t: int) -> None:
        before = len(self.fills)
        self.book.liquidate(s, price, t)
        for f in self.fills[before:]:
            sym = str(f["symbol"])
            child = Order(
                order_id=next(self._oid), client_id=f"autoclose-{t}", symbol=sym,
                side="BUY" if int(f["side"]) > 0 else "SELL", position_side="BOTH", type="LIQUIDATION", tif="IOC",
                qty=float(f["qty"]), price=float(f["price"]), stop_price=NAN, reduce_only=True, close_position=False,
                working_type="CONTRACT_PRICE", time=t, update_time=t, status="FILLED", executed=float(f["qty"]),
                cum_quote=float(f["qty"]) * float(f["price"]),
            )
            child.last_fill_qty, child.last_fill_price = child.qty, child.price
            child.last_fee, child.last_realized = float(f["fee"]), float(f["realized"])
            f.update(order_id=child.order_id, client_id=child.client_id, type="LIQUIDATION", time=t)
            self.orders[child.order_id] = child
            self.pos_time[sym] = t
            self._user_order(child, "TRADE")
            self._user_account("ORDER", sym)

    def _pay_funding(self, s: str, t: int) -> None:
        sb = self.market.bars[s]
        n = self.next_funding[s]
        while n < len(sb.funding_time) and int(sb.funding_time[n]) <= t:
            if self.book.qty(s) != 0:
                self.book.pay_funding(s, float(sb.funding_rate[n]), self.last[s], int(sb.funding_time[n]))
                self._user_account("FUNDING_FEE", s)
            n += 1
        self.next_funding[s] = n

    def funding_info(self, s: str) -> tuple[float, int]:
        """(last funding rate, next funding time) at the current replay position."""
        sb = self.market.bars[s]
        n = self.next_funding[s]
        last = float(sb.funding_rate[n - 1]) if n > 0 else 0.0
        now = self.event_time(self.j, self.k) if self.j < self.n_bars else self.end_ms
        nxt = int(sb.funding_time[n]) if n < len(sb.funding_time) else ((now // 28_800_000) + 1) * 28_800_000
        return last, nxt

    # ------------------------------------------------------------------ user data
    def _user_order(self, o: Order, exec_type: str) -> None:
        self._publish("order", {"order": o, "x": exec_type})

    def _user_account(self, reason: str, s: str) -> None:
        self._publish("account", {"reason": reason, "symbol": s})
