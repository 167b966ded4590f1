"""Fixtures: a real exchange simulator on 127.0.0.1 (port 0, frozen clock) in the test's own
event loop, and a BinanceClient on it whose retry sleeps are recorded, not slept, and whose
request budget runs on a virtual clock (a 429's halt passes at once unless a test holds it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.binance import BinanceClient, RequestBudget, RetryPolicy, make_ccxt
from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.faults import FaultInjector, FaultSpec
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import serve
from engine.exchange_sim.server import SimServer
from engine.timeutil import parse_end, parse_time

KEY = "binKey0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcd"
SECRET = "binSecret0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = "2024-01-01"


def ms(text: str) -> int:
    """A UTC time as epoch milliseconds (parse_time, never None here)."""
    t = parse_time(text)
    assert t is not None
    return t


@pytest.fixture(scope="session")
def market(usdm_store: Path) -> MarketData:
    """BTCUSDT + ETHUSDT 5m up to 2024-01-03; the replay starts 2024-01-01."""
    md, _ = MarketData.load(list(SYMBOLS), interval="5m", start_ms=ms(START),
                            end_ms=parse_end("2024-01-03"), store=usdm_store)
    return md


def config(**kw: Any) -> ExchangeSimSettings:
    base: dict[str, Any] = {
        "symbols": SYMBOLS, "interval": "5m", "start_ms": ms(START), "speed": 0.0,
        "port": 0, "api_key": KEY, "api_secret": SECRET, "ping_interval_s": 0.0,
    }
    base.update(kw)
    return ExchangeSimSettings(**base)


class Scripted(FaultInjector):
    """The simulator's fault injector driven by the test instead of a random draw: the next
    ``after`` order POSTs answer 503 -1007 AFTER the order was accepted, the next ``before``
    requests 503 -1001 before anything happens, and while ``burst`` is set every request
    answers 429 with that Retry-After. Every fault is still counted and logged."""

    def __init__(self) -> None:
        super().__init__(FaultSpec())
        self.after = 0
        self.before = 0
        self.burst: int | None = None

    def burst_retry_after(self, now: float | None = None) -> int | None:
        return self.burst

    def draw_5xx(self) -> bool:
        return self.after > 0 or self.before > 0

    def draw_after_accept(self) -> bool:
        if self.after > 0:
            self.after -= 1
            return True
        return False

    def record(self, kind: str, **detail: Any) -> None:
        if kind == "http_5xx" and not detail.get("accepted"):
            self.before = max(0, self.before - 1)
        super().record(kind, **detail)


class Sleeps:
    """An async sleep that records what it was asked and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


class VirtualTime:
    """A clock and an async sleep for a budget. ``auto``: a sleep moves the clock to its end at
    once; otherwise sleepers wait until the test moves the clock (:meth:`advance`)."""

    def __init__(self, start: float = 1_700_000_000.0, *, auto: bool = True) -> None:
        self.now = start
        self.auto = auto
        self.sleeps: list[float] = []
        self._moved: asyncio.Event | None = None

    def clock(self) -> float:
        return self.now

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        end = self.now + seconds
        if self.auto:
            self.now = max(self.now, end)
            await asyncio.sleep(0)
            return
        while self.now < end:
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self._moved is not None:
            self._moved.set()
            self._moved = None


def virtual_budget(vt: VirtualTime | None = None, **kw: Any) -> RequestBudget:
    """A RequestBudget on a virtual clock (Binance's limits unless ``kw`` says otherwise)."""
    vt = vt or VirtualTime()
    return RequestBudget(clock=vt.clock, asleep=vt.asleep, **kw)


async def settle(rounds: int = 20) -> None:
    """Let every task run until it waits for something outside the loop's ready queue
    (an HTTP answer gets a real pause)."""
    for _ in range(rounds):
        await asyncio.sleep(0.005)


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (real time, bounded) until ``cond()`` holds."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


class Events(list[tuple[str, str, str, dict[str, Any]]]):
    """The client's system events, as a list."""

    def __call__(self, severity: str, component: str, message: str, data: dict[str, Any]) -> None:
        self.append((severity, component, message, data))

    def messages(self) -> list[str]:
        return [m for _, _, m, _ in self]


@contextlib.asynccontextmanager
async def venue(
    market: MarketData, *, key: str = KEY, secret: str = SECRET, max_attempts: int = 8,
    load: bool = True, budget: RequestBudget | None = None, **kw: Any,
) -> AsyncIterator[tuple[SimServer, BinanceClient, Events, Sleeps]]:
    """A simulator (``kw`` -> ExchangeSimSettings) and a loaded BinanceClient on it (its
    budget ``budget``, else one on an auto-advancing :class:`VirtualTime`)."""
    async with serve(config(**kw), market=market) as server:
        ex = make_ccxt(server.url, key, secret, async_=True)
        events, sleeps = Events(), Sleeps()
        client = BinanceClient(ex, SYMBOLS, "5m", event=events,
                               retry=RetryPolicy(max_attempts=max_attempts, asleep=sleeps),
                               budget=budget or virtual_budget())
        try:
            if load:
                await client.load()
            yield server, client, events, sleeps
        finally:
            await ex.close()


def orders_by_client_id(server: SimServer) -> dict[str, int]:
    """How many orders the exchange holds under each client order id."""
    ex = server.exchange
    out: dict[str, int] = {}
    for o in [*ex.orders.values(), *ex.algo.values()]:
        out[o.client_id] = out.get(o.client_id, 0) + 1
    return out
