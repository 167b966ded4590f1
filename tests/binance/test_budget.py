"""The request budget on its own: buckets at 80 % of the venue's limits, the venue's count
only ever lowering what is left, halts on 429/418, and waits that a stop event or a
cancellation ends within a second."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.binance import Limit, RequestBudget, Stopped, limits_from_rate_limits
from engine.binance.budget import BINANCE_LIMITS, WEIGHT_HEADER

from .conftest import VirtualTime, settle

ORDERS_10S = "X-MBX-ORDER-COUNT-10S"
RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


def test_limits_from_exchange_info() -> None:
    got = limits_from_rate_limits(RATE_LIMITS)
    assert sorted(got, key=lambda x: x.name) == sorted(BINANCE_LIMITS, key=lambda x: x.name)
    assert [x.name for x in got] == ["weight_1m", "orders_1m", "orders_10s"]
    short = limits_from_rate_limits(RATE_LIMITS[:1], windows={"weight_1m": 1.0})
    assert short == [Limit("weight", WEIGHT_HEADER, 2400, 1.0)]
    budget = RequestBudget(clock=lambda: 0.0)
    budget.configure(RATE_LIMITS)
    state = budget.state()
    assert [(b.name, b.limit, b.capacity) for b in state.buckets] == [
        ("weight_1m", 2400, 1920), ("orders_1m", 1200, 960), ("orders_10s", 300, 240)]
    budget.configure([])  # a venue that lists none keeps what it had
    assert budget.state() == state


def test_tokens_refill_over_the_window_and_the_window_caps_the_use() -> None:
    now = [600.0]
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 100, 60.0)], clock=lambda: now[0])
    for _ in range(8):
        assert budget.pause_s(weight=10) == 0.0
        budget.release(budget._start(10, 0))
    state = budget.state().bucket("weight_1m")
    assert (state.capacity, state.used, state.left) == (80, 80, 0.0)
    assert round(budget.pause_s(weight=10), 3) == 60.05  # the window's 80 are used
    now[0] = 630.0  # 30 s refill 40 tokens, but the minute's use still binds
    assert budget.state().bucket("weight_1m").left == 0.0
    now[0] = 660.0  # a new minute: 60 s refilled all 80
    assert budget.pause_s(weight=80) == 0.0
    for _ in range(8):
        budget.release(budget._start(10, 0))
    now[0] = 663.0  # same minute, the window has room (80 used) no more; tokens: 4 refilled
    assert budget.state().bucket("weight_1m").used == 80
    assert round(budget.pause_s(weight=10), 3) == 57.05


def test_tokens_bind_within_a_window() -> None:
    now = [605.0]
    budget = RequestBudget([Limit("orders", ORDERS_10S, 10, 10.0)], clock=lambda: now[0])
    for _ in range(8):
        budget.release(budget._start(0, 1))
    now[0] = 610.0  # a new 10 s window, but only 5 s of refill: 4 tokens
    assert budget.state().bucket("orders_10s").left == 4.0
    assert budget.pause_s(weight=0, orders=4) == 0.0
    assert budget.pause_s(weight=0, orders=6) == pytest.approx(2.5)  # 2 more tokens at 0.8/s
    assert budget.pause_s(weight=5) == 0.0  # weight costs nothing on an ORDERS bucket


def test_the_venues_count_only_lowers_what_is_left() -> None:
    now = [120.0]
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 1000, 60.0)], clock=lambda: now[0])
    for _ in range(5):
        budget.release(budget._start(10, 0))
    budget.observe({"x-mbx-used-weight-1m": "20"})  # less than we sent: ours is kept
    assert budget.state().bucket("weight_1m").used == 50
    budget.observe({"X-MBX-USED-WEIGHT-1M": "700"})  # another process on this IP
    assert budget.state().bucket("weight_1m").used == 700
    assert budget.state().bucket("weight_1m").left == 100.0
    budget.observe({"X-MBX-USED-WEIGHT-1M": "650"})  # an older answer never raises it again
    assert budget.state().bucket("weight_1m").used == 700
    budget.observe({"X-MBX-USED-WEIGHT-1M": "oops"})
    now[0] = 180.0  # a new minute: the count read in the last one no longer binds
    assert budget.state().bucket("weight_1m").used == 0


async def test_calls_not_answered_yet_count_on_top_of_the_venues_count() -> None:
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 1000, 60.0)], clock=lambda: 60.0)
    other = await budget.acquire(weight=10)  # sent, not answered yet
    async with budget.use(weight=30):
        budget.observe({WEIGHT_HEADER: "100"})  # the answer to the call of this block
    assert budget.state().bucket("weight_1m").used == 110  # 100 counted + 10 on the way
    budget.release(other)
    budget.observe({WEIGHT_HEADER: "105"})
    assert budget.state().bucket("weight_1m").used == 110


def test_429_and_418_halt_until_retry_after() -> None:
    now = [1000.0]
    budget = RequestBudget(clock=lambda: now[0])
    budget.observe({"retry-after": "7"}, status=429)
    state = budget.state()
    assert (state.halted, state.halted_until, state.halt_status, state.halts) == (
        True, 1007.0, 429, 1)
    assert budget.pause_s(weight=0, orders=1) == 7.0  # orders too
    budget.observe({"Retry-After": "3"}, status=429)  # a halt is never shortened
    assert budget.state().halted_until == 1007.0
    budget.observe({"Retry-After": "120"}, status=418)
    assert (budget.state().halted_until, budget.state().halt_status) == (1120.0, 418)
    budget.observe({"Retry-After": "120"}, status=503)  # not a rate limit: no halt
    now[0] = 1120.0
    state = budget.state()
    assert (state.halted, state.halted_until, state.halt_status, state.halts) == (
        False, None, None, 3)
    now[0] = 1150.5
    budget.observe({}, status=429)  # no Retry-After: to the end of the weight minute
    assert budget.state().halted_until == 1200.0


async def test_a_stop_ends_a_wait_within_a_second() -> None:
    stop = asyncio.Event()
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 100, 60.0)], stop=stop)
    budget.observe({WEIGHT_HEADER: "80"})  # spent until the next minute
    waiter = asyncio.create_task(budget.acquire(weight=1))
    halted = asyncio.create_task(budget.sleep(30.0))  # a retry's backoff
    await settle(4)
    assert budget.state().waiting_reads == 1 and not waiter.done() and not halted.done()
    t0 = time.monotonic()
    stop.set()
    for task in (waiter, halted):
        with pytest.raises(Stopped):
            await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - t0 < 1.0
    assert budget.state().waiting_reads == 0
    with pytest.raises(Stopped):  # once stopped, a call that would wait fails at once
        await asyncio.wait_for(budget.acquire(weight=1), 0.1)
    budget.release(await asyncio.wait_for(budget.acquire(weight=0, orders=1), 0.1))  # fits


async def test_a_cancelled_wait_returns_within_a_second() -> None:
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 100, 60.0)])
    budget.observe({"Retry-After": "600"}, status=429)
    tasks = [asyncio.create_task(budget.acquire(weight=1)),
             asyncio.create_task(budget.acquire(weight=1, orders=1))]
    await settle(4)
    assert (budget.state().waiting_reads, budget.state().waiting_orders) == (1, 1)
    t0 = time.monotonic()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - t0 < 1.0
    state = budget.state()
    assert (state.waiting_reads, state.waiting_orders) == (0, 0)
    assert budget._orders_needing_weight == 0 and not budget._pending


async def test_a_waiting_order_goes_before_reads() -> None:
    vt = VirtualTime(600.0, auto=False)
    budget = RequestBudget([Limit("weight", WEIGHT_HEADER, 25, 60.0)], clock=vt.clock,
                           asleep=vt.asleep)
    budget.observe({WEIGHT_HEADER: "20"})  # this minute is spent
    got: list[str] = []

    async def call(name: str, weight: int, priority: bool) -> None:
        async with budget.use(weight=weight, priority=priority):
            got.append(name)

    reads = [asyncio.create_task(call(f"read{i}", 5, False)) for i in range(3)]
    await settle(2)
    order = asyncio.create_task(call("order", 5, True))
    await settle(2)
    assert got == [] and budget.state().waiting_orders == 1
    vt.advance(59.0)
    await settle(2)
    assert got == []
    vt.advance(1.05)  # the next minute and its margin
    await asyncio.wait_for(asyncio.gather(*reads, order), 1.0)
    assert got[0] == "order" and sorted(got[1:]) == ["read0", "read1", "read2"]
