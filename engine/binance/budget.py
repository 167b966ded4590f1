"""The request budget: every REST call of a client waits here until the venue's limits allow it.

Binance counts request weight per IP (``REQUEST_WEIGHT``, 2400 per minute on USD-M) and new
orders per account (``ORDERS``, 300 per 10 s and 1200 per minute) over fixed wall-clock
windows, reports the counts so far in every answer (``X-MBX-USED-WEIGHT-1M``,
``X-MBX-ORDER-COUNT-10S``/``-1M``), answers 429 with ``Retry-After`` when a limit is crossed
and 418 (an IP ban, growing with each repeat) when calls go on during that back-off.

:class:`RequestBudget` keeps one bucket per limit, sized at :data:`SHARE` (80 %) of it:

* a token bucket (capacity = the share, refilled continuously over the window), so calls
  are spread rather than burst;
* this window's use, the larger of what this client sent and what the venue reported plus
  this client's calls not answered yet: the venue's count is the truth, and it can only
  lower what is left (``left = min(tokens, capacity - used)``).

A call that does not fit waits (:meth:`RequestBudget.acquire`, asyncio; :meth:`use_sync`
for the sync backfill). A 429 or 418 (seen by :meth:`RequestBudget.attach`'s hook on every
ccxt answer, with that answer's own headers) halts every caller, reads and orders, until its
``Retry-After``. Orders come first: a read does not take weight while an order that needs
weight is waiting, and an order never waits behind reads. A wait ends at once, with
:class:`Stopped`, when the ``stop`` event is set, and with ``CancelledError`` when its task is
cancelled. Clock and sleeps are injected, so tests need not wait.

>>> now = [120.0]
>>> budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 100, 60.0)], clock=lambda: now[0])
>>> budget.pause_s(weight=80)  # 80 % of 100 fits at once
0.0
>>> budget.observe({"X-MBX-USED-WEIGHT-1M": "75"})  # others on this IP used 75
>>> budget.state().bucket("weight_1m").left
5.0
>>> round(budget.pause_s(weight=10), 2)  # not in this minute: wait for the next one
60.05
>>> budget.observe({"Retry-After": "30"}, status=429)
>>> budget.state().halted_until, budget.state().halt_status
(150.0, 429)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
SHARE = 0.8
UNIT_S = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}


@dataclass(frozen=True)
class Limit:
    """One of the venue's limits: ``kind`` ``"weight"`` or ``"orders"``, the header that
    reports its use, the venue's limit per window and the window's length in seconds."""

    kind: str
    header: str
    limit: int
    window_s: float

    @property
    def name(self) -> str:
        """``weight_1m``, ``orders_10s``, ``orders_1m``: the bucket's name (a metric label)."""
        return f"{self.kind}_{self.header.rsplit('-', 1)[-1].lower()}"


# Binance USD-M's limits, used until exchangeInfo's rateLimits say otherwise
BINANCE_LIMITS = (
    Limit("weight", WEIGHT_HEADER, 2400, 60.0),
    Limit("orders", "X-MBX-ORDER-COUNT-10S", 300, 10.0),
    Limit("orders", "X-MBX-ORDER-COUNT-1M", 1200, 60.0),
)


def limits_from_rate_limits(
    rate_limits: Iterable[Mapping[str, Any]], *, windows: Mapping[str, float] | None = None
) -> list[Limit]:
    """The limits of exchangeInfo's ``rateLimits`` (REQUEST_WEIGHT and ORDERS; others are
    skipped). ``windows`` overrides a window by bucket name (a test server with short ones).

    >>> limits_from_rate_limits([{"rateLimitType": "ORDERS", "interval": "SECOND",
    ...                           "intervalNum": 10, "limit": 300}])
    [Limit(kind='orders', header='X-MBX-ORDER-COUNT-10S', limit=300, window_s=10.0)]
    """
    out = []
    for r in rate_limits:
        kind = {"REQUEST_WEIGHT": "weight", "ORDERS": "orders"}.get(str(r.get("rateLimitType")))
        unit = str(r.get("interval", "MINUTE"))
        if kind is None or unit not in UNIT_S:
            continue
        n = int(r.get("intervalNum", 1))
        counter = "USED-WEIGHT" if kind == "weight" else "ORDER-COUNT"
        limit = Limit(kind, f"X-MBX-{counter}-{n}{unit[0]}", int(r["limit"]), n * UNIT_S[unit])
        if windows and limit.name in windows:
            limit = Limit(limit.kind, limit.header, limit.limit, float(windows[limit.name]))
        out.append(limit)
    return out


class Stopped(Exception):
    """The stop event was set while a call waited for the budget (or for a retry)."""


@dataclass(frozen=True)
class BucketState:
    """One bucket now (what the metrics read). ``used`` is this window's use as the venue
    counts it (at least what this client sent); ``left`` what may still be used now."""

    name: str
    kind: str
    limit: int
    capacity: int
    window_s: float
    used: int
    left: float


@dataclass(frozen=True)
class BudgetState:
    """The whole budget now: its buckets, the halt after a 429/418 (``halted_until`` on the
    budget's clock, epoch seconds by default; None when not halted), the 429/418 answers seen
    (``halts``), the callers waiting now, and the seconds they waited (summed over callers)."""

    buckets: tuple[BucketState, ...]
    halted: bool
    halted_until: float | None
    halt_status: int | None
    halts: int
    waiting_reads: int
    waiting_orders: int
    waited_s: float

    def bucket(self, name: str) -> BucketState:
        """The bucket called ``name`` (``weight_1m``, ``orders_10s``, ``orders_1m``)."""
        return next(b for b in self.buckets if b.name == name)


class _Bucket:
    """A token bucket and the current fixed window's use, for one limit."""

    def __init__(self, limit: Limit, share: float, now: float) -> None:
        self.limit = limit
        self.capacity = max(1, int(limit.limit * share))
        self.tokens = float(self.capacity)
        self.stamp = now
        self.window = math.floor(now / limit.window_s)
        self.sent = 0  # what this client sent in this window
        self.seen = 0  # the venue's count plus this client's calls not answered yet

    def cost(self, weight: int, orders: int) -> int:
        return weight if self.limit.kind == "weight" else orders

    def advance(self, now: float) -> None:
        rate = self.capacity / self.limit.window_s
        self.tokens = min(float(self.capacity), self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = max(self.stamp, now)
        window = math.floor(now / self.limit.window_s)
        if window > self.window:
            self.window, self.sent, self.seen = window, 0, 0

    @property
    def used(self) -> int:
        return max(self.sent, self.seen)

    def left(self) -> float:
        return max(0.0, min(self.tokens, float(self.capacity - self.used)))

    def pause(self, cost: int, now: float, margin_s: float) -> float:
        """Seconds until ``cost`` fits (0: now); a cost above the capacity counts as all of it."""
        cost = min(cost, self.capacity)
        wait = 0.0
        if self.used + cost > self.capacity:
            wait = (self.window + 1) * self.limit.window_s - now + margin_s
        if self.tokens < cost:
            wait = max(wait, (cost - self.tokens) * self.limit.window_s / self.capacity)
        return wait

    def take(self, cost: int) -> None:
        self.tokens -= min(cost, self.capacity)
        self.sent += cost


@dataclass(eq=False)
class _Ticket:
    """One call let through: its costs until the venue answers it."""

    owner: RequestBudget
    weight: int
    orders: int


_CURRENT: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar(
    "engine_binance_call", default=None)
_PRIORITY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "engine_binance_priority", default=False)


@contextlib.contextmanager
def order_scope() -> Iterator[None]:
    """Inside it, every call is an order's (priority), whatever it costs: a client's send,
    its lookups, cancels."""
    token = _PRIORITY.set(True)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


def _header(headers: Mapping[str, Any], name: str) -> Any:
    low = name.lower()
    return next((v for k, v in headers.items() if str(k).lower() == low), None)


class RequestBudget:
    """The weight and order budgets of one client (see the module docstring).

    Parameters
    ----------
    limits : the venue's limits (default :data:`BINANCE_LIMITS`; :meth:`configure` replaces
        them with exchangeInfo's).
    share : the part of each limit this client may use (0.8).
    windows : window overrides by bucket name, kept across :meth:`configure`.
    clock : seconds (epoch by default: Binance's windows are calendar windows).
    asleep, sleep : the async and sync sleeps (inject fakes in tests).
    stop : an ``asyncio.Event``; once set, a call that has to wait raises :class:`Stopped`
        at once, and so does every wait under way (settable later: ``budget.stop = event``).
    margin_s : added to a wait for the next window.
    """

    def __init__(
        self,
        limits: Iterable[Limit] | None = None,
        *,
        share: float = SHARE,
        windows: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
        asleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        sleep: Callable[[float], Any] = time.sleep,
        stop: asyncio.Event | None = None,
        margin_s: float = 0.05,
    ) -> None:
        self.share = share
        self.windows = dict(windows or {})
        self.clock = clock
        self.asleep = asleep
        self.sleep_sync = sleep
        self.stop = stop
        self.margin_s = margin_s
        self._buckets: dict[str, _Bucket] = {}
        self._set_limits(BINANCE_LIMITS if limits is None else limits)
        self.halted_until = 0.0
        self.halt_status: int | None = None
        self.halts = 0
        self.waited_s = 0.0
        self._pending: set[_Ticket] = set()  # let through, not answered yet
        self._waiting = {"read": 0, "order": 0}
        self._orders_needing_weight = 0  # waiting orders that need weight: reads hold back
        self._wake: asyncio.Event | None = None

    # ------------------------------------------------------------------ configuration

    @property
    def limits(self) -> list[Limit]:
        """The venue's limits the buckets are sized from."""
        return [b.limit for b in self._buckets.values()]

    def _set_limits(self, limits: Iterable[Limit]) -> None:
        now = self.clock()
        old, self._buckets = self._buckets, {}
        for limit in limits:
            b = _Bucket(limit, self.share, now)
            prev = old.get(limit.name)
            if prev is not None:  # keep what this window already used
                prev.advance(now)
                b.tokens = min(prev.tokens, float(b.capacity))
                if prev.limit.window_s == limit.window_s:
                    b.sent, b.seen = prev.sent, prev.seen
            self._buckets[limit.name] = b

    def configure(self, rate_limits: Iterable[Mapping[str, Any]]) -> None:
        """Size the buckets from exchangeInfo's ``rateLimits`` (the budget's ``windows``
        overrides kept); a venue that lists none keeps the current limits."""
        limits = limits_from_rate_limits(rate_limits, windows=self.windows)
        if limits:
            self._set_limits(limits)
            self._notify()

    def attach(self, exchange: Any) -> None:
        """Observe every answer of a ccxt exchange (sync or async) with its own headers and
        status, through its ``on_rest_response`` hook (the instance's; ccxt is not changed)."""
        original = exchange.on_rest_response

        def on_rest_response(code: Any, reason: Any, url: Any, method: Any, headers: Any,
                             body: Any, request_headers: Any, request_body: Any) -> Any:
            self.observe(headers, status=code if isinstance(code, int) else None)
            return original(code, reason, url, method, headers, body, request_headers,
                            request_body)

        exchange.on_rest_response = on_rest_response

    # ------------------------------------------------------------------ what the venue says

    def observe(self, headers: Mapping[str, Any] | None, *, status: int | None = None) -> None:
        """Take a venue's answer into account: its used counts (they can only lower what is
        left) and, for a 429 or 418, a halt of every caller until its ``Retry-After``."""
        now = self.clock()
        ticket = _CURRENT.get()
        if ticket is not None and ticket.owner is self:
            self._pending.discard(ticket)  # answered: the venue's count includes it now
        headers = headers or {}
        if status in (429, 418):
            self._halt_from(headers, status, now)
        for b in self._buckets.values():
            try:
                used = int(_header(headers, b.limit.header))
            except (TypeError, ValueError):
                continue
            b.advance(now)
            b.seen = max(b.seen, used + sum(b.cost(t.weight, t.orders) for t in self._pending))

    def _halt_from(self, headers: Mapping[str, Any], status: int, now: float) -> None:
        try:
            seconds = max(0.0, float(_header(headers, "Retry-After")))
        except (TypeError, ValueError):  # none given: to the end of the weight window
            w = next((b.limit.window_s for b in self._buckets.values()
                      if b.limit.kind == "weight"), 60.0)
            seconds = max(1.0, (math.floor(now / w) + 1) * w - now)
        self.halt(seconds, status=status)

    def halt(self, seconds: float, *, status: int) -> None:
        """Stop every caller for ``seconds`` from now (a halt is never shortened)."""
        self.halted_until = max(self.halted_until, self.clock() + seconds)
        self.halt_status = status
        self.halts += 1
        self._notify()

    # ------------------------------------------------------------------ waiting

    def pause_s(self, *, weight: int, orders: int = 0) -> float:
        """Seconds before a call costing ``weight`` and ``orders`` fits (0: now)."""
        now = self.clock()
        pause = max(0.0, self.halted_until - now)
        for b in self._buckets.values():
            cost = b.cost(weight, orders)
            if cost > 0:
                b.advance(now)
                pause = max(pause, b.pause(cost, now, self.margin_s))
        return pause

    def _start(self, weight: int, orders: int) -> _Ticket:
        for b in self._buckets.values():
            cost = b.cost(weight, orders)
            if cost > 0:
                b.take(cost)
        ticket = _Ticket(self, weight, orders)
        self._pending.add(ticket)
        return ticket

    def release(self, ticket: _Ticket) -> None:
        """The call is over (answered, failed or cancelled)."""
        self._pending.discard(ticket)

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def _race(self, seconds: float | None, *, wake: bool) -> None:
        """Wait ``seconds`` (None: until woken), or until the state changes (``wake``), or
        until the stop event; :class:`Stopped` when it is set."""
        stop = self.stop
        if stop is not None and stop.is_set():
            raise Stopped("stopped while waiting for the venue's request budget")
        futures: list[asyncio.Future[Any]] = []
        if seconds is not None:
            futures.append(asyncio.ensure_future(self.asleep(seconds)))
        if wake:
            if self._wake is None:
                self._wake = asyncio.Event()
            futures.append(asyncio.ensure_future(self._wake.wait()))
        if stop is not None:
            futures.append(asyncio.ensure_future(stop.wait()))
        start = self.clock()
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in futures:
                f.cancel()
            self.waited_s += max(0.0, self.clock() - start)
        if stop is not None and stop.is_set():
            raise Stopped("stopped while waiting for the venue's request budget")

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (through ``asleep``) unless the stop event ends it first
        (:class:`Stopped`): the client's retry waits go through it."""
        await self._race(seconds, wake=False)

    async def acquire(self, *, weight: int, orders: int = 0,
                      priority: bool | None = None) -> _Ticket:
        """Wait until a call costing ``weight`` and ``orders`` fits, and count it.

        ``priority`` (default: ``orders > 0`` or inside :func:`order_scope`): an order's
        call, which reads make way for. Release the ticket when the call is over
        (:meth:`use` does both)."""
        first = (orders > 0 or _PRIORITY.get()) if priority is None else priority
        role = "order" if first else "read"
        waiting = False
        try:
            while True:
                pause = self.pause_s(weight=weight, orders=orders)
                held = not first and weight > 0 and self._orders_needing_weight > 0
                if pause <= 0 and not held:
                    return self._start(weight, orders)
                if not waiting:
                    waiting = True
                    self._waiting[role] += 1
                    self._orders_needing_weight += int(first and weight > 0)
                await self._race(pause if pause > 0 else None, wake=True)
        finally:
            if waiting:
                self._waiting[role] -= 1
                self._orders_needing_weight -= int(first and weight > 0)
                self._notify()

    @contextlib.asynccontextmanager
    async def use(self, *, weight: int, orders: int = 0,
                  priority: bool | None = None) -> AsyncIterator[None]:
        """``async with budget.use(weight=5): await call()``: waits, counts the call, and
        matches the venue's answer to it (see :meth:`acquire`)."""
        ticket = await self.acquire(weight=weight, orders=orders, priority=priority)
        token = _CURRENT.set(ticket)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            self.release(ticket)

    @contextlib.contextmanager
    def use_sync(self, *, weight: int, orders: int = 0) -> Iterator[None]:
        """The sync form (one caller, e.g. the backfill): sleeps the pause once, then counts
        the call."""
        pause = self.pause_s(weight=weight, orders=orders)
        if pause > 0:
            self.waited_s += pause
            self.sleep_sync(pause)
        ticket = self._start(weight, orders)
        token = _CURRENT.set(ticket)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            self.release(ticket)

    # ------------------------------------------------------------------ metrics

    def state(self) -> BudgetState:
        """The buckets' use and what is left, the halt, the callers waiting (for metrics)."""
        now = self.clock()
        buckets = []
        for name, b in self._buckets.items():
            b.advance(now)
            buckets.append(BucketState(name, b.limit.kind, b.limit.limit, b.capacity,
                                       b.limit.window_s, b.used, b.left()))
        halted = self.halted_until > now
        return BudgetState(
            buckets=tuple(buckets), halted=halted,
            halted_until=self.halted_until if halted else None,
            halt_status=self.halt_status if halted else None, halts=self.halts,
            waiting_reads=self._waiting["read"], waiting_orders=self._waiting["order"],
            waited_s=self.waited_s,
        )
