"""BinanceClient's API (the one live mode calls) against the simulator: every answer decoded
into the typed records, each compared with what the venue holds."""

from __future__ import annotations

import math

import pytest

from engine.binance import Bar, OrderRequest, VenueFatal
from engine.errors import ExchangeError
from engine.exchange_sim.market import MarketData

from .conftest import SYMBOLS, ms, venue

BAR = 300_000


async def test_setup_and_market_data(market: MarketData) -> None:
    async with venue(market) as (server, client, events, _):
        assert client.market_ids == {"BTCUSDT": "BTC/USDT:USDT", "ETHUSDT": "ETH/USDT:USDT"}
        for _ in range(2):  # the second time every symbol answers "no need to change"
            await client.configure(leverage=3, margin_mode="isolated")
        book = server.exchange.book
        now = await client.server_time()
        start = ms("2023-12-31T20:00")
        bars = await client.closed_bars("BTCUSDT", start=start, end=now, now=now + BAR // 2)
        funding = await client.funding_events("ETHUSDT", start=ms("2023-12-01"), end=now)
        settled = await client.funding_settled("ETHUSDT", funding[-1][0])
        missing = await client.funding_settled("ETHUSDT", funding[-1][0] + 3_600_000)
    assert now == ms("2024-01-01") and events == []
    assert [int(book.leverage[s]) for s in SYMBOLS] == [3, 3]
    sb = market.bars["BTCUSDT"]
    assert [b.open_time for b in bars] == list(range(start, now, BAR))  # the open bar left out
    i = sb.index_of(bars[5].open_time)
    assert bars[5] == Bar("BTCUSDT", int(sb.open_time[i]), sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i])
    fb = market.bars["ETHUSDT"]
    want = [(int(t), float(r)) for t, r in zip(fb.funding_time, fb.funding_rate, strict=True)
            if ms("2023-12-01") <= t <= now]
    assert [(t, r) for t, r, _ in funding] == want and len(want) > 90  # every 8 h over December
    assert settled is not None and settled == funding[-1][1:]  # the same (rate, mark)
    assert all(m > 0 for _, _, m in funding)
    assert missing is None


async def test_unknown_symbol_and_bad_leverage(market: MarketData) -> None:
    async with venue(market, load=False) as (_, client, _e, _s):
        client.symbols = ("BTCUSDT", "DOGEUSDT")
        with pytest.raises(ExchangeError, match="does not list DOGEUSDT"):
            await client.load()
        client.symbols = SYMBOLS
        await client.load()
        with pytest.raises(VenueFatal, match="set leverage BTCUSDT: .*between 1 and 125"):
            await client.configure(leverage=500, margin_mode="cross")  # refused by ccxt itself
        with pytest.raises(VenueFatal, match="set margin mode BTCUSDT"):
            await client.configure(leverage=2, margin_mode="portfolio")


async def test_account_orders_lookup_cancel(market: MarketData) -> None:
    async with venue(market) as (server, client, _, _s):
        await client.configure(leverage=5, margin_mode="cross")
        filled = await client.market_order("ETHUSDT", "buy", 0.5, client_order_id="c-buy",
                                           reduce_only=False)
        acc = await client.account()
        last = server.exchange.last["ETHUSDT"]
        resting = await client.send(OrderRequest("ETHUSDT", "sell", "limit", "c-lim", qty=0.5,
                                                 price=round(last * 1.02, 2), reduce_only=True))
        listed = await client.open_orders("ETHUSDT")
        found = await client.lookup("ETHUSDT", "c-lim")
        await client.cancel("ETHUSDT", resting.exchange_order_id)
        after_cancel = await client.open_orders("ETHUSDT")
        again = await client.send(OrderRequest("ETHUSDT", "sell", "limit", "c-lim2", qty=0.5,
                                               price=round(last * 1.02, 2), reduce_only=True))
        canceled = await client.cancel_by_client_id("ETHUSDT", "c-lim2")
        unknown = await client.cancel_by_client_id("ETHUSDT", "never-sent")
        absent = await client.lookup("ETHUSDT", "never-sent")
        pos = server.exchange.book.qty("ETHUSDT")
    assert filled.status == "closed" and filled.filled == 0.5 and filled.average > 0
    assert filled.client_order_id == "c-buy" and filled.time_ms == ms("2024-01-01")
    assert acc.qty.tolist() == [0.0, 0.5] and acc.qty[1] == pos
    assert acc.entry_price[1] == filled.average and acc.wallet < 10_000.0  # the taker fee
    assert math.isclose(acc.margin[1], 0.5 * filled.average / 5, rel_tol=1e-9)
    assert resting.status == "open" and resting.filled == 0.0
    assert resting.average == round(last * 1.02, 2)  # not filled: ccxt's average is its price
    assert [o["clientOrderId"] for o in listed] == ["c-lim"]
    assert found is not None and found.exchange_order_id == resting.exchange_order_id
    assert after_cancel == [] and again.status == "open"
    assert canceled is not None and canceled.status == "canceled"
    assert unknown is None and absent is None


def test_order_request_is_checked() -> None:
    with pytest.raises(ValueError, match="order kind"):
        OrderRequest("BTCUSDT", "buy", "STOP_LIMIT", "x")
    with pytest.raises(ValueError, match="side"):
        OrderRequest("BTCUSDT", "BUY", "market", "x", qty=1.0)
    with pytest.raises(ValueError, match="price"):
        OrderRequest("BTCUSDT", "buy", "limit", "x", qty=1.0)
    with pytest.raises(ValueError, match="stop_price"):
        OrderRequest("BTCUSDT", "sell", "STOP_MARKET", "x")
    req = OrderRequest("BTCUSDT", "sell", "TAKE_PROFIT_MARKET", "x", stop_price="45000.0")
    assert req.trigger and req.describe() == "BTCUSDT sell TAKE_PROFIT_MARKET at 45000.0"
