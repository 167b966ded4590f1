"""Kline and mark-price streams: raw and combined, x:true once per bar, in order, on time."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np

from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import serve
from engine.timeutil import parse_time

from .conftest import FINE_START, START, make_config

BAR = 300_000
SPEED = 3000.0  # a 5m bar every 0.1 s


async def _collect(ws: aiohttp.ClientWebSocketResponse, n_closed: int, *, timeout: float = 10.0) -> list[tuple[float, dict]]:
    out: list[tuple[float, dict]] = []
    closed = 0
    deadline = time.monotonic() + timeout
    while closed < n_closed:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        out.append((time.monotonic(), data))
        payload = data.get("data", data)
        if payload.get("e") == "kline" and payload["k"]["x"]:
            closed += 1
    return out


def _check_bars(frames: list[dict], market: MarketData, symbol: str, substeps: int) -> list[int]:
    sb = market.bars[symbol]
    closed = [f for f in frames if f["k"]["x"]]
    opens = [f["k"]["t"] for f in closed]
    assert opens == sorted(opens) and np.all(np.diff(opens) == BAR), "one x:true per bar, in order"
    for f in closed:
        k = f["k"]
        i = sb.index_of(k["t"])
        assert k["T"] == k["t"] + BAR - 1 and k["i"] == "5m" and k["s"] == symbol
        assert [float(k[c]) for c in "ohlcv"] == [sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i]]
        assert f["E"] == k["t"] + BAR
        partial = [p["k"] for p in frames if p["k"]["t"] == k["t"] and not p["k"]["x"]]
        if k["t"] != opens[0]:  # the first bar may have started before we connected
            assert len(partial) == substeps - 1
        highs = [float(p["h"]) for p in partial]
        assert highs == sorted(highs) and all(sb.l[i] <= float(p["l"]) <= float(p["h"]) <= sb.h[i] for p in partial)
        assert all(float(p["o"]) == sb.o[i] for p in partial)
    return opens


async def test_raw_stream_one_closed_frame_per_bar_at_speed(market: MarketData) -> None:
    cfg = make_config(speed=SPEED)
    async with serve(cfg, market=market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/market/ws/btcusdt@kline_5m") as ws:
            frames = await _collect(ws, 6)
    start = parse_time(START)
    opens = _check_bars([f for _, f in frames], market, "BTCUSDT", market.substeps)
    # on time: a bar's x:true never arrives before the market clock reaches its close,
    # and not much after (0.25 s of slack for a loaded 2-core CI box)
    t0 = sim.clock._t0
    for wall, f in frames:
        if f["k"]["x"]:
            due = t0 + (f["k"]["t"] + BAR - start) / (SPEED * 1000)
            assert due - 0.005 <= wall <= due + 0.25, (wall - due)
    assert opens[0] == start


async def test_combined_stream_subscribe_mid_connection(market: MarketData) -> None:
    cfg = make_config(speed=SPEED)
    async with serve(cfg, market=market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/market/stream?streams=btcusdt@kline_5m") as ws:
            first = await _collect(ws, 2)
            assert all(f["stream"] == "btcusdt@kline_5m" for _, f in first)
            await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_5m", "btcusdt@markPrice"], "id": 7}))
            got: list[dict] = []
            reply = None
            deadline = time.monotonic() + 10
            while sum(1 for f in got if f["stream"] == "ethusdt@kline_5m" and f["data"]["k"]["x"]) < 3:
                msg = json.loads((await ws.receive(timeout=deadline - time.monotonic())).data)
                if "id" in msg:
                    reply = msg
                else:
                    got.append(msg)
            assert reply == {"result": None, "id": 7}
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
            await ws.send_str(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 9}))
            await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["nosuch@kline_5m"], "id": 10}))
            replies = {}
            while len(replies) < 3:
                msg = json.loads((await ws.receive(timeout=5)).data)
                if "id" in msg:
                    replies[msg["id"]] = msg
            assert replies[8]["result"] == ["btcusdt@kline_5m", "btcusdt@markPrice", "ethusdt@kline_5m"]
            assert replies[9] == {"result": None, "id": 9}
            assert replies[10]["error"]["code"] == 2
    eth = [f["data"] for f in got if f["stream"] == "ethusdt@kline_5m"]
    _check_bars(eth, market, "ETHUSDT", market.substeps)
    marks = [f["data"] for f in got if f["stream"] == "btcusdt@markPrice"]
    assert marks and all(m["e"] == "markPriceUpdate" and m["s"] == "BTCUSDT" and float(m["p"]) > 0 for m in marks)
    # both symbols' closed bars in one connection stay in market-time order
    closes = [f["data"]["E"] for f in got if f["stream"].endswith("kline_5m") and f["data"]["k"]["x"]]
    assert closes == sorted(closes)


async def test_partials_from_one_minute_data(fine_market: MarketData) -> None:
    assert fine_market.substeps == 5  # 5m bars refined by the store's 1m bars
    cfg = make_config(FINE_START, speed=SPEED)
    async with serve(cfg, market=fine_market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/market/ws/ethusdt@kline_5m") as ws:
            frames = [f for _, f in await _collect(ws, 3)]
    _check_bars(frames, fine_market, "ETHUSDT", 5)
    sb = fine_market.bars["ETHUSDT"]
    for f in frames:
        k = f["k"]
        if k["x"]:
            continue
        i = sb.index_of(k["t"])
        m = (f["E"] - k["t"]) // 60_000  # minutes elapsed
        blk = sb.fine[i][:m]
        assert float(k["h"]) == blk[:, 1].max() and float(k["l"]) == blk[:, 2].min() and float(k["c"]) == blk[-1, 3]


async def test_server_ping_and_bad_stream(market: MarketData) -> None:
    cfg = make_config(speed=0.0, ping_interval_s=0.05)
    async with serve(cfg, market=market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/market/ws/btcusdt@kline_5m", autoping=False) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PING
            await ws.pong(msg.data)
        async with http.get(f"{sim.ws_url.replace('ws://', 'http://')}/market/ws/btcusdt@kline_1m") as resp:
            assert resp.status == 400
        await asyncio.sleep(0)


async def test_user_data_stream(market: MarketData) -> None:
    from engine.binance.venue import make_ccxt

    from .conftest import KEY, SECRET

    async with serve(make_config(), market=market) as sim, aiohttp.ClientSession() as http:
        async with http.post(f"{sim.url}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY}) as r:
            key = (await r.json())["listenKey"]
        async with http.ws_connect(f"{sim.ws_url}/private/ws?listenKey={key}") as ws:
            ex = make_ccxt(sim.url, KEY, SECRET, async_=True)
            try:
                await ex.load_markets()
                o = await ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01, params={"newClientOrderId": "u1"})
            finally:
                await ex.close()
            events = [json.loads((await ws.receive(timeout=5)).data) for _ in range(4)]
    new, lite, trade, acct = events
    assert lite["e"] == "TRADE_LITE" and lite["i"] == int(o["id"]) and lite["t"] == trade["o"]["t"] > 0
    assert all(e["E"] >= e["T"] for e in events)
    assert new["e"] == "ORDER_TRADE_UPDATE" and new["o"]["x"] == "NEW" and new["o"]["c"] == "u1"
    assert trade["o"]["x"] == "TRADE" and trade["o"]["X"] == "FILLED" and trade["o"]["i"] == int(o["id"])
    assert float(trade["o"]["L"]) == o["average"] and trade["o"]["l"] == "0.010" and float(trade["o"]["n"]) > 0
    assert acct["e"] == "ACCOUNT_UPDATE" and acct["a"]["m"] == "ORDER" and acct["a"]["P"][0]["pa"] == "0.010"
