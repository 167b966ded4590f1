"""Unmodified ccxt (sync) against the simulator: every call a bot makes, and its exceptions."""

from __future__ import annotations

import ccxt
import pytest

from engine.binance.venue import make_ccxt
from engine.exchange_sim.market import MarketData
from engine.timeutil import parse_time

from .conftest import KEY, SECRET, admin, advance, room_in_weight_window, running, url

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
BAR = 300_000


@pytest.fixture()
def ex(sim):  # type: ignore[no-untyped-def]
    client = make_ccxt(url(sim), KEY, SECRET)
    client.load_markets()
    return client


def test_markets_time_and_ohlcv(sim, market: MarketData) -> None:  # type: ignore[no-untyped-def]
    room_in_weight_window()  # the weights below are added up: one window for all of them
    ex = make_ccxt(url(sim), KEY, SECRET)
    ex.load_markets()
    assert set(ex.markets) == {BTC, ETH}
    m = ex.market(BTC)
    assert m["precision"]["price"] == 0.1 and m["precision"]["amount"] == 0.001
    assert m["limits"]["cost"]["min"] == 100
    start = parse_time("2024-01-01")
    assert ex.fetch_time() == start  # frozen market clock, not the wall clock
    advance(sim, 2 * BAR + 150_000)  # two bars closed, the third half-way
    assert ex.fetch_time() == start + 2 * BAR + 150_000
    rows = ex.fetch_ohlcv(BTC, "5m", limit=5)
    sb = market.bars["BTCUSDT"]
    i0 = sb.index_of(start)
    assert [r[0] for r in rows] == [start + (k - 2) * BAR for k in range(5)]
    # closed bars are exactly the stored ones
    for r in rows[:4]:
        i = sb.index_of(r[0])
        assert r[1:] == [sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i]]
    # the bar in progress: open as stored, never more than the whole bar
    cur = rows[-1]
    assert cur[0] == start + 2 * BAR and cur[1] == sb.o[i0 + 2]
    assert sb.l[i0 + 2] <= cur[3] <= cur[2] <= sb.h[i0 + 2] and 0 < cur[5] < sb.v[i0 + 2]
    # never a bar from the future, even when asked for one
    later = ex.fetch_ohlcv(BTC, "5m", since=start + 2 * BAR, limit=100)
    assert [r[0] for r in later] == [start + 2 * BAR]
    # pagination by since/limit through history before the replay start
    hist = ex.fetch_ohlcv(BTC, "5m", since=start - 1000 * BAR, limit=1000)
    assert len(hist) == 1000 and hist[0][0] == start - 1000 * BAR and hist[-1][0] == start - BAR
    raw = ex.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "limit": 1500})
    assert len(raw) == 1500 and raw[-1][0] == start + 2 * BAR and raw[-1][6] == start + 3 * BAR - 1
    assert ex.last_response_headers["X-MBX-USED-WEIGHT-1M"] == str(1 + 1 + 1 + 1 + 2 + 5 + 10)
    with pytest.raises(ccxt.BadRequest, match="-1130"):
        ex.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "limit": 1501})


def test_leverage_margin_mode_and_orders(sim, ex) -> None:  # type: ignore[no-untyped-def]
    assert ex.set_leverage(5, BTC)["leverage"] == 5
    ex.set_margin_mode("isolated", BTC)
    with pytest.raises(ccxt.MarginModeAlreadySet):  # -4046, which bots treat as success
        ex.set_margin_mode("isolated", BTC)
    with pytest.raises(ccxt.BadRequest, match="-4028"):
        ex.fapiPrivatePostLeverage({"symbol": "BTCUSDT", "leverage": 126})  # ccxt checks 1..125 itself

    advance(sim, BAR)  # bar 0 closed: market orders fill at bar 1's open
    last = float(ex.fapiPublicGetTickerPrice({"symbol": "BTCUSDT"})["price"])
    o = ex.create_order(BTC, "market", "buy", 0.01)
    assert o["status"] == "closed" and o["filled"] == 0.01
    state = admin(sim, "/sim/state")
    assert o["average"] == state["last"]["BTCUSDT"]
    assert o["average"] == last
    pos = ex.fetch_positions([BTC])
    assert len(pos) == 1 and pos[0]["contracts"] == 0.01 and pos[0]["side"] == "long"
    assert pos[0]["marginMode"] == "isolated"
    entry = pos[0]["entryPrice"]

    with pytest.raises(ccxt.BadRequest, match="-4024"):  # PERCENT_PRICE: below mark * 0.95
        ex.create_order(BTC, "limit", "buy", 0.01, round(entry * 0.9, 1))
    with pytest.raises(ccxt.BadRequest, match="-4016"):  # and above mark * 1.05
        ex.create_order(BTC, "limit", "sell", 0.01, round(entry * 1.1, 1))
    limit = ex.create_order(BTC, "limit", "buy", 0.01, round(entry * 0.96, 1))
    assert limit["status"] == "open" and limit["type"] == "limit"
    stop = ex.create_order(BTC, "market", "sell", 0.01, params={"stopLossPrice": round(entry * 0.95, 1), "reduceOnly": True})
    tp = ex.create_order(BTC, "market", "sell", 0.01, params={"takeProfitPrice": round(entry * 1.05, 1), "reduceOnly": True})
    assert stop["status"] == "open" and stop["triggerPrice"] == round(entry * 0.95, 1)
    assert tp["status"] == "open" and tp["takeProfitPrice"] == round(entry * 1.05, 1)

    got = ex.fetch_order(limit["id"], BTC)
    assert got["id"] == limit["id"] and got["status"] == "open" and got["price"] == round(entry * 0.96, 1)
    got_stop = ex.fetch_order(stop["id"], BTC, params={"trigger": True})
    assert got_stop["status"] == "open" and got_stop["info"]["orderType"] == "STOP_MARKET"
    assert [x["id"] for x in ex.fetch_open_orders(BTC)] == [limit["id"]]
    assert {x["id"] for x in ex.fetch_open_orders(BTC, params={"trigger": True})} == {stop["id"], tp["id"]}

    canceled = ex.cancel_order(limit["id"], BTC)
    assert canceled["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):  # -2013
        ex.fetch_order("123", BTC)
    with pytest.raises(ccxt.ExchangeError, match="-2011"):
        ex.cancel_order(limit["id"], BTC)

    # reduce-only closes at most the position; a reduce-only on the wrong side is -2022
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):
        ex.create_order(BTC, "market", "buy", 0.01, params={"reduceOnly": True})
    closed = ex.create_order(BTC, "market", "sell", 0.02, params={"reduceOnly": True})
    assert closed["filled"] == 0.01 and closed["status"] == "closed"
    assert ex.fetch_positions([BTC]) == []

    ex.cancel_all_orders(BTC, params={"trigger": True})
    assert ex.fetch_open_orders(BTC, params={"trigger": True}) == []
    ex.create_order(BTC, "limit", "buy", 0.01, round(entry * 0.97, 1))
    ex.cancel_all_orders(BTC)
    assert ex.fetch_open_orders(BTC) == []
    history = ex.fetch_orders(BTC)
    assert [h["status"] for h in history] == ["closed", "canceled", "closed", "canceled"]


def test_balance_and_funding(sim, ex, market: MarketData) -> None:  # type: ignore[no-untyped-def]
    bal = ex.fetch_balance()
    assert bal["USDT"]["total"] == 10_000 and bal["USDT"]["free"] == 10_000
    fr = ex.fetch_funding_rate(BTC)
    sb = market.bars["BTCUSDT"]
    start = parse_time("2024-01-01")
    k = int((sb.funding_time <= start).sum()) - 1
    assert fr["fundingRate"] == pytest.approx(float(sb.funding_rate[k]))
    assert fr["fundingTimestamp"] == start + 8 * 3600_000
    hist = ex.fetch_funding_rate_history(BTC, limit=3)
    assert [h["timestamp"] for h in hist] == [start - 16 * 3600_000, start - 8 * 3600_000, start]
    # hold a position across the 08:00 funding: the wallet pays qty * mark * rate
    advance(sim, 8 * 3600_000 - BAR)
    ex.create_order(BTC, "market", "buy", 0.1)
    wallet_before = float(ex.fapiPrivateV3GetAccount()["totalWalletBalance"])
    advance(sim, BAR)
    st = admin(sim, "/sim/state")
    (f,) = st["fundingEvents"]
    i = sb.index_of(start + 8 * 3600_000)
    assert f["time"] == start + 8 * 3600_000 and f["mark"] == sb.o[i]
    assert f["amount"] == pytest.approx(0.1 * sb.o[i] * float(sb.funding_rate[k + 1]), rel=1e-12)
    acc = ex.fapiPrivateV3GetAccount()
    assert float(acc["totalWalletBalance"]) == pytest.approx(wallet_before - f["amount"], abs=1e-8)
    bal = ex.fetch_balance()["USDT"]  # ccxt: total = marginBalance = wallet + unrealised PnL
    assert bal["total"] == pytest.approx(float(acc["totalWalletBalance"]) + float(acc["totalUnrealizedProfit"]))


def test_exceptions_map_like_binance(sim, ex) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ccxt.InsufficientFunds):  # -2019
        ex.create_order(BTC, "market", "buy", 50)
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):  # MIN_NOTIONAL
        ex.create_order(BTC, "market", "buy", 0.001)
    with pytest.raises(ccxt.BadRequest, match="-1111"):  # more decimals than the asset has
        ex.create_order(BTC, "market", "buy", 0.01, params={"quantity": "0.01001"})
    with pytest.raises(ccxt.BadRequest, match="-4014"):  # price off the tick grid
        ex.create_order(BTC, "limit", "buy", 0.01, 30000, params={"price": "30000.05"})
    with pytest.raises(ccxt.OrderImmediatelyFillable):  # -2021: a sell stop above the market
        ex.create_order(BTC, "market", "sell", 0.01, params={"stopLossPrice": 99999, "reduceOnly": True})
    bad = make_ccxt(url(sim), "wrongKey123", SECRET)
    bad.load_markets()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        bad.fetch_balance()
    wrong_secret = make_ccxt(url(sim), KEY, "nope" * 16)
    wrong_secret.load_markets()
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        wrong_secret.fetch_balance()


def test_rate_limit_429_then_418(market: MarketData) -> None:
    with running(market, weight_limit=30, weight_window_s=60.0, ban_after=1, ban_s=5.0) as sim:
        ex = make_ccxt(url(sim), KEY, SECRET)
        ex.load_markets()
        seen = []
        for _ in range(20):
            try:
                ex.fetch_balance()  # weight 5
            except ccxt.DDoSProtection as err:  # ccxt 4.5 raises this for both 429 and 418
                seen.append(str(err))
                if "418" in str(err):
                    break
        assert any(" 429 " in s and "-1003" in s for s in seen)
        assert " 418 " in seen[-1]
        assert ex.last_response_headers.get("Retry-After") == "5"
