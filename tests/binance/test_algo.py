"""Stop-loss and take-profit as Binance keeps them since 2025-12-09: algo (conditional)
orders. The client places them on ``POST /fapi/v1/algoOrder``, looks them up and cancels
them by ``clientAlgoId``, and reads a triggered one's fill from the order its trigger
created; against the simulator, on real bars, with the exchange's own books checked."""

from __future__ import annotations

from engine.exchange_sim.market import MarketData

from .conftest import venue

BAR = 300_000


def _advance(server, ms: int) -> None:  # type: ignore[no-untyped-def]
    now = server.clock.advance(ms)
    server.exchange.catch_up(now)


async def test_stop_is_an_algo_order_until_it_triggers_and_fills(market: MarketData) -> None:
    async with venue(market) as (server, client, _e, _s):
        await client.configure(leverage=5, margin_mode="cross")
        entry = await client.market_order("BTCUSDT", "buy", 0.01, client_order_id="e-in",
                                          reduce_only=False)
        last = server.exchange.last["BTCUSDT"]
        # a stop just under the price: the next bars cross it
        stop = f"{round(last * 0.999, 1):.1f}"
        target = f"{round(last * 1.5, 1):.1f}"  # far away: never reached
        placed = await client.trigger_order("BTCUSDT", "STOP_MARKET", "sell", stop,
                                            client_order_id="e-stop")
        tp = await client.trigger_order("BTCUSDT", "TAKE_PROFIT_MARKET", "sell", target,
                                        client_order_id="e-tp")
        ex = server.exchange
        algo_ids = {o.client_id for o in ex.algo.values()}
        plain_ids = {o.client_id for o in ex.orders.values()}
        resting = await client.open_algo_orders("BTCUSDT")
        before = await client.lookup("BTCUSDT", "e-stop", algo=True)
        for _ in range(48):  # up to 4 hours, bar by bar
            _advance(server, BAR)
            got = await client.lookup("BTCUSDT", "e-stop", algo=True)
            if got is not None and got.status == "closed":
                break
        acc = await client.account()
        canceled = await client.cancel_by_client_id("BTCUSDT", "e-tp", algo=True)
        unknown = await client.lookup("BTCUSDT", "never-sent", algo=True)
    assert entry.status == "closed" and entry.filled == 0.01
    assert placed.status == "open" and tp.status == "open" and placed.exchange_order_id
    assert {"e-stop", "e-tp"} <= algo_ids and not ({"e-stop", "e-tp"} & plain_ids)
    assert sorted(r.client_order_id for r in resting) == ["e-stop", "e-tp"]
    assert before is not None and before.status == "open" and before.filled == 0.0
    assert got is not None and got.status == "closed", "the stop never triggered"
    assert got.filled == 0.01 and got.average <= float(stop) * 1.01
    assert got.exchange_order_id == placed.exchange_order_id  # the algo id, not the child's
    assert got.update_ms > got.time_ms  # filled after it was placed
    assert acc.qty[0] == 0.0  # the stop closed the position
    assert canceled is not None and canceled.status == "canceled" and canceled.filled == 0.0
    assert unknown is None
