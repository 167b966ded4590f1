"""Live mode's order manager: legs, protective orders and limit lifetimes, behind a venue.

A target from the simulator's decide phase becomes at most two orders, split by the
simulator's own kernel (:meth:`engine.live.book.Book.legs`): an exit leg (reduce-only
market) then an entry leg (market, or a GTC limit at the simulator's limit price that
lives one bar, as the backtest's). After an entry fill, a stop-loss and a take-profit
(``STOP_MARKET``/``TAKE_PROFIT_MARKET`` algo orders, close-position: Binance keeps
conditional orders on its algo endpoints since 2025-12-09) rest at the simulator's trigger
prices; they are canceled before a leg that closes, flips or adds to the position, and
looked up after a bar that left the position flat.

Every order is an :class:`engine.decisions.records.OrderEvent`: the intent (``new``) is
journaled before it is sent, with the client id of
:func:`engine.decisions.client_order_id` (invariant 7), then each later state. Every fill
the venue reports is booked into the :class:`engine.live.book.Book` (fees at the taker or
maker rate of the strategy, as the simulator).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import numpy as np

from engine.binance import AccountView, OrderRejected, OrderResult
from engine.decisions import client_order_id
from engine.decisions.records import OrderEvent
from engine.live import crash
from engine.live.book import Book
from engine.live.journal import Journal

#: ccxt's unified order statuses -> the log's
STATUS = {"closed": "filled", "open": "new", "canceled": "canceled", "expired": "expired",
          "rejected": "rejected"}
#: the log's types of conditional (algo) orders
TRIGGER_TYPES = ("stop_market", "take_profit_market")


class Venue(Protocol):
    """What the order manager needs from an exchange client (:mod:`engine.binance`)."""

    async def account(self) -> AccountView: ...

    async def server_time(self) -> int: ...

    async def market_order(self, symbol: str, side: str, qty: float, *, client_order_id: str,
                           reduce_only: bool,
                           limit_price: float | None = None) -> OrderResult: ...

    async def trigger_order(self, symbol: str, kind: str, side: str, stop_price: str, *,
                            client_order_id: str) -> OrderResult: ...

    async def lookup(self, symbol: str, client_order_id: str, *,
                     algo: bool = False) -> OrderResult | None: ...

    async def cancel_by_client_id(self, symbol: str, client_order_id: str, *,
                                  algo: bool = False) -> OrderResult | None: ...

    async def open_orders(self, symbol: str) -> list[dict[str, Any]]: ...

    async def open_algo_orders(self, symbol: str) -> list[OrderResult]: ...

    async def cancel(self, symbol: str, order_id: str) -> None: ...


class OrderManager:
    """The orders of one live run (see the module docstring)."""

    def __init__(self, venue: Venue, book: Book, journal: Journal, *, step_ms: int,
                 taker_fee: float, maker_fee: float, limit_entries: bool,
                 has_exits: bool) -> None:
        self.venue = venue
        self.book = book
        self.journal = journal
        self.step = step_ms
        self.taker_fee = taker_fee
        self.maker_fee = maker_fee
        self.limit_entries = limit_entries
        self.has_exits = has_exits
        self.symbols = book.symbols
        self.protect: dict[str, list[OrderEvent]] = {}  # resting stop/target per symbol
        self.resting: dict[str, OrderEvent] = {}  # limit entries living one bar
        self.orders = 0  # fills
        self.telemetry = journal.telemetry
        self.bar_received: float | None = None  # when this bar's closing kline arrived
        self.known: dict[str, OrderEvent] = {}  # a resumed run's logged orders (latest states)

    # ------------------------------------------------------------------ legs

    async def trade(self, symbol: str, t: int, target: float, atr: float) -> None:
        """Move ``symbol``'s position to ``target`` after the close of bar ``t``."""
        exit_qty, entry_qty = self.book.legs(symbol, target)
        q = float(self.book.acct.qty[self.symbols.index(symbol)])
        if self.protect.get(symbol) and (entry_qty != 0.0 or q + exit_qty == 0.0):
            await self.cancel_exits(symbol, t + self.step)
        if exit_qty != 0.0:
            await self._send(symbol, t, "exit", exit_qty, reduce_only=True)
        if entry_qty == 0.0:
            return
        if exit_qty != 0.0:
            crash.point("flip")  # a flip between its legs
        if self.limit_entries:
            j = self.symbols.index(symbol)
            await self._send(symbol, t, "entry", entry_qty, reduce_only=False,
                             limit_price=float(self.book.pend.limit_price[j]))
            return
        if await self._send(symbol, t, "entry", entry_qty, reduce_only=False) and self.has_exits:
            await self._place_exits(symbol, t, atr)

    async def _send(self, symbol: str, t: int, leg: str, dq: float, *, reduce_only: bool,
                    limit_price: float | None = None, created: int | None = None) -> bool:
        """One leg; True when it filled. With ``limit_price``: a GTC limit entry left
        resting until the next close (:meth:`settle_limits`). ``created``: when the intent
        is made and its fill booked (default: the close of bar ``t``)."""
        spec = self.book.specs[self.symbols.index(symbol)]
        created = t + self.step if created is None else created
        ev = OrderEvent(
            client_order_id=client_order_id(self.journal.run_id, symbol, t, leg), symbol=symbol,
            side="buy" if dq > 0 else "sell", type="market" if limit_price is None else "limit",
            quantity=round(abs(dq), spec.qty_precision), status="new", created_at=created,
            open_time=t, leg=leg, reduce_only=reduce_only, updated_at=created, price=limit_price)
        r = await self._submit(ev, lambda: self.venue.market_order(
            symbol, ev.side, ev.quantity, client_order_id=ev.client_order_id,
            reduce_only=reduce_only, limit_price=limit_price))
        if r is None:
            return False
        if limit_price is not None and r.status == "open" and r.filled == 0:
            self.resting[symbol] = ev.to("new", created, exchange_order_id=r.exchange_order_id)
            return False
        status = STATUS.get(r.status, r.status)
        self.journal.order(ev.to(status, max(r.time_ms, created), exchange_order_id=r.exchange_order_id,
                                 filled_quantity=r.filled, avg_price=r.average, price=r.average))
        if r.filled > 0:
            self._fill(ev, r, created, self.taker_fee)
        return status == "filled" and r.filled > 0

    async def _submit(self, ev: OrderEvent,
                      send: Callable[[], Awaitable[OrderResult]]) -> OrderResult | None:
        """Send ``ev`` once: its intent journaled first, then ``send()``; None when the venue
        refused it (journaled ``rejected``). An order a resumed run had already logged
        (:attr:`known`) is not sent again: its logged final state, or the exchange's answer
        to a lookup by its client id, stands; only an intent the exchange never received is
        sent now."""
        prior = self.known.pop(ev.client_order_id, None)
        if prior is not None:
            r = await self._recall(ev, prior)
            if r is not None:
                return r
        else:
            self._intent(ev)
            crash.point("intent")
        sent = time.monotonic()
        try:
            r = await send()
        except OrderRejected as err:
            self._rejected(ev, err, ev.created_at)
            return None
        if self.telemetry is not None:
            self.telemetry.order_latency.observe(time.monotonic() - sent)
        crash.point("sent")
        return r

    async def _recall(self, ev: OrderEvent, prior: OrderEvent) -> OrderResult | None:
        """What became of an order a dead process logged (None: the exchange never got it)."""
        if prior.status == "new":
            r = await self.venue.lookup(ev.symbol, ev.client_order_id, algo=ev.type in TRIGGER_TYPES)
            found = "not at the exchange: sent now" if r is None else f"at the exchange ({r.status}): not resent"
            self.journal.event("info", "reconcile", f"{ev.leg} order {ev.client_order_id} logged before "
                               f"the restart is {found}", {"symbol": ev.symbol, "open_time": ev.open_time,
                                                           "found": r is not None})
            return r
        status = next((k for k, v in STATUS.items() if v == prior.status), prior.status)
        when = int(prior.updated_at or prior.created_at)
        return OrderResult(ev.client_order_id, prior.exchange_order_id or "", status,
                           float(prior.filled_quantity or 0.0),
                           float(prior.avg_price if prior.avg_price is not None else np.nan),
                           when, when)

    def _intent(self, ev: OrderEvent) -> None:
        """Journal an order's intent (before it is sent); the first of a bar closes that
        bar's decision latency (closing kline received -> order request written)."""
        self.journal.order(ev)
        if self.bar_received is not None and self.telemetry is not None:
            self.telemetry.decision_latency.observe(time.monotonic() - self.bar_received)
        self.bar_received = None

    def _fill(self, ev: OrderEvent, r: OrderResult, fill_time: int, rate: float) -> None:
        self.orders += 1
        sign = 1.0 if ev.side == "buy" else -1.0
        self.book.fill(ev.symbol, sign * r.filled, r.average, fill_time, leg=ev.leg,
                       order_type=ev.type, rate=rate)

    def _rejected(self, ev: OrderEvent, err: Exception, now: int) -> None:
        self.journal.order(ev.to("rejected", now, message=str(err)))
        self.journal.event("warning", "broker", f"{ev.leg} order {ev.client_order_id} rejected: {err}",
                           {"symbol": ev.symbol, "leg": ev.leg, "qty": ev.quantity,
                            "price": ev.price}, time_ms=now)

    # ------------------------------------------------------------------ stop-loss / take-profit

    async def _place_exits(self, symbol: str, t: int, atr: float) -> None:
        """STOP_MARKET then TAKE_PROFIT_MARKET (close-position) at the simulator's trigger
        prices, from the entry price the exchange reports."""
        acc = await self.venue.account()
        j = self.symbols.index(symbol)
        await self.place_protection(symbol, t, float(acc.qty[j]), float(acc.entry_price[j]), atr)

    async def place_protection(self, symbol: str, t: int, qty: float, entry: float, atr: float,
                               *, tag: str = "", created: int | None = None) -> list[OrderEvent]:
        """The strategy's stop and target for a position of ``qty`` entered at ``entry``
        (ATR ``atr``), as the orders of bar ``t``; ``tag`` makes their client ids new (a
        re-placement at a restart). Returns what rests now."""
        if qty == 0.0 or not self.has_exits:
            return []
        j = self.symbols.index(symbol)
        side = 1 if qty > 0 else -1
        stop, target = self.book.exit_prices(symbol, side, entry, atr)
        digits = self.book.specs[j].price_precision
        created = t + self.step if created is None else created
        placed = []
        for leg, kind, px in (("stop", "STOP_MARKET", stop), ("target", "TAKE_PROFIT_MARKET", target)):
            if np.isnan(px):
                continue
            ev = OrderEvent(
                client_order_id=client_order_id(self.journal.run_id, symbol, t, leg + tag),
                symbol=symbol, side="sell" if side > 0 else "buy", type=kind.lower(),
                quantity=abs(qty), status="new", created_at=created, open_time=t, leg=leg,
                reduce_only=True, updated_at=created, price=px)
            r = await self._submit(ev, partial(self.venue.trigger_order, symbol, kind, ev.side,
                                               f"{px:.{digits}f}", client_order_id=ev.client_order_id))
            if r is None:
                continue
            if r.status in ("canceled", "expired", "rejected"):
                self.journal.order(ev.to(STATUS.get(r.status, r.status), created))
                continue
            placed.append(ev.to("new", created, exchange_order_id=r.exchange_order_id))
        if placed:
            self.protect[symbol] = placed
        return placed

    async def cancel_exits(self, symbol: str, now: int) -> None:
        """Cancel ``symbol``'s resting stop and target (one that filled meanwhile is booked)."""
        for ev in self.protect.pop(symbol, []):
            r = await self.venue.cancel_by_client_id(symbol, ev.client_order_id, algo=True)
            if r is not None and r.status == "closed" and r.filled > 0:
                self._exit_filled(ev, r)
                continue
            self.journal.order(ev.to("canceled", now))

    async def check_exits(self, t: int, acc: AccountView) -> AccountView:
        """After bar ``t``: book the stop/target orders that triggered during it and cancel
        their siblings (a position the exchange closed leaves none of ours resting)."""
        changed = False
        for symbol in list(self.protect):
            if acc.qty[self.symbols.index(symbol)] != 0.0:
                continue
            for ev in self.protect.pop(symbol):
                r = await self.venue.lookup(symbol, ev.client_order_id, algo=True)
                if r is not None and r.status == "closed" and r.filled > 0:
                    self._exit_filled(ev, r)
                    changed = True
                    continue
                if r is not None and r.status == "open":
                    await self.venue.cancel_by_client_id(symbol, ev.client_order_id, algo=True)
                status = "canceled" if r is None or r.status == "open" else STATUS.get(r.status, r.status)
                self.journal.order(ev.to(status, t + self.step))
        return await self.venue.account() if changed else acc

    def _exit_filled(self, ev: OrderEvent, r: OrderResult) -> None:
        # the row names the bar whose prices triggered it (as the backtest's stop/target rows)
        when = r.update_ms or r.time_ms
        trig = ((when - 1) // self.step) * self.step if when else ev.open_time
        self.journal.order(ev.to("filled", max(when, trig), open_time=trig, filled_quantity=r.filled,
                                 avg_price=r.average, price=r.average))
        self._fill(ev, r, trig, self.taker_fee)

    # ------------------------------------------------------------------ limit entries

    async def settle_limits(self, t: int) -> None:
        """After bar ``t``: the limit entries placed at the previous close lived this one bar
        (the simulator's one-bar limit lifetime). Cancel what is left; book the fill (maker
        fee, fill bar ``t``) of those the bar touched."""
        for symbol, ev in list(self.resting.items()):
            del self.resting[symbol]
            r = await self.venue.cancel_by_client_id(symbol, ev.client_order_id)
            now = t + self.step
            if r is not None and r.filled > 0:
                self.journal.order(ev.to("filled", max(r.update_ms or r.time_ms or now, ev.created_at),
                                         filled_quantity=r.filled, avg_price=r.average,
                                         exchange_order_id=r.exchange_order_id))
                self._fill(ev, r, t, self.maker_fee)
                if r.filled < ev.quantity:
                    self.journal.event("warning", "broker",
                                       f"limit entry {ev.client_order_id} partly filled; rest canceled",
                                       {"symbol": symbol, "filled": r.filled, "quantity": ev.quantity},
                                       time_ms=now)
                continue
            status = "expired" if r is None or r.status in ("open", "canceled") else STATUS.get(r.status, r.status)
            self.journal.order(ev.to(status, now))

    async def close_position(self, symbol: str, t: int, qty: float, now: int) -> bool:
        """Close a position of ``qty`` now (``--flatten-on-exit``): a reduce-only market
        order, leg ``end``, as an order of bar ``t``; True when it filled."""
        return await self._send(symbol, t, "end", -qty, reduce_only=True, created=now)

    async def cancel_resting(self) -> None:
        """At a clean end: no limit entry of ours is left resting; one that filled in the
        meantime is logged ``filled`` (its position stays, as any other)."""
        for symbol, ev in list(self.resting.items()):
            del self.resting[symbol]
            r = await self.venue.cancel_by_client_id(symbol, ev.client_order_id)
            now = await self.venue.server_time()
            if r is not None and r.filled > 0:
                self.journal.order(ev.to("filled", now, filled_quantity=r.filled, avg_price=r.average))
            else:
                self.journal.order(ev.to("canceled", now))

    def resting_exits(self) -> dict[str, Any]:
        """Client ids of the protective orders resting now, per symbol (for the log)."""
        return {s: [ev.client_order_id for ev in evs] for s, evs in self.protect.items()}
