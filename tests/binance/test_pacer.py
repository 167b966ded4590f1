"""The one pacer: it waits for the next window when a call would cross the weight or order
budget read from the venue's headers; a count from an earlier window no longer binds."""

from __future__ import annotations

import asyncio

from engine.binance import Budget, Pacer
from engine.binance.pacer import WEIGHT_HEADER, budgets_from_rate_limits, default_budgets
from engine.exchange_sim.market import MarketData
from engine.timeutil import parse_time

from .conftest import Sleeps, venue

ORDERS_10S = "X-MBX-ORDER-COUNT-10S"


def test_waits_only_when_the_next_call_would_cross() -> None:
    now = [1_000.0]
    slept: list[float] = []
    pacer = Pacer([Budget("weight", WEIGHT_HEADER, 100, 60.0), Budget("orders", ORDERS_10S, 5, 10.0)],
                  clock=lambda: now[0], sleep=slept.append)
    pacer.before(weight=10)  # nothing read yet: nothing to wait for
    pacer.observe({"x-mbx-used-weight-1m": "90", "x-mbx-order-count-10s": "5"})
    pacer.before(weight=10)  # 90 + 10 = 100: fits
    pacer.before(weight=0, orders=0)
    assert slept == []
    pacer.before(weight=11)  # 101 > 100: to the next minute (1020 s) and a margin
    pacer.before(weight=0, orders=1)  # the 6th order in this 10 s window: to 1010 s
    assert [round(s, 3) for s in slept] == [20.05, 10.05]
    assert round(pacer.waited, 3) == 30.1
    now[0] = 1_010.5  # a new 10 s window; the weight minute is still the same
    assert pacer.pause_s(weight=0, orders=1) == 0.0
    assert round(pacer.pause_s(weight=11), 3) == 9.55


def test_async_waits_through_the_injected_sleep() -> None:
    sleeps = Sleeps()
    pacer = Pacer([Budget("weight", WEIGHT_HEADER, 20, 1.0)], clock=lambda: 7.25, asleep=sleeps)
    pacer.observe({WEIGHT_HEADER: "15"})
    asyncio.run(pacer.abefore(weight=10))
    assert sleeps.calls == [0.8] and pacer.waited == 0.8


def test_budgets_from_exchange_info() -> None:
    limits = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ]
    got = budgets_from_rate_limits(limits, share=0.5)
    assert got == [
        Budget("weight", "X-MBX-USED-WEIGHT-1M", 1200, 60.0),
        Budget("orders", "X-MBX-ORDER-COUNT-1M", 600, 60.0),
        Budget("orders", "X-MBX-ORDER-COUNT-10S", 150, 10.0),
    ]
    assert budgets_from_rate_limits(limits[:1], share=0.5, weight_window_s=1.0)[0].window_s == 1.0
    assert {b.header for b in default_budgets()} == {b.header for b in got}


async def test_client_reads_stay_under_the_servers_weight_limit(market: MarketData) -> None:
    """The server allows 40 weight per 1 s window; the client may use 20: seven klines pages
    (weight 10 each) need at least three windows, and the server never answers 429."""
    async with venue(market, weight_limit=40, weight_window_s=1.0) as (server, client, _, s):
        client.pacer = pacer = Pacer([Budget("weight", WEIGHT_HEADER, 20, 1.0)])
        start = parse_time("2023-12-10")
        now = server.clock.now_ms()
        bars = await client.closed_bars("ETHUSDT", start=start, end=now, now=now)
        counts = server.faults.snapshot()["counts"]
    assert len(bars) == (parse_time("2024-01-01") - start) // 300_000
    assert pacer.waited > 0.5 and client.retries == 0 and s.calls == [] and counts == {}


async def test_client_orders_wait_when_the_order_count_is_near_the_budget(
    market: MarketData,
) -> None:
    """The order counts come from the simulator's real X-MBX-ORDER-COUNT-10S headers; the
    pacer's clock is fixed at 5 s into a 10 s window, so its wait is known exactly."""
    async with venue(market) as (server, client, _, _s):
        sleeps = Sleeps()
        client.pacer = Pacer([Budget("orders", ORDERS_10S, 3, 10.0)], clock=lambda: 5.0,
                             asleep=sleeps)
        for n, side in enumerate(("buy", "sell", "buy", "sell")):
            await client.market_order("BTCUSDT", side, 0.01, client_order_id=f"p-{n}",
                                      reduce_only=False)
            if n == 2:
                assert sleeps.calls == []  # three orders fit
        reads = await client.account()
    assert sleeps.calls == [5.05]  # the 4th order waited for the next window
    assert reads.qty[0] == 0.0
