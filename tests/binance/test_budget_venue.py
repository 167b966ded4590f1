"""The request budget in a BinanceClient against the simulator's real rate limiter: many
concurrent readers stay under its weight limit, orders pass queued reads, a 429 halts every
caller until its Retry-After (a 418 too), and a stop ends a halt or a retry wait at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from engine.binance import Limit, RequestBudget, RetryPolicy, Stopped, VenueUnavailable
from engine.binance.budget import WEIGHT_HEADER
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.server import SimServer

from .conftest import Scripted, VirtualTime, settle, until, venue

ORDERS_10S = "X-MBX-ORDER-COUNT-10S"


@contextmanager
def charges(server: SimServer) -> Iterator[list[tuple[int, int]]]:
    """Every request the simulator's limiter charged, in arrival order: ``(weight, the IP's
    total in that window)`` (nothing is recorded for a request it refused)."""
    seen: list[tuple[int, int]] = []
    real = server.limiter.charge

    def charge(ip: str, weight: int, now: float) -> int:
        used = real(ip, weight, now)
        seen.append((weight, used))
        return used

    server.limiter.charge = charge  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        server.limiter.charge = real  # type: ignore[method-assign]


async def test_many_concurrent_readers_stay_under_the_simulators_weight_limit(
    market: MarketData,
) -> None:
    """The simulator allows 200 weight per 1 s window; 20 readers asking 400 weight at once
    get it over at least three windows, and its own counter never passes the limit."""
    budget = RequestBudget(windows={"weight_1m": 1.0})
    async with venue(market, weight_limit=200, weight_window_s=1.0, budget=budget) as (
            server, client, _, sleeps):
        await client.venue_specs()  # the venue's rateLimits size the budget
        assert budget.state().bucket("weight_1m").capacity == 160
        with charges(server) as seen:

            async def reader() -> None:
                for _ in range(4):
                    await client.account()  # weight 5

            t0 = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(reader() for _ in range(20))), 30)
            elapsed = time.monotonic() - t0
        counts = server.faults.snapshot()["counts"]
    assert len(seen) == 80 and max(total for _, total in seen) <= 200
    assert elapsed > 1.0 and budget.state().waited_s > 1.0  # it had to wait for windows
    assert counts == {} and client.retries == 0 and sleeps.calls == []
    assert budget.state().halts == 0


async def test_orders_pass_ahead_of_queued_reads(market: MarketData) -> None:
    vt = VirtualTime(auto=False)
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 25, 60.0),
                            Limit("orders", ORDERS_10S, 300, 10.0)],
                           clock=vt.clock, asleep=vt.asleep)
    async with venue(market, budget=budget) as (server, client, _, _s):
        budget.observe({WEIGHT_HEADER: "20"})  # the minute's share is spent
        with charges(server) as seen:
            reads = [asyncio.create_task(client.account()) for _ in range(3)]
            await until(lambda: budget.state().waiting_reads == 3)
            assert seen == []
            # a new order costs no weight: it never waits behind the reads
            done = await asyncio.wait_for(client.market_order(
                "BTCUSDT", "buy", 0.01, client_order_id="prio-1", reduce_only=False), 5)
            assert done.status == "closed" and seen == [(0, 1)]
            cancel = asyncio.create_task(client.cancel_by_client_id("BTCUSDT", "prio-1"))
            await until(lambda: budget.state().waiting_orders == 1)
            assert len(seen) == 1
            vt.advance(61.0)  # the next minute: the cancel goes first
            await asyncio.wait_for(asyncio.gather(*reads, cancel), 5)
    assert seen[1][0] == 1  # DELETE /order before any of the queued account reads (5 each)
    assert sorted(w for w, _ in seen) == [0, 1, 1, 5, 5, 5]


async def test_a_429_halts_every_caller_until_retry_after(market: MarketData) -> None:
    vt = VirtualTime(auto=False)
    budget = RequestBudget(clock=vt.clock, asleep=vt.asleep)
    async with venue(market, budget=budget) as (server, client, _, sleeps):
        server.faults = faults = Scripted()
        faults.burst = 5  # every request answers 429 Retry-After: 5
        first = asyncio.create_task(client.server_time())
        await until(lambda: budget.state().waiting_reads == 1)
        state = budget.state()
        assert (state.halted, state.halt_status) == (True, 429)
        assert state.halted_until == vt.now + 5 and sleeps.calls == [5.0]
        with charges(server) as seen:
            read = asyncio.create_task(client.account())
            order = asyncio.create_task(client.market_order(
                "BTCUSDT", "buy", 0.01, client_order_id="halt-1", reduce_only=False))
            await until(lambda: budget.state().waiting_reads == 2)
            await until(lambda: budget.state().waiting_orders == 1)
            faults.burst = None
            vt.advance(4.9)
            await settle()
            assert seen == [] and not any(t.done() for t in (first, read, order))
            vt.advance(0.1)
            t, acc, placed = await asyncio.wait_for(asyncio.gather(first, read, order), 5)
        counts = server.faults.snapshot()["counts"]
    assert counts == {"http_429_burst": 1}  # only the first request reached the venue
    assert sorted(w for w, _ in seen) == [0, 1, 5] and not budget.state().halted
    assert t > 0 and acc.wallet == 10_000.0 and placed.status == "closed"


async def test_a_418_ban_halts_for_its_retry_after(market: MarketData) -> None:
    """The simulator's limiter: over its weight limit 429, one more request 418 (ban_s)."""
    vt = VirtualTime()
    budget = RequestBudget(clock=vt.clock, asleep=vt.asleep)
    async with venue(market, budget=budget, max_attempts=3, weight_limit=2, ban_after=0,
                     ban_s=120.0, load=False) as (_, client, _e, _s):
        await client.server_time()
        await client.server_time()
        with pytest.raises(VenueUnavailable):
            await client.server_time()  # 429, then 418 twice (the ban holds in real time)
    assert budget.halt_status == 418 and budget.halts == 3
    assert len(vt.sleeps) == 2 and 0 < vt.sleeps[0] <= 60 and vt.sleeps[1] == 120.0
    assert budget.state().halted_until == vt.now + 120.0


async def test_orders_wait_when_the_order_count_is_near_the_budget(market: MarketData) -> None:
    """The order counts come from the simulator's X-MBX-ORDER-COUNT-10S; 80 % of 4 is 3."""
    vt = VirtualTime()
    budget = RequestBudget([Limit("orders", ORDERS_10S, 4, 10.0)], clock=vt.clock,
                           asleep=vt.asleep)
    async with venue(market, budget=budget) as (_, client, _e, _s):
        for n, side in enumerate(("buy", "sell", "buy", "sell")):
            await client.market_order("BTCUSDT", side, 0.01, client_order_id=f"p-{n}",
                                      reduce_only=False)
            if n == 2:
                assert vt.sleeps == [] and budget.state().bucket("orders_10s").used == 3
        reads = await client.account()
    assert vt.sleeps == [pytest.approx(10.05)]  # the 4th order waited for the next window
    assert reads.qty[0] == 0.0


async def stop_soon(stop: asyncio.Event, task: asyncio.Task[Any]) -> float:
    """Set ``stop`` once ``task`` waits; the seconds until the task ended (with Stopped)."""
    await asyncio.sleep(0.3)
    assert not task.done()
    t0 = time.monotonic()
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(task, 2.0)
    return time.monotonic() - t0


async def test_a_stop_ends_a_429_halt_and_a_retry_wait_at_once(market: MarketData) -> None:
    """Real clock and sleeps: the default retry policy sleeps through the budget, so the
    stop event ends a backoff as it ends a halt."""
    stop = asyncio.Event()
    async with venue(market, budget=RequestBudget()) as (server, client, _, _s):
        client.budget.stop = stop
        client.retry = RetryPolicy(base_s=30.0, asleep=client.budget.sleep)
        server.faults = faults = Scripted()
        faults.burst = 60
        assert await stop_soon(stop, asyncio.create_task(client.account())) < 1.0
        assert client.budget.state().halted
        stop.clear()
        faults.burst, faults.before = None, 10**6  # 503s: a 30 s backoff
        client.budget.halted_until = 0.0
        assert await stop_soon(stop, asyncio.create_task(client.server_time())) < 1.0
