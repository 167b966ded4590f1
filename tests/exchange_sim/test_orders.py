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


@pytest.mark.parametrize("kind", ["STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"])
def test_conditional_types_on_order_endpoint_get_4120(sim, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Binance since 2025-12-09: conditional types only through /fapi/v1/algoOrder; ccxt maps
    -4120 to InvalidOrder (its USD-M table), and nothing is placed."""
    ex = make_ccxt(url(sim), KEY, SECRET)
    ex.load_markets()
    with pytest.raises(ccxt.InvalidOrder, match="-4120") as err:
        ex.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": kind, "stopPrice": "30000.0",
                                 "price": "30000.0", "callbackRate": "1", "quantity": "0.010"})
    assert "Please use the Algo Order API endpoints instead." in str(err.value)
    assert type(err.value) is ccxt.InvalidOrder
    assert sim.call(lambda s: (len(s.exchange.orders), len(s.exchange.algo))) == (0, 0)


def test_algo_stop_triggers_a_market_order(sim, market: MarketData) -> None:  # type: ignore[no-untyped-def]
    """A close-position STOP_MARKET algo order: NEW until the bar that reaches it, then
    FINISHED with actualOrderId, the MARKET order it placed FILLED at the trigger (or the open
    a gap jumps to), visible in GET /fapi/v1/order, allOrders, userTrades and income."""
    ex = make_ccxt(url(sim), KEY, SECRET)
    ex.load_markets()
    post = ex.fapiPrivatePostOrder
    buy = post({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010", "newOrderRespType": "RESULT"})
    assert buy["status"] == "FILLED" and buy["executedQty"] == "0.010"
    entry = float(buy["avgPrice"])
    sb = market.bars["BTCUSDT"]
    i0 = sb.index_of(parse_time(START))
    stop = round(entry * 0.997, 1)
    k = _first_bar_where(market, "BTCUSDT", lambda b, i: b.l[i] <= stop)
    sl = ex.fapiPrivatePostAlgoOrder({"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL",
                                      "type": "STOP_MARKET", "triggerPrice": f"{stop:.1f}",
                                      "closePosition": "true", "clientAlgoId": "sl-1"})
    assert sl["algoStatus"] == "NEW" and sl["orderType"] == "STOP_MARKET" and sl["closePosition"] is True
    assert sl["quantity"] == "0.000" and sl["reduceOnly"] is True and "actualOrderId" not in sl
    with pytest.raises(ccxt.OrderImmediatelyFillable):  # -2021: a sell target below the market
        ex.fapiPrivatePostAlgoOrder({"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL",
                                     "type": "TAKE_PROFIT_MARKET", "triggerPrice": f"{entry * 0.99:.1f}",
                                     "quantity": "0.010", "reduceOnly": "true"})
    if k > 0:
        advance(sim, k * BAR)
        assert ex.fapiPrivateGetAlgoOrder({"clientAlgoId": "sl-1"})["algoStatus"] == "NEW"
    advance(sim, BAR)
    got = ex.fapiPrivateGetAlgoOrder({"algoId": sl["algoId"]})
    assert got["algoStatus"] == "FINISHED" and got["actualOrderId"] and got["actualType"] == "MARKET"
    child = ex.fapiPrivateGetOrder({"symbol": "BTCUSDT", "orderId": got["actualOrderId"]})
    fill = admin(sim, "/sim/state")["fills"][-1]
    assert child["status"] == "FILLED" and child["type"] == "MARKET" and child["executedQty"] == "0.010"
    assert child["reduceOnly"] is True and child["clientOrderId"] != "sl-1"
    assert float(child["avgPrice"]) == float(got["actualPrice"]) == fill["price"] == min(stop, sb.o[i0 + k])
    assert got["actualQty"] == "0.010" and got["triggerTime"] == child["updateTime"] == fill["time"]
    assert (fill["time"] - parse_time(START)) // BAR == k
    trades = ex.fapiPrivateGetUserTrades({"symbol": "BTCUSDT", "orderId": got["actualOrderId"]})
    assert [(t["orderId"], t["qty"], float(t["price"]), t["time"]) for t in trades] == [
        (int(got["actualOrderId"]), "0.010", fill["price"], fill["time"])]
    assert [o["orderId"] for o in ex.fapiPrivateGetAllOrders({"symbol": "BTCUSDT"})] == [
        buy["orderId"], int(got["actualOrderId"])]
    assert ex.fapiPrivateGetOpenAlgoOrders({"symbol": "BTCUSDT"}) == []
    assert ex.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})[0]["positionAmt"] == "0.000"
    with pytest.raises(ccxt.ExchangeError, match="-2011"):  # finished: nothing to cancel
        ex.fapiPrivateDeleteAlgoOrder({"algoId": sl["algoId"]})


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


def test_max_open_orders_and_a_trigger_with_nothing_to_reduce(sim, market: MarketData) -> None:  # type: ignore[no-untyped-def]
    """MAX_NUM_ORDERS (200 on BTCUSDT) answers -2025; a reduce-only algo order whose trigger
    finds no position is REJECTED at the trigger and places nothing (Binance checks
    reduce-only and margin when it triggers, not when it is placed)."""
    ex = make_ccxt(url(sim), KEY, SECRET)
    ex.load_markets()
    post = ex.fapiPrivatePostOrder
    last = float(ex.fapiPublicGetTickerPrice({"symbol": "BTCUSDT"})["price"])
    price = f"{last * 0.97:.1f}"
    for n in range(200):
        post({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.003",
              "price": price, "newClientOrderId": f"many-{n}"})
    with pytest.raises(ccxt.OperationRejected, match="-2025"):
        post({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.003",
              "price": price})
    assert len(ex.fapiPrivateGetOpenOrders({"symbol": "BTCUSDT"})) == 200
    ex.fapiPrivateDeleteAllOpenOrders({"symbol": "BTCUSDT"})
    trigger = round(last * 1.002, 1)
    k = _first_bar_where(market, "BTCUSDT", lambda b, i: b.h[i] >= trigger)
    algo = ex.fapiPrivatePostAlgoOrder({"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "BUY",
                                        "type": "STOP_MARKET", "triggerPrice": f"{trigger:.1f}",
                                        "quantity": "0.010", "reduceOnly": "true"})
    assert algo["algoStatus"] == "NEW"  # accepted while flat
    advance(sim, (k + 1) * BAR)
    got = ex.fapiPrivateGetAlgoOrder({"algoId": algo["algoId"]})
    assert got["algoStatus"] == "REJECTED" and got["actualOrderId"] == "" and got["triggerTime"] > 0
    assert [o["type"] for o in ex.fapiPrivateGetAllOrders({"symbol": "BTCUSDT"})].count("MARKET") == 0
