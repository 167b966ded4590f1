"""Websocket paths as Binance serves them since 2026-04-23: /market (klines, mark price,
tickers), /public (book ticker), /private (user data by listenKey); the legacy /ws and
/stream answer 404 unless the simulator runs with ``legacy_ws``; a stream on the wrong path,
or one whose data the store does not hold, is refused with a message saying why."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import serve
from engine.exchange_sim.server import SimServer

from .conftest import KEY, make_config

BAR = 300_000


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    """The HTTP status a websocket handshake on ``url`` gets (101: it opened)."""
    try:
        async with http.ws_connect(url):
            return 101
    except aiohttp.WSServerHandshakeError as err:
        return err.status


async def _refusal(http: aiohttp.ClientSession, sim: SimServer, path: str) -> tuple[int, str]:
    async with http.get(sim.url + path, headers={"Connection": "Upgrade", "Upgrade": "websocket"}) as r:
        return r.status, await r.text()


async def _advance(http: aiohttp.ClientSession, sim: SimServer, ms: int) -> None:
    async with http.post(f"{sim.url}/sim/advance", params={"ms": str(ms)}) as r:
        assert r.status == 200


async def _recv(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        out.append(json.loads(msg.data))
    return out


async def test_legacy_paths_are_retired(market: MarketData) -> None:
    async with serve(make_config(), market=market) as sim, aiohttp.ClientSession() as http:
        for path in ("/ws/btcusdt@kline_5m", "/stream?streams=btcusdt@kline_5m", "/ws"):
            status, text = await _refusal(http, sim, path)
            assert status == 404 and "2026-04-23" in text and "/market" in text, (path, text)
            assert await _status(http, sim.ws_url + path) == 404
        async with http.ws_connect(f"{sim.ws_url}/market/ws/btcusdt@kline_5m") as ws:
            await _advance(http, sim, BAR)
            frames = await _recv(ws, market.substeps)
    assert frames[-1]["k"]["x"] and frames[-1]["k"]["t"] == sim.config.start_ms


async def test_legacy_paths_behind_the_option(market: MarketData) -> None:
    async with serve(make_config(legacy_ws=True), market=market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/stream?streams=btcusdt@kline_5m/ethusdt@bookTicker") as ws:
            await _advance(http, sim, BAR)
            frames = await _recv(ws, 2 * market.substeps)
    assert {f["stream"] for f in frames} == {"btcusdt@kline_5m", "ethusdt@bookTicker"}


async def test_wrong_family_and_missing_data_are_refused(market: MarketData) -> None:
    async with serve(make_config(), market=market) as sim, aiohttp.ClientSession() as http:
        status, text = await _refusal(http, sim, "/public/ws/btcusdt@kline_5m")
        assert status == 400 and "served on /market, not /public" in text
        status, text = await _refusal(http, sim, "/market/stream?streams=btcusdt@bookTicker")
        assert status == 400 and "served on /public, not /market" in text
        status, text = await _refusal(http, sim, "/public/ws/btcusdt@depth20@100ms")
        assert status == 400 and "no order book data" in text
        status, text = await _refusal(http, sim, "/market/ws/btcusdt@aggTrade")
        assert status == 400 and "no trade data" in text
        status, text = await _refusal(http, sim, "/market/ws/btcusdt@kline_1m")
        assert status == 400 and "5m klines only" in text
        async with http.ws_connect(f"{sim.ws_url}/public/stream") as ws:
            await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 1}))
            await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 2}))
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
            replies = {r["id"]: r for r in await _recv(ws, 3)}
    assert replies[1]["error"]["code"] == 2 and "/market" in replies[1]["error"]["msg"]
    assert replies[2] == {"result": None, "id": 2} and replies[3]["result"] == ["btcusdt@bookTicker"]


async def test_market_tickers(market: MarketData) -> None:
    async with serve(make_config(), market=market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/market/stream?streams=btcusdt@ticker/btcusdt@miniTicker") as ws:
            await _advance(http, sim, BAR)
            frames = await _recv(ws, 2 * market.substeps)
        async with http.get(f"{sim.url}/fapi/v1/ticker/24hr", params={"symbol": "BTCUSDT"}) as r:
            rest = await r.json()
    last = [f["data"] for f in frames if f["stream"] == "btcusdt@ticker"][-1]
    mini = [f["data"] for f in frames if f["stream"] == "btcusdt@miniTicker"][-1]
    assert last["e"] == "24hrTicker" and mini["e"] == "24hrMiniTicker"
    assert last["c"] == mini["c"] == rest["lastPrice"] and last["o"] == rest["openPrice"]
    assert last["C"] == sim.config.start_ms + BAR and last["O"] == last["C"] - 86_400_000


async def _listen_key(http: aiohttp.ClientSession, sim: SimServer, method: str = "POST") -> Any:
    async with http.request(method, f"{sim.url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY}) as r:
        return await r.json()


async def test_private_paths_events_filter_and_expiry(market: MarketData) -> None:
    from engine.binance.venue import make_ccxt

    from .conftest import SECRET

    async with serve(make_config(), market=market) as sim, aiohttp.ClientSession() as http:
        status, text = await _refusal(http, sim, "/private/ws?listenKey=nope")
        assert status == 400 and "-1125" in text
        key = (await _listen_key(http, sim))["listenKey"]
        assert (await _refusal(http, sim, f"/market/ws/{key}"))[0] == 400  # user data is /private only
        every = await http.ws_connect(f"{sim.ws_url}/private/stream?listenKey={key}")
        orders = await http.ws_connect(f"{sim.ws_url}/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE")
        ex = make_ccxt(sim.url, KEY, SECRET, async_=True)
        try:
            await ex.load_markets()
            await ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
        finally:
            await ex.close()
        combined = await _recv(every, 4)
        only = await _recv(orders, 2)
        await _listen_key(http, sim, "DELETE")
        expired = await _recv(every, 1)
        closed = await every.receive(timeout=5)
        await every.close()
        await orders.close()
    assert [f["stream"] for f in combined] == [key] * 4
    assert [f["data"]["e"] for f in combined] == ["ORDER_TRADE_UPDATE", "TRADE_LITE", "ORDER_TRADE_UPDATE",
                                                  "ACCOUNT_UPDATE"]
    assert [f["e"] for f in only] == ["ORDER_TRADE_UPDATE"] * 2 and [f["o"]["x"] for f in only] == ["NEW", "TRADE"]
    assert expired[0]["data"]["e"] == "listenKeyExpired" and expired[0]["data"]["listenKey"] == key
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
