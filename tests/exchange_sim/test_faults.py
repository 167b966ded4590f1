"""Each fault kind injected; a client that follows Binance's rules recovers, and the
simulator logged every fault it injected."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import ccxt
import pytest

from engine.binance.venue import make_ccxt
from engine.errors import UsageError
from engine.exchange_sim.faults import FaultSpec
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import serve

from .conftest import KEY, SECRET, admin, make_config, running, url

BTC = "BTC/USDT:USDT"
# what ccxt raises for Binance's 5xx bodies: -1001 -> OperationFailed, -1007 -> RequestTimeout
RETRYABLE = (ccxt.NetworkError, ccxt.OperationFailed)


def test_fault_spec_parsing() -> None:
    spec = FaultSpec.parse("ws_drop=30s,http_5xx=0.1,http_429_burst=60s,latency=200ms,malformed=0.01")
    assert spec == FaultSpec(ws_drop_s=30.0, http_5xx=0.1, http_429_burst_s=60.0, latency_s=0.2, malformed=0.01)
    assert spec.burst_s == 6.0
    with pytest.raises(UsageError, match="did you mean 'latency'"):
        FaultSpec.parse("latncy=1s")
    with pytest.raises(UsageError, match="probability"):
        FaultSpec.parse("http_5xx=2")
    with pytest.raises(UsageError, match="duration"):
        FaultSpec.parse("ws_drop=often")


def test_5xx_before_and_after_accept_no_duplicate_orders(market: MarketData, tmp_path: Path) -> None:
    log = tmp_path / "faults.jsonl"
    with running(market, faults=FaultSpec(http_5xx=0.4), seed=7, fault_log=log) as sim:
        ex = make_ccxt(url(sim), KEY, SECRET)
        for _ in range(50):  # load_markets itself may meet a 5xx: retry with backoff
            try:
                ex.load_markets()
                break
            except RETRYABLE:
                time.sleep(0.01)
        placed = []
        base = round(sim.call(lambda srv: srv.exchange.last["BTCUSDT"]) * 0.97, 1)  # in PERCENT_PRICE

        def lookup(cid: str) -> str | None:
            for _ in range(30):
                try:
                    return str(ex.fetch_order(None, BTC, params={"origClientOrderId": cid})["id"])
                except ccxt.OrderNotFound:
                    return None
                except RETRYABLE:
                    time.sleep(0.005)
            raise AssertionError("lookup never got through")

        for n in range(12):
            cid = f"run1-btc-{n}"
            for attempt in range(30):
                try:
                    o = ex.create_order(BTC, "limit", "buy", 0.01, base + n, params={"newClientOrderId": cid})
                    placed.append(str(o["id"]))
                    break
                except (*RETRYABLE, ccxt.InvalidOrder) as err:
                    if isinstance(err, ccxt.InvalidOrder) and "-4116" not in str(err):
                        raise
                    # 5xx: execution status unknown. Binance's rule: look the order up before
                    # sending it again (same client order id, so a resend can never double it)
                    found = lookup(cid)
                    if found is not None:
                        placed.append(found)
                        break
                    time.sleep(0.005 * 2 ** min(attempt, 5))
        for _ in range(50):
            try:
                open_ids = sorted(str(o["id"]) for o in ex.fetch_open_orders(BTC))
                break
            except RETRYABLE:
                time.sleep(0.01)
        faults = admin(sim, "/sim/faults")
    assert len(placed) == 12 and sorted(placed) == open_ids  # every order once, none doubled
    events = [e for e in faults["events"] if e["kind"] == "http_5xx"]
    assert {e["accepted"] for e in events} == {True, False}
    assert faults["counts"]["http_5xx"] == len(events)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["http_5xx"] * len(events)


def test_429_burst_retry_after(market: MarketData) -> None:
    with running(market, faults=FaultSpec(http_429_burst_s=1.0)) as sim:
        ex = make_ccxt(url(sim), KEY, SECRET)
        ok = limited = 0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            try:
                ex.fetch_time()
                ok += 1
            except ccxt.DDoSProtection as err:
                assert " 429 " in str(err) and "-1003" in str(err)
                limited += 1
                time.sleep(float(ex.last_response_headers["Retry-After"]))  # obey Retry-After
            time.sleep(0.05)
        counts = admin(sim, "/sim/faults")["counts"]
    assert limited >= 2 and ok >= 5 and counts["http_429_burst"] == limited


def test_latency(market: MarketData) -> None:
    with running(market, faults=FaultSpec(latency_s=0.2)) as sim:
        ex = make_ccxt(url(sim), KEY, SECRET)
        t = time.monotonic()
        ex.fetch_time()
        assert time.monotonic() - t >= 0.2
        assert admin(sim, "/sim/faults")["counts"]["latency"] == 1


async def test_malformed_frames_counted(market: MarketData) -> None:
    cfg = make_config(speed=3000.0, faults=FaultSpec(malformed=0.3), seed=3)
    bad = good = 0
    async with serve(cfg, market=market) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}/market/ws/btcusdt@kline_5m") as ws:
            while bad + good < 40:
                msg = await ws.receive(timeout=10)
                try:
                    json.loads(msg.data)
                    good += 1
                except ValueError:
                    bad += 1  # a robust client drops the frame and carries on
        counts = sim.faults.snapshot()["counts"]
    assert bad > 0 and good > 0 and counts["malformed"] >= bad


async def test_ws_drop_reconnect_and_backfill(market: MarketData) -> None:
    """Dropped every 0.4 s; the client reconnects and backfills missed bars from REST."""
    cfg = make_config(speed=3000.0, faults=FaultSpec(ws_drop_s=0.4))
    closed: dict[int, list] = {}
    drops = 0
    async with serve(cfg, market=market) as sim, aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 15
        while len(closed) < 25 and time.monotonic() < deadline:
            async with http.ws_connect(f"{sim.ws_url}/market/ws/btcusdt@kline_5m") as ws:
                # after (re)connecting: backfill closed bars through REST klines
                async with http.get(f"{sim.url}/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "5m", "limit": "50"}) as r:
                    rows = await r.json()
                for row in rows[:-1]:  # the last row is the bar in progress
                    if row[0] >= cfg.start_ms:
                        closed.setdefault(row[0], [row[1], row[2], row[3], row[4], row[5]])
                while True:
                    msg = await ws.receive(timeout=5)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        drops += 1
                        break
                    k = json.loads(msg.data)["k"]
                    if k["x"]:
                        closed.setdefault(k["t"], [k["o"], k["h"], k["l"], k["c"], k["v"]])
        counts = sim.faults.snapshot()["counts"]
    assert drops >= 2 and counts["ws_drop"] >= drops
    opens = sorted(closed)
    assert opens[0] == cfg.start_ms and all(b - a == 300_000 for a, b in zip(opens, opens[1:], strict=False))
    sb = market.bars["BTCUSDT"]
    for t, vals in closed.items():
        i = sb.index_of(t)
        assert [float(v) for v in vals] == [sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i]]
