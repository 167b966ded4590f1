"""One idempotent send for every order kind: an order the exchange accepted is never sent
twice, whatever 5xx the answer was replaced by (counted on the exchange's side)."""

from __future__ import annotations

import math

import pytest

from engine.binance import BinanceClient, OrderRejected, OrderRequest, OrderResult, VenueUnavailable
from engine.exchange_sim.faults import FaultInjector, FaultSpec
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.server import SimServer

from .conftest import Scripted, orders_by_client_id, venue

KINDS = ("market", "limit", "STOP_MARKET", "TAKE_PROFIT_MARKET")


async def prepare(client: BinanceClient, kind: str, cid: str) -> None:
    """A trigger order closes a position: open one first (before any fault is armed)."""
    if kind not in ("market", "limit") and (await client.account()).qty[0] == 0.0:
        await client.market_order("BTCUSDT", "buy", 0.01, client_order_id=f"{cid}-pos",
                                  reduce_only=False)


async def place(client: BinanceClient, server: SimServer, kind: str, cid: str) -> OrderResult:
    """One order of ``kind`` through the client's public methods (as live mode sends it)."""
    last = server.exchange.last["BTCUSDT"]
    if kind == "market":
        return await client.market_order("BTCUSDT", "buy", 0.01, client_order_id=cid,
                                         reduce_only=False)
    if kind == "limit":
        return await client.market_order("BTCUSDT", "buy", 0.01, client_order_id=cid,
                                         reduce_only=False, limit_price=round(last * 0.99, 1))
    price = last * (0.99 if kind == "STOP_MARKET" else 1.01)  # a long's stop / target
    return await client.trigger_order("BTCUSDT", kind, "sell", f"{price:.1f}", client_order_id=cid)


def posted(server: SimServer) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in server.faults.snapshot(last=10_000)["events"] if e["kind"] == "http_5xx"]


# (order POSTs answered 503 after accepting, requests answered 503 before anything happened)
# -> the 503s in order (accepted or not), retries, and whether the order was found, not resent
SCENARIOS = {
    "after accept": ((1, 0), [True], 1, True),
    "after accept, then two lookups fail": ((1, 2), [True, False, False], 3, True),
    "before accept": ((0, 1), [False], 1, False),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
async def test_a_5xx_never_doubles_an_order(market: MarketData, kind: str, scenario: str) -> None:
    (after, before), answers, retries, found = SCENARIOS[scenario]
    async with venue(market) as (server, client, events, sleeps):
        cid = f"t-{kind.lower()}-1"
        await prepare(client, kind, cid)
        server.faults = faults = Scripted()
        faults.after, faults.before = after, before
        r = await place(client, server, kind, cid)
        held = orders_by_client_id(server)
        ex = server.exchange  # an algo order's exchange id is its algoId
        exchange_id = next(str(o.order_id if o.algo_id is None else o.algo_id)
                           for o in [*ex.orders.values(), *ex.algo.values()] if o.client_id == cid)
        post_events = posted(server)
    assert held[cid] == 1, "the order was sent twice"
    assert r.client_order_id == cid and r.exchange_order_id == exchange_id
    assert [e["accepted"] for e in post_events] == answers
    assert (f"order {cid} was accepted; not resent" in events.messages()) is found
    assert any("status unknown; looking it up" in m for m in events.messages())
    assert client.retries == retries == len(sleeps.calls)
    if kind == "market":
        assert r.status == "closed" and r.filled == pytest.approx(0.01)
    else:
        assert r.status == "open" and r.filled == 0.0


async def test_a_resend_of_an_accepted_client_id_returns_that_order(market: MarketData) -> None:
    """-4116 (the client id is already open): the order is looked up, not doubled or rejected."""
    async with venue(market) as (server, client, _, _s):
        price = round(server.exchange.last["BTCUSDT"] * 0.99, 1)
        first = await client.send(OrderRequest("BTCUSDT", "buy", "limit", "dup-1", qty=0.01,
                                               price=price))
        again = await client.send(OrderRequest("BTCUSDT", "buy", "limit", "dup-1", qty=0.01,
                                               price=price))
        held = orders_by_client_id(server)
    assert held["dup-1"] == 1
    assert again.exchange_order_id == first.exchange_order_id and again.status == "open"


async def test_rejected_order_is_typed_and_not_retried(market: MarketData) -> None:
    async with venue(market) as (server, client, _, sleeps):
        with pytest.raises(OrderRejected) as info:  # far beyond the wallet: -2019
            await client.market_order("BTCUSDT", "buy", 50.0, client_order_id="big-1",
                                      reduce_only=False)
        with pytest.raises(OrderRejected) as below:  # under MIN_NOTIONAL: -4164
            await client.market_order("BTCUSDT", "buy", 0.001, client_order_id="tiny-1",
                                      reduce_only=False)
        with pytest.raises(OrderRejected) as now:  # a stop that would trigger at once: -2021
            last = server.exchange.last["BTCUSDT"]
            await client.trigger_order("BTCUSDT", "STOP_MARKET", "sell", f"{last * 1.01:.1f}",
                                       client_order_id="stop-1")
        held = orders_by_client_id(server)
    assert (info.value.code, below.value.code, now.value.code) == (-2019, -4164, -2021)
    assert info.value.client_order_id == "big-1" and "Margin is insufficient" in str(info.value)
    assert "\n" not in str(info.value)  # the venue's answer only: live mode logs it as message
    assert not {"big-1", "tiny-1", "stop-1"} & set(held)
    assert client.retries == 0 and sleeps.calls == []


@pytest.mark.parametrize("accepted", [False, True])
async def test_an_order_that_never_gets_through_is_unavailable_not_doubled(
    market: MarketData, accepted: bool
) -> None:
    """Every request answers 503 (after the first POST was accepted, or before it): the send
    gives up with VenueUnavailable naming the order and whether its status is unknown."""
    async with venue(market, max_attempts=4) as (server, client, events, sleeps):
        server.faults = faults = Scripted()
        faults.after, faults.before = int(accepted), 10**6
        status = "its status is unknown"
        with pytest.raises(VenueUnavailable, match=f"order never-1 .* 4 attempts; {status}"):
            await client.market_order("BTCUSDT", "buy", 0.01, client_order_id="never-1",
                                      reduce_only=False)
        held = orders_by_client_id(server)
    assert held.get("never-1", 0) == int(accepted)  # the accepted one exists once, no other
    assert client.retries >= 3 and len(sleeps.calls) == client.retries


async def test_random_5xx_many_orders_each_once(market: MarketData) -> None:
    """The seeded fault (half of the 503s on order POSTs come after the order was accepted)
    over every kind: each client id exists once, and every send returned its order."""
    async with venue(market, max_attempts=12) as (server, client, events, _):
        await client.market_order("BTCUSDT", "buy", 0.05, client_order_id="pos-0",
                                  reduce_only=False)
        server.faults = FaultInjector(FaultSpec(http_5xx=0.35), seed=11)
        sent: dict[str, OrderResult] = {}
        for n in range(5):  # 10 stop/target orders: MAX_NUM_ALGO_ORDERS (10) allows no more
            for kind in KINDS:
                cid = f"r{n}-{kind.lower()}"
                sent[cid] = await place(client, server, kind, cid)
        held = orders_by_client_id(server)
        events_5xx = posted(server)
    assert all(held[cid] == 1 for cid in sent), "an order was sent twice"
    assert all(r.client_order_id == cid for cid, r in sent.items())
    accepted = [e for e in events_5xx if e["accepted"]]
    assert accepted, "the seed must answer 503 after accepting some orders"
    assert sum("was accepted; not resent" in m for m in events.messages()) >= len(accepted)
    assert not math.isnan(sent["r0-market"].average)
