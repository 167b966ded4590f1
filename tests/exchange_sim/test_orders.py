"""Order types through POST /fapi/v1/order as Binance takes them: stops with stopPrice,
closePosition, resting limits (maker), IOC/FOK/GTX."""

from __future__ import annotations

import ccxt
import pytest

from engine.binance.venue import make_ccxt
from engine.exchange_sim.market import MarketData
from engine.timeutil import parse_time

from .conftest import KEY, SECRET, START, admin, advance, url

BAR = 300_000


def _first_bar_where(market: MarketData, symbol: str, pred, *, after: int = 0) -> int:  # type: ignore[no-untyped-def]
    sb = market.bars[symbol]
    i0 = sb.index_of(parse_time(START))
    for k in range(after, 2000):
        if pred(sb, i0 + k):
            return k
    raise AssertionError("no such bar")


def test_stop_and_take_profit_via_order_endpoint(sim, market: MarketData) -> None:  # type: ignore[no-untyped-def]
    ex = make_ccxt(url(sim), KEY, SECRET)
    ex.load_markets()
    post = ex.fapiPrivatePostOrder
    buy = post({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010", "newOrderRespType": "RESULT"})
    assert buy["status"] == "FILLED" and buy["executedQty"] == "0.010"
    entry = float(buy["avgPrice"])
    sb = market.bars["BTCUSDT"]
    i0 = sb.index_of(parse_time(START))
    # a stop 0.3 % below: find the first bar whose low reaches it, check it filled there
    stop = round(entry * 0.997, 1)
    k = _first_bar_where(market, "BTCUSDT", lambda b, i: b.l[i] <= stop)
    sl = post({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": f"{stop:.1f}", "closePosition": "true"})
    assert sl["status"] == "NEW" and sl["type"] == "STOP_MARKET" and sl["closePosition"] is True
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        post({"symbol": "BTCUSDT", "side": "SELL", "type": "TAKE_PROFIT_MARKET", "stopPrice": f"{entry * 0.99:.1f}", "quantity": "0.010", "reduceOnly": "true"})
    advance(sim, (k + 1) * BAR)
    got = ex.fapiPrivateGetOrder({"symbol": "BTCUSDT", "orderId": sl["orderId"]})
    assert got["status"] == "FILLED" and got["executedQty"] == "0.010"
    fill = admin(sim, "/sim/state")["fills"][-1]
    assert (fill["time"] - parse_time(START)) // BAR == k and fill["price"] == min(stop, sb.o[i0 + k])
    assert ex.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})[0]["positionAmt"] == "0.000"


def test_limit_time_in_force(sim, market: MarketData) -> None:  # type: ignore[no-untyped-def]
    ex = make_ccxt(url(sim), KEY, SECRET)
    ex.load_markets()
    post = ex.fapiPrivatePostOrder
    last = float(ex.fapiPublicGetTickerPrice({"symbol": "ETHUSDT"})["price"])
    below = f"{last * 0.998:.2f}"
    above = f"{last * 1.002:.2f}"
    with pytest.raises(ccxt.InvalidOrder, match="-5022"):  # post-only that would take
        post({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTX", "quantity": "0.100", "price": above})
    with pytest.raises(ccxt.InvalidOrder, match="-5021"):  # FOK that cannot fill now
        post({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "FOK", "quantity": "0.100", "price": below})
    ioc = post({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.100", "price": below, "newOrderRespType": "RESULT"})
    assert ioc["status"] == "EXPIRED"
    taker = post({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.100", "price": above, "newOrderRespType": "RESULT"})
    assert taker["status"] == "FILLED" and float(taker["avgPrice"]) == last  # crosses: fills at the market
    rest = post({"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTX", "quantity": "0.100", "price": above})
    assert rest["status"] == "NEW"
    target = float(above)
    k = _first_bar_where(market, "ETHUSDT", lambda b, i: b.h[i] >= target)
    advance(sim, (k + 1) * BAR)
    got = ex.fapiPrivateGetOrder({"symbol": "ETHUSDT", "origClientOrderId": rest["clientOrderId"]})
    assert got["status"] == "FILLED" and float(got["avgPrice"]) >= target
    fills = admin(sim, "/sim/state")["fills"]
    maker, taker_fill = fills[-1], fills[-2]
    assert maker["fee"] == pytest.approx(0.1 * maker["price"] * 0.0002, rel=1e-12)
    assert taker_fill["fee"] == pytest.approx(0.1 * taker_fill["price"] * 0.0005, rel=1e-12)
