"""Binance's own client, ``binance-sdk-derivatives-trading-usds-futures`` 18.1.0, unmodified,
pointed at the simulator by its configuration only (``ConfigurationRestAPI.base_path``): market
data, account, leverage and margin type, market and limit orders, algo stop and take-profit
orders placed, queried, triggered and canceled, income, and Binance's error codes.

Every answer is parsed by the SDK's pydantic models; the SDK logs a warning (and relaxes the
model) when an answer does not match them, and :func:`strict_models` fails the test on any
such warning (see :func:`tests.exchange_sim.sdk.model_complaints` for the one exception).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from binance_common.errors import BadRequestError
from binance_sdk_derivatives_trading_usds_futures.rest_api.models import (
    ChangeMarginTypeMarginTypeEnum,
    GetIncomeHistoryIncomeTypeEnum,
    KlineCandlestickDataIntervalEnum,
    NewAlgoOrderAlgoTypeEnum,
    NewAlgoOrderClosePositionEnum,
    NewAlgoOrderSideEnum,
    NewAlgoOrderTypeEnum,
    NewOrderNewOrderRespTypeEnum,
    NewOrderSideEnum,
    NewOrderTimeInForceEnum,
    NewOrderTypeEnum,
)

from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread

from .conftest import START_MS, admin, advance
from .sdk import model_complaints, rest_api

BAR = 300_000
BTC = "BTCUSDT"


@pytest.fixture(autouse=True)
def strict_models(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    bad = model_complaints(caplog.get_records("call"))
    assert not bad, bad


def code_of(fn: Any, *args: Any, **kw: Any) -> tuple[int, str]:
    """Binance's error code and message of a call the venue refuses."""
    with pytest.raises(BadRequestError) as err:
        fn(*args, **kw)
    return int(err.value.status_code or 0), str(err.value.error_message)


def one(resp: Any) -> Any:
    """The data of a oneOf answer (one symbol's object)."""
    data = resp.data()
    return getattr(data, "actual_instance", data)


def test_market_data(sim: ServerThread, market: MarketData) -> None:
    api = rest_api(sim)
    start = START_MS
    advance(sim, 2 * BAR + 150_000)
    assert api.check_server_time().data().server_time == start + 2 * BAR + 150_000
    info = api.exchange_information().data()
    sym = next(s for s in info.symbols if s.symbol == BTC)
    assert sym.order_types == ["LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert sym.time_in_force == ["GTC", "IOC", "FOK", "GTX"]
    assert "PERCENT_PRICE" in {f.filter_type for f in sym.filters}
    rows = api.kline_candlestick_data(BTC, KlineCandlestickDataIntervalEnum.INTERVAL_5m, limit=3).data()
    sb = market.bars[BTC]
    assert [r[0] for r in rows] == [start, start + BAR, start + 2 * BAR]
    i = sb.index_of(start + BAR)
    assert [float(x) for x in rows[1][1:6]] == [sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i]]
    last = float(rows[-1][4])
    assert float(one(api.mark_price(symbol=BTC)).mark_price) == last
    assert float(one(api.symbol_price_ticker(symbol=BTC)).price) == last
    book = one(api.symbol_order_book_ticker(symbol=BTC))
    assert float(book.bid_price) == float(book.ask_price) == last and book.bid_qty == "0.000"
    t24 = one(api.ticker24hr_price_change_statistics(symbol=BTC))
    lo = sb.index_of(start + 2 * BAR + 150_000 - 86_400_000 + 150_000)
    assert float(t24.open_price) == sb.o[lo] and float(t24.last_price) == last
    assert float(t24.high_price) >= max(sb.h[lo:i + 1]) and t24.close_time == start + 2 * BAR + 150_000
    assert code_of(api.order_book, BTC)[0] == -5000
    code, msg = code_of(api.open_interest, BTC)
    assert code == -5000 and "open interest" in msg
    assert code_of(api.kline_candlestick_data, "XRPUSDT", KlineCandlestickDataIntervalEnum.INTERVAL_5m)[0] == -1121


def test_account_leverage_and_margin_type(sim: ServerThread) -> None:
    api = rest_api(sim)
    bal = api.futures_account_balance_v3().data()
    assert [(b.asset, b.balance) for b in bal] == [("USDT", "10000.00000000")]
    brackets = one(api.notional_and_leverage_brackets(symbol=BTC))
    assert brackets.symbol == BTC and brackets.brackets[0].initial_leverage == 125
    everything = api.notional_and_leverage_brackets().data()
    assert sorted(b.symbol for b in getattr(everything, "actual_instance", everything)) == [BTC, "ETHUSDT"]
    assert api.change_initial_leverage(BTC, 5).data().leverage == 5
    assert code_of(api.change_initial_leverage, BTC, 126)[0] == -4028
    isolated = ChangeMarginTypeMarginTypeEnum.ISOLATED
    assert api.change_margin_type(BTC, isolated).data().code == 200
    assert code_of(api.change_margin_type, BTC, isolated)[0] == -4046  # no need to change
    acct = api.account_information_v3().data()
    assert acct.total_wallet_balance == "10000.00000000" and acct.positions == []
    assert api.user_commission_rate(BTC).data().taker_commission_rate == "0.000500"


def test_market_and_limit_orders_and_errors(sim: ServerThread) -> None:
    api = rest_api(sim)
    buy = api.new_order(BTC, NewOrderSideEnum.BUY, NewOrderTypeEnum.MARKET, quantity=0.01,
                        new_order_resp_type=NewOrderNewOrderRespTypeEnum.RESULT).data()
    assert buy.status == "FILLED" and buy.executed_qty == "0.010"
    last = float(one(api.symbol_price_ticker(symbol=BTC)).price)
    lim = api.new_order(BTC, NewOrderSideEnum.BUY, NewOrderTypeEnum.LIMIT, quantity=0.01,
                        price=round(last * 0.97, 1), time_in_force=NewOrderTimeInForceEnum.GTC,
                        new_client_order_id="lim-1").data()
    assert lim.status == "NEW"
    assert api.query_current_open_order(BTC, orig_client_order_id="lim-1").data().order_id == lim.order_id
    assert [o.order_id for o in api.current_all_open_orders(symbol=BTC).data()] == [lim.order_id]
    assert api.cancel_order(BTC, order_id=lim.order_id).data().status == "CANCELED"
    assert code_of(api.query_current_open_order, BTC, order_id=lim.order_id)[0] == -2013
    assert api.query_order(BTC, order_id=lim.order_id).data().status == "CANCELED"
    code, msg = code_of(api.new_order, BTC, NewOrderSideEnum.SELL, NewOrderTypeEnum.STOP_MARKET,
                        quantity=0.01)
    assert code == -4120 and "Algo Order API" in msg
    gtc = NewOrderTimeInForceEnum.GTC
    limit = NewOrderTypeEnum.LIMIT
    assert code_of(api.new_order, BTC, NewOrderSideEnum.BUY, limit, quantity=0.01, price=round(last * 0.9, 1),
                   time_in_force=gtc)[0] == -4024  # PERCENT_PRICE floor
    assert code_of(api.new_order, BTC, NewOrderSideEnum.SELL, limit, quantity=0.01, price=round(last * 1.1, 1),
                   time_in_force=gtc)[0] == -4016  # PERCENT_PRICE cap
    market = NewOrderTypeEnum.MARKET
    assert code_of(api.new_order, BTC, NewOrderSideEnum.BUY, market, quantity=0.001)[0] == -4164
    assert code_of(api.new_order, BTC, NewOrderSideEnum.BUY, market, quantity=50)[0] == -2019
    assert code_of(api.new_order, BTC, NewOrderSideEnum.BUY, market, quantity=0.0101)[0] == -1111
    assert code_of(api.query_order, BTC, order_id=1)[0] == -2013
    assert code_of(api.cancel_order, BTC, order_id=1)[0] == -2011


def _bar_reaching(market: MarketData, level: float, *, below: bool) -> int:
    sb = market.bars[BTC]
    i0 = sb.index_of(START_MS)
    for k in range(1, 2000):
        i = i0 + k
        if (below and sb.l[i] <= level) or (not below and sb.h[i] >= level):
            return k
    raise AssertionError("the level is never reached")


def _place_exits(api: Any, stop: float, target: float) -> tuple[Any, Any]:
    sell = NewAlgoOrderSideEnum.SELL
    cond, true = NewAlgoOrderAlgoTypeEnum.CONDITIONAL, NewAlgoOrderClosePositionEnum.TRUE
    sl = api.new_algo_order(cond, BTC, sell, NewAlgoOrderTypeEnum.STOP_MARKET, trigger_price=stop,
                            close_position=true, client_algo_id="sdk-sl").data()
    tp = api.new_algo_order(cond, BTC, sell, NewAlgoOrderTypeEnum.TAKE_PROFIT_MARKET, trigger_price=target,
                            close_position=true, client_algo_id="sdk-tp").data()
    return sl, tp


def test_algo_stop_and_target_placed_queried_triggered_canceled(sim: ServerThread, market: MarketData) -> None:
    api = rest_api(sim)
    advance(sim, BAR)  # fill at bar 1's open
    buy = api.new_order(BTC, NewOrderSideEnum.BUY, NewOrderTypeEnum.MARKET, quantity=0.01,
                        new_order_resp_type=NewOrderNewOrderRespTypeEnum.RESULT).data()
    entry = float(buy.additional_properties["avgPrice"])
    stop, target = round(entry * 0.996, 1), round(entry * 1.05, 1)
    k_sl = _bar_reaching(market, stop, below=True)
    assert k_sl < _bar_reaching(market, target, below=False), "the stop must come first"
    sl, tp = _place_exits(api, stop, target)
    assert (sl.algo_status, sl.order_type, sl.trigger_price, sl.close_position) == (
        "NEW", "STOP_MARKET", f"{stop:.2f}", True)
    assert sorted(o.client_algo_id for o in api.current_all_algo_open_orders(symbol=BTC).data()) == ["sdk-sl", "sdk-tp"]
    assert api.query_algo_order(client_algo_id="sdk-sl").data().actual_order_id == ""
    advance(sim, (k_sl - 1) * BAR)  # the clock at bar k_sl's open: not reached yet
    assert api.query_algo_order(algo_id=sl.algo_id).data().algo_status == "NEW"
    advance(sim, BAR)
    got = api.query_algo_order(client_algo_id="sdk-sl").data()
    assert got.algo_status == "FINISHED" and got.actual_type == "MARKET" and got.actual_qty == "0.010"
    child = api.query_order(BTC, order_id=int(got.actual_order_id)).data()
    fill = admin(sim, "/sim/state")["fills"][-1]
    assert child.status == "FILLED" and child.type == "MARKET" and child.executed_qty == "0.010"
    assert float(child.avg_price) == float(got.actual_price) == fill["price"]
    assert got.trigger_time == child.update_time == fill["time"]
    trades = api.account_trade_list(BTC, order_id=int(got.actual_order_id)).data()
    assert [(t.qty, float(t.price), t.time) for t in trades] == [("0.010", fill["price"], fill["time"])]
    assert api.position_information_v3(symbol=BTC).data() == []
    assert api.cancel_algo_order(client_algo_id="sdk-tp").data().msg == "success"
    assert api.query_algo_order(algo_id=tp.algo_id).data().algo_status == "CANCELED"
    assert code_of(api.cancel_algo_order, algo_id=sl.algo_id)[0] == -2011  # finished
    assert code_of(api.query_algo_order, client_algo_id="never")[0] == -2013
    history = api.query_all_algo_orders(BTC).data()
    assert [(o.client_algo_id, o.algo_status) for o in history] == [("sdk-sl", "FINISHED"), ("sdk-tp", "CANCELED")]
    income = api.get_income_history(symbol=BTC, start_time=START_MS).data()
    kinds = [(r.income_type, r.trade_id) for r in income]
    assert kinds[0] == ("COMMISSION", "1") and ("REALIZED_PNL", "2") in kinds and ("COMMISSION", "2") in kinds
    pnl = next(float(r.income) for r in income if r.income_type == "REALIZED_PNL")
    assert pnl == pytest.approx(0.01 * (fill["price"] - entry), abs=1e-8)


def test_algo_order_errors(sim: ServerThread) -> None:
    api = rest_api(sim)
    cond, sell = NewAlgoOrderAlgoTypeEnum.CONDITIONAL, NewAlgoOrderSideEnum.SELL
    last = float(one(api.symbol_price_ticker(symbol=BTC)).price)
    sm = NewAlgoOrderTypeEnum.STOP_MARKET
    assert code_of(api.new_algo_order, cond, BTC, sell, sm, trigger_price=round(last * 1.01, 1),
                   quantity=0.01)[0] == -2021  # a sell stop above the market triggers at once
    assert code_of(api.new_algo_order, cond, BTC, sell, sm, trigger_price=round(round(last * 0.99, 1) + 0.05, 2),
                   quantity=0.01)[0] == -4014  # off the tick
    assert code_of(api.new_algo_order, cond, BTC, sell, sm, quantity=0.01)[0] == -1102  # no trigger
    for n in range(10):  # MAX_NUM_ALGO_ORDERS is 10 on BTCUSDT
        api.new_algo_order(cond, BTC, sell, sm, trigger_price=round(last * 0.9, 1) - n, quantity=0.01,
                           client_algo_id=f"many-{n}")
    assert code_of(api.new_algo_order, cond, BTC, sell, sm, trigger_price=round(last * 0.8, 1),
                   quantity=0.01)[0] == -4045
    assert api.cancel_all_algo_open_orders(BTC).data().code == 200
    assert api.current_all_algo_open_orders(symbol=BTC).data() == []


def test_funding_fee_in_income(sim: ServerThread, market: MarketData) -> None:
    api = rest_api(sim)
    start = START_MS
    advance(sim, 8 * 3600_000 - BAR)
    api.new_order(BTC, NewOrderSideEnum.BUY, NewOrderTypeEnum.MARKET, quantity=0.1)
    advance(sim, BAR)  # the 08:00 funding settles on the position
    (f,) = admin(sim, "/sim/state")["fundingEvents"]
    rows = api.get_income_history(income_type=GetIncomeHistoryIncomeTypeEnum.FUNDING_FEE).data()
    assert [(r.symbol, r.time, r.trade_id) for r in rows] == [(BTC, f["time"], "")]
    assert float(rows[0].income) == pytest.approx(-f["amount"], abs=1e-8)
    assert f["time"] == start + 8 * 3600_000
    old = api.get_income_history(end_time=start - 1).data()
    assert old == []
