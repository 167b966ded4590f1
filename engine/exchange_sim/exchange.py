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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.exchange_sim import accounting as A
from engine.exchange_sim import errors as E
from engine.exchange_sim.market import MarketData
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


@dataclass
class Position:
    qty: float = 0.0
    entry: float = 0.0
    iso_margin: float = 0.0  # isolated wallet (isolated mode only)
    update_time: int = 0


@dataclass
class SymbolSettings:
    leverage: int = 20
    isolated: bool = False


@dataclass
class Account:
    wallet: float
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    settings: dict[str, SymbolSettings] = field(default_factory=dict)
    dual: bool = False
    fees_paid: float = 0.0
    funding_paid: float = 0.0
    realized: float = 0.0
    update_time: int = 0


Sink = Callable[[str, dict[str, Any]], None]


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
        self.account = Account(wallet=float(balance), update_time=start_ms)
        self.orders: dict[int, Order] = {}
        self.algo: dict[int, Order] = {}
        self._oid = itertools.count(4_000_000_001)
        self._aid = itertools.count(1_000_001)
        self.sinks: list[Sink] = []
        self.fills: list[dict[str, Any]] = []  # every fill, for tests and the parity check
        self.funding_events: list[dict[str, Any]] = []

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
            self.last[s] = sc
            self._publish("kline", {"symbol": s, "row": i, "k": k, "closed": closed, "t": t})
        if closed:
            self.j, self.k = j + 1, 0
            if self.j < self.n_bars:
                for s in self.symbols:
                    i = int(self.rows[s][self.j])
                    if i >= 0:
                        self.last[s] = float(self.market.bars[s].o[i])
        else:
            self.k = k
        for s in self.symbols:
            self._pay_funding(s, t)
            self._publish("mark", {"symbol": s, "t": t})

    # ------------------------------------------------------------------ events
    def _publish(self, kind: str, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink(kind, payload)

    # ------------------------------------------------------------------ settings
    def settings(self, s: str) -> SymbolSettings:
        st = self.account.settings.get(s)
        if st is None:
            st = self.account.settings[s] = SymbolSettings(leverage=self.default_leverage)
        return st

    def position(self, s: str, side: str = "BOTH") -> Position:
        key = (s, side)
        p = self.account.positions.get(key)
        if p is None:
            p = self.account.positions[key] = Position()
        return p

    def position_sides(self) -> tuple[str, ...]:
        return ("LONG", "SHORT") if self.account.dual else ("BOTH",)

    def set_leverage(self, s: str, leverage: int) -> tuple[int, float]:
        if leverage < 1 or leverage > int(self.specs[s].bracket_leverage.max()):
            raise E.bad_leverage()
        notional = sum(abs(p.qty) * self.last[s] for (sym, _), p in self.account.positions.items() if sym == s)
        cap = A.max_notional(self.specs[s], leverage)
        if notional > cap:
            raise E.BinanceError(-2027, "Exceeded the maximum allowable position at current leverage.")
        self.settings(s).leverage = leverage
        return leverage, cap

    def set_margin_type(self, s: str, isolated: bool) -> None:
        st = self.settings(s)
        if st.isolated == isolated:
            raise E.margin_type_unchanged()
        if any(o.symbol == s and o.is_open for o in [*self.orders.values(), *self.algo.values()]):
            raise E.margin_type_open_orders()
        if any(sym == s and p.qty != 0 for (sym, _), p in self.account.positions.items()):
            raise E.margin_type_position()
        st.isolated = isolated

    def set_dual(self, dual: bool) -> None:
        if self.account.dual == dual:
            raise E.position_side_unchanged()
        if any(p.qty != 0 for p in self.account.positions.values()):
            raise E.position_side_open()
        if any(o.is_open for o in [*self.orders.values(), *self.algo.values()]):
            raise E.BinanceError(-4067, "Position side cannot be changed if there exists open orders.")
        self.account.dual = dual

    # ------------------------------------------------------------------ money
    def _iso_total(self) -> float:
        return sum(p.iso_margin for p in self.account.positions.values())

    def upnl(self, s: str, side: str) -> float:
        p = self.account.positions.get((s, side))
        if p is None or p.qty == 0:
            return 0.0
        return A.unrealized(p.qty, p.entry, self.last[s])

    def position_im(self, s: str, p: Position) -> float:
        return abs(p.qty) * self.last[s] / self.settings(s).leverage

    def open_order_im(self) -> float:
        """Initial margin held by open (non-reduce-only, not yet triggered) orders."""
        total = 0.0
        for o in itertools.chain(self.orders.values(), self.algo.values()):
            if not o.is_open or o.reduce_only or o.close_position or (o.algo_id is None and o.type in CONDITIONAL):
                continue
            if o.algo_id is not None:
                continue
            price = o.price if not math.isnan(o.price) else self.last[o.symbol]
            total += (o.qty - o.executed) * price / self.settings(o.symbol).leverage
        return total

    def cross_upnl(self) -> float:
        return sum(
            A.unrealized(p.qty, p.entry, self.last[s])
            for (s, _), p in self.account.positions.items()
            if p.qty != 0 and not self.settings(s).isolated
        )

    def available(self) -> float:
        """availableBalance: cross wallet + cross uPnL - cross IM - open-order IM."""
        acc = self.account
        cross_im = sum(
            self.position_im(s, p) for (s, _), p in acc.positions.items() if p.qty != 0 and not self.settings(s).isolated
        )
        return acc.wallet - self._iso_total() + self.cross_upnl() - cross_im - self.open_order_im()

    def maint(self, s: str, p: Position) -> float:
        return A.maint_margin(self.specs[s], abs(p.qty) * self.last[s]) if p.qty != 0 else 0.0

    def liq_price(self, s: str, side: str) -> float:
        p = self.account.positions.get((s, side))
        if p is None or p.qty == 0:
            return NAN
        if self.settings(s).isolated:
            wb = p.iso_margin
        else:
            wb = self.account.wallet - self._iso_total()
            for (s2, sd2), p2 in self.account.positions.items():
                if (s2, sd2) == (s, side) or p2.qty == 0 or self.settings(s2).isolated:
                    continue
                wb += A.unrealized(p2.qty, p2.entry, self.last[s2]) - self.maint(s2, p2)
        return A.liquidation_price(self.specs[s], p.qty, p.entry, wb)

    # ------------------------------------------------------------------ orders
    def new_order(self, o: Order) -> Order:
        """Validate and place an order (already parsed); fill it now if it is marketable."""
        s = o.symbol
        spec = self.specs[s]
        dual = self.account.dual
        if dual and o.position_side == "BOTH" or not dual and o.position_side != "BOTH":
            raise E.position_side_mismatch()
        if dual and o.reduce_only:
            raise E.BinanceError(-1106, "Parameter 'reduceonly' sent when not required.")
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
        closing = self._closing_side(o)
        pos = self.position(s, o.position_side)
        if o.reduce_only and o.type not in CONDITIONAL:
            if pos.qty == 0 or (pos.qty > 0) == (o.sgn > 0):
                raise E.reduce_only_rejected()
        if not (o.reduce_only or o.close_position or closing):
            price = o.price if not is_market else last
            if o.type in CONDITIONAL:
                price = o.stop_price
            opening = self._opening_qty(pos, o.sgn, o.qty)
            need = opening * price / self.settings(s).leverage
            if need > 0 and need > self.available() + 1e-9:
                raise E.margin_insufficient()
        marketable = o.type == "LIMIT" and ((o.sgn > 0 and last <= o.price) or (o.sgn < 0 and last >= o.price))
        if o.type == "LIMIT" and marketable and o.tif == "GTX":
            raise E.gtx_rejected()
        if o.type == "LIMIT" and not marketable and o.tif == "FOK":
            raise E.fok_rejected()
        store = self.algo if o.algo_id is not None else self.orders
        store[o.algo_id if o.algo_id is not None else o.order_id] = o
        self._user_order(o, "NEW")
        if o.type == "MARKET":
            self._fill(o, A.market_fill_price(o.sgn, last, self.slippage_bps), maker=False, t=o.time)
        elif o.type == "LIMIT":
            if marketable:
                self._fill(o, last, maker=False, t=o.time)
            elif o.tif == "IOC":
                o.status = "EXPIRED"
                self._user_order(o, "EXPIRED")
        return o

    def _opening_qty(self, pos: Position, sgn: int, qty: float) -> float:
        if pos.qty == 0 or (pos.qty > 0) == (sgn > 0):
            return qty
        return max(0.0, qty - abs(pos.qty))

    def _closing_side(self, o: Order) -> bool:
        """In hedge mode, a SELL on LONG (or BUY on SHORT) only closes."""
        return (o.position_side == "LONG" and o.side == "SELL") or (o.position_side == "SHORT" and o.side == "BUY")

    def _check_trigger_side(self, o: Order, last: float) -> None:
        """-2021 when a STOP/TAKE_PROFIT order would trigger at once."""
        sp = o.stop_price
        if math.isnan(sp) or sp <= 0:
            raise E.mandatory("stopPrice")
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
        for o in [o for o in self.orders.values() if o.symbol == s and o.is_open]:
            if o.type == "LIMIT":
                px = A.limit_fill_price(o.sgn, o.price, so, sh, sl)
                if not math.isnan(px):
                    self._fill(o, px, maker=True, t=t)
            elif o.type in CONDITIONAL:
                px = A.trigger_price(o.sgn, o.type == "TAKE_PROFIT_MARKET", o.stop_price, so, sh, sl)
                if not math.isnan(px):
                    self._fill(o, A.market_fill_price(o.sgn, px, self.slippage_bps), maker=False, t=t)
        for a in [a for a in self.algo.values() if a.symbol == s and a.is_open]:
            px = A.trigger_price(a.sgn, a.type == "TAKE_PROFIT_MARKET", a.stop_price, so, sh, sl)
            if not math.isnan(px):
                self._trigger_algo(a, A.market_fill_price(a.sgn, px, self.slippage_bps), t)
        for side in self.position_sides():
            p = self.account.positions.get((s, side))
            if p is None or p.qty == 0:
                continue
            liq = self.liq_price(s, side)
            px = A.liquidation_trigger(p.qty, liq, so, sh, sl)
            if not math.isnan(px):
                self._liquidate(s, side, px, t)

    def _trigger_algo(self, a: Order, price: float, t: int) -> None:
        a.algo_status = "TRIGGERED"
        a.update_time = t
        child = Order(
            order_id=next(self._oid), client_id=a.client_id, symbol=a.symbol, side=a.side,
            position_side=a.position_side, type="MARKET", tif="GTC", qty=a.qty, price=NAN,
            stop_price=a.stop_price, reduce_only=a.reduce_only, close_position=a.close_position,
            working_type=a.working_type, time=t, update_time=t,
        )
        a.actual_order_id = child.order_id
        self.orders[child.order_id] = child
        self._user_order(child, "NEW")
        self._fill(child, price, maker=False, t=t)
        a.executed, a.cum_quote = child.executed, child.cum_quote
        a.algo_status = "FINISHED"
        a.status = child.status

    def _fill(self, o: Order, price: float, *, maker: bool, t: int) -> None:
        s = o.symbol
        pos = self.position(s, o.position_side)
        qty = o.qty - o.executed
        if o.close_position:
            qty = abs(pos.qty) if pos.qty != 0 and (pos.qty > 0) != (o.sgn > 0) else 0.0
        elif o.reduce_only or self._closing_side(o):
            if pos.qty == 0 or (pos.qty > 0) == (o.sgn > 0):
                qty = 0.0
            else:
                qty = min(qty, abs(pos.qty))
        if qty <= 0:
            o.status = "EXPIRED"
            o.update_time = t
            self._user_order(o, "EXPIRED")
            return
        rate = self.maker_fee if maker else self.taker_fee
        self._trade(s, o.position_side, o.sgn * qty, price, rate, t)
        fee = self.fills[-1]["fee"]
        realized = self.fills[-1]["realized"]
        o.executed += qty
        o.cum_quote += qty * price
        o.status = "FILLED" if o.executed >= o.qty - 1e-12 or o.close_position or o.reduce_only else "PARTIALLY_FILLED"
        if o.reduce_only and o.executed < o.qty:
            o.status = "FILLED"  # a reduce-only order shrunk to the position is done
        o.update_time = t
        o.last_fill_qty, o.last_fill_price, o.last_fee, o.last_realized, o.maker = qty, price, fee, realized, maker
        self.fills[-1].update(order_id=o.order_id, client_id=o.client_id, type=o.type)
        self._user_order(o, "TRADE")
        self._user_account("ORDER", s)

    def _trade(self, s: str, side: str, signed_qty: float, price: float, rate: float, t: int, *, kind: str = "trade") -> None:
        """Apply a signed fill to a position through the shared kernels."""
        acc = self.account
        pos = self.position(s, side)
        st = self.settings(s)
        old_qty = pos.qty
        new_qty, new_entry, realized, closed = A.apply_fill(pos.qty, pos.entry, signed_qty, price)
        fee = A.fee(signed_qty, price, rate)
        if st.isolated:
            if old_qty != 0 and closed > 0:
                release = pos.iso_margin * closed / abs(old_qty)
                pos.iso_margin -= release
            opened = abs(signed_qty) - closed
            if opened > 0:
                pos.iso_margin += opened * price / st.leverage
            if new_qty == 0:
                pos.iso_margin = 0.0
        acc.wallet += realized - fee
        acc.fees_paid += fee
        acc.realized += realized
        pos.qty, pos.entry, pos.update_time = new_qty, new_entry, t
        acc.update_time = t
        self.fills.append(
            {"time": t, "symbol": s, "side": 1 if signed_qty > 0 else -1, "qty": abs(signed_qty), "price": price,
             "fee": fee, "realized": realized, "kind": kind}
        )

    def _liquidate(self, s: str, side: str, price: float, t: int) -> None:
        pos = self.position(s, side)
        qty = -pos.qty
        spec = self.specs[s]
        iso = self.settings(s).isolated
        margin_before = pos.iso_margin
        self._trade(s, side, qty, price, spec.liquidation_fee, t, kind="liquidation")
        if iso:
            # an isolated position loses at most its isolated margin; Binance's insurance
            # fund takes what is left below zero
            f = self.fills[-1]
            loss = f["fee"] - f["realized"]
            if loss > margin_before:
                self.account.wallet += loss - margin_before
        if self.account.wallet < 0:
            self.account.wallet = 0.0
        child = Order(
            order_id=next(self._oid), client_id=f"autoclose-{t}", symbol=s, side="BUY" if qty > 0 else "SELL",
            position_side=side, type="LIQUIDATION", tif="IOC", qty=abs(qty), price=price, stop_price=NAN,
            reduce_only=True, close_position=False, working_type="CONTRACT_PRICE", time=t, update_time=t,
            status="FILLED", executed=abs(qty), cum_quote=abs(qty) * price,
        )
        child.last_fill_qty, child.last_fill_price = abs(qty), price
        child.last_fee, child.last_realized = self.fills[-1]["fee"], self.fills[-1]["realized"]
        self.orders[child.order_id] = child
        self.fills[-1].update(order_id=child.order_id, client_id=child.client_id, type="LIQUIDATION")
        self._user_order(child, "TRADE")
        self._user_account("ORDER", s)

    def _pay_funding(self, s: str, t: int) -> None:
        sb = self.market.bars[s]
        n = self.next_funding[s]
        while n < len(sb.funding_time) and int(sb.funding_time[n]) <= t:
            rate = float(sb.funding_rate[n])
            ft = int(sb.funding_time[n])
            mark = self.last[s]
            for side in self.position_sides():
                p = self.account.positions.get((s, side))
                if p is None or p.qty == 0:
                    continue
                paid = A.funding_paid(p.qty, mark, rate)
                self.account.wallet -= paid
                self.account.funding_paid += paid
                if self.settings(s).isolated:
                    p.iso_margin -= paid
                self.funding_events.append(
                    {"time": ft, "symbol": s, "qty": p.qty, "mark": mark, "rate": rate, "amount": paid}
                )
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
