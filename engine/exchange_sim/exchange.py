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
import json
from typing import Any

import numpy as np

from engine.exchange_sim import accounting as A
from engine.exchange_sim import errors as E
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.matching import Matching, Sink, fill_kind, fill_qty, otype
from engine.exchange_sim.order import CONDITIONAL, NAN, Order
from engine.exchange_sim.rules import SymbolRules, symbol_rules
from engine.sim.specs import EXCHANGE_INFO, SymbolSpec

__all__ = ["CONDITIONAL", "Exchange", "Order", "Sink"]


class Exchange(Matching):
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
    rules:
        exchangeInfo filters beyond ``specs`` (:mod:`.rules`); default: the engine's snapshot.
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
        rules: dict[str, SymbolRules] | None = None,
    ) -> None:
        self.market = market
        self.specs = specs
        self.rules = rules if rules is not None else symbol_rules(json.loads(EXCHANGE_INFO.read_text()))
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
        self.open_plain: dict[int, Order] = {}
        self.open_algo: dict[int, Order] = {}
        self._oid = itertools.count(4_000_000_001)
        self._aid = itertools.count(1_000_001)
        self._tran = itertools.count(9_000_000_001)
        self.income: list[dict[str, Any]] = []  # GET /fapi/v1/income rows (raw numbers)
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

    # ------------------------------------------------------------------ settings
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
        if self.open_orders(s, algo=False) or self.open_orders(s, algo=True):
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
        for o in self.open_plain.values():
            if o.reduce_only or (s is not None and o.symbol != s):
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
        """Validate and place an order (already parsed): an algo order rests until its
        trigger; a plain one fills now if it is marketable."""
        if o.position_side != "BOTH":
            raise E.position_side_mismatch()
        self.rules[o.symbol].check_open_count(len(self.open_orders(o.symbol, algo=o.is_algo)), algo=o.is_algo)
        if o.is_algo:
            return self._new_algo(o)
        return self._new_plain(o)

    def _new_algo(self, o: Order) -> Order:
        """STOP_MARKET / TAKE_PROFIT_MARKET through /fapi/v1/algoOrder: filters and the
        trigger's side checked now, margin and reduce-only when it triggers (as Binance)."""
        spec = self.specs[o.symbol]
        if o.stop_price > spec.max_price:
            raise E.BinanceError(-4007, "Stop price greater than max price.")
        if not o.close_position:
            A.check_filters(spec, qty=o.qty, price=NAN, value_price=o.stop_price,
                            reduce_only=o.reduce_only, market=True)
        self._check_trigger_side(o, self.last[o.symbol])
        assert o.algo_id is not None
        self.algo[o.algo_id] = o
        self.open_algo[o.algo_id] = o
        self._set_algo(o, "NEW", o.time)
        return o

    def _new_plain(self, o: Order) -> Order:
        s = o.symbol
        spec = self.specs[s]
        last = self.last[s]
        limit = o.type == "LIMIT"
        if o.close_position:
            raise E.BinanceError(-4136, f"Target strategy invalid for orderType {o.type},closePosition true")
        A.check_filters(spec, qty=o.qty, price=o.price, value_price=o.price if limit else last,
                        reduce_only=o.reduce_only, market=not limit)
        if limit:
            self.rules[s].check_percent_price(o.price, last)
        pos_qty = self.book.qty(s)
        if o.reduce_only and (pos_qty == 0 or (pos_qty > 0) == (o.sgn > 0)):
            raise E.reduce_only_rejected()
        marketable = limit and ((o.sgn > 0 and last <= o.price) or (o.sgn < 0 and last >= o.price))
        if limit and marketable and o.tif == "GTX":
            raise E.gtx_rejected()
        if limit and not marketable and o.tif == "FOK":
            raise E.fok_rejected()
        if limit and not marketable and not o.reduce_only:
            # a resting order reserves its opening margin and fee, as place_order_nb would ask
            opening = self._opening_qty(pos_qty, o.sgn, o.qty)
            need = opening * o.price / self.book.leverage[s] + A.fee_of(opening, o.price, self.maker_fee)
            if opening > 0 and need > self.available(s) + 1e-9:
                raise E.margin_insufficient()
        if not limit or marketable:
            return self._fill_now(o, pos_qty, last)
        self.orders[o.order_id] = o
        self._user_order(o, "NEW")
        if o.tif == "IOC":
            o.status = "EXPIRED"
            self._user_order(o, "EXPIRED")
        else:
            self.open_plain[o.order_id] = o
        return o

    def _fill_now(self, o: Order, pos_qty: float, last: float) -> Order:
        """A MARKET order, or a LIMIT one that crosses: a taker fill at the last price
        (a market order's moved by the slippage)."""
        price = A.market_fill_price(o.sgn, last, self.slippage_bps) if o.type == "MARKET" else last
        qty = fill_qty(o, pos_qty)
        before = len(self.fills)
        code = self.book.place_market(o.symbol, o.sgn * qty, price, kind=fill_kind(pos_qty, o.sgn),
                                      order_type=otype(o.type), t=o.time)
        if code == A.INSUFFICIENT_MARGIN:
            raise E.margin_insufficient()
        if code != 0:
            A.raise_check(code, self.specs[o.symbol])
        self.orders[o.order_id] = o
        self._user_order(o, "NEW")
        self._after_fill(o, qty, price, maker=False, t=o.time, first=before)
        return o

    @staticmethod
    def _opening_qty(pos_qty: float, sgn: int, qty: float) -> float:
        if pos_qty == 0 or (pos_qty > 0) == (sgn > 0):
            return qty
        return max(0.0, qty - abs(pos_qty))

    def _check_trigger_side(self, o: Order, last: float) -> None:
        """-2021 when a STOP/TAKE_PROFIT order would trigger at once."""
        sp = o.stop_price
        up = (o.type == "STOP_MARKET" and o.side == "BUY") or (o.type == "TAKE_PROFIT_MARKET" and o.side == "SELL")
        if (up and last >= sp) or (not up and last <= sp):
            raise E.would_trigger()

    def cancel(self, o: Order, t: int) -> Order:
        if not o.is_open:
            raise E.cancel_rejected()
        if o.is_algo:
            self._set_algo(o, "CANCELED", t)
            return o
        o.status = "CANCELED"
        o.update_time = t
        self.open_plain.pop(o.order_id, None)
        self._user_order(o, "CANCELED")
        return o

    def open_orders(self, s: str | None, *, algo: bool) -> list[Order]:
        src = self.open_algo if algo else self.open_plain
        return [o for o in src.values() if s is None or o.symbol == s]

    def funding_info(self, s: str) -> tuple[float, int]:
        """(last funding rate, next funding time) at the current replay position."""
        sb = self.market.bars[s]
        n = self.next_funding[s]
        last = float(sb.funding_rate[n - 1]) if n > 0 else 0.0
        now = self.event_time(self.j, self.k) if self.j < self.n_bars else self.end_ms
        nxt = int(sb.funding_time[n]) if n < len(sb.funding_time) else ((now // 28_800_000) + 1) * 28_800_000
        return last, nxt

