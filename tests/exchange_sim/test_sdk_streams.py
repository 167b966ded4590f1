"""The official SDK's websocket streams against the simulator, configured with its stream URL
only: klines on ``/market``, the book ticker on ``/public``, and the user-data stream on
``/private`` carrying ORDER_TRADE_UPDATE, TRADE_LITE, ACCOUNT_UPDATE (an order's and a
funding fee's) and ALGO_UPDATE, each parsed by the SDK's own models, in order, ``E >= T``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from binance_sdk_derivatives_trading_usds_futures.rest_api.models import (
    ChangeMarginTypeMarginTypeEnum,
    NewAlgoOrderAlgoTypeEnum,
    NewAlgoOrderClosePositionEnum,
    NewAlgoOrderSideEnum,
    NewAlgoOrderTypeEnum,
    NewOrderSideEnum,
    NewOrderTypeEnum,
)
from binance_sdk_derivatives_trading_usds_futures.websocket_streams.models import (
    AccountUpdate,
    AlgoUpdate,
    IndividualSymbolBookTickerStreamsResponse,
    KlineCandlestickStreamsResponse,
    OrderTradeUpdate,
    TradeLite,
)

from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread

from .conftest import START_MS, admin, advance
from .sdk import model_complaints, rest_api, stream_client

BAR = 300_000
BTC = "BTCUSDT"


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_klines_on_market_and_book_ticker_on_public(
    sim: ServerThread, market: MarketData, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    streams = stream_client(sim)
    conn = await streams.create_connection()
    got: list[Any] = []
    books: list[Any] = []
    try:
        (await conn.kline_candlestick_streams(symbol="btcusdt", interval="5m")).on("message", got.append)
        (await conn.individual_symbol_book_ticker_streams(symbol="btcusdt")).on("message", books.append)
        advance(sim, 3 * BAR)
        await until(lambda: sum(1 for k in got if k.k.x) == 3 and len(books) >= 12, "3 closed bars")
    finally:
        await conn.close_connection(close_session=True)
    assert not model_complaints(caplog.records)
    assert all(isinstance(k, KlineCandlestickStreamsResponse) for k in got)
    assert all(isinstance(b, IndividualSymbolBookTickerStreamsResponse) for b in books)
    closed = [k.k for k in got if k.k.x]
    start = START_MS
    sb = market.bars[BTC]
    assert [k.t for k in closed] == [start, start + BAR, start + 2 * BAR]  # true historical times
    for k in closed:
        i = sb.index_of(k.t)
        assert [float(x) for x in (k.o, k.h, k.l, k.c, k.v)] == [sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i]]
    assert books[-1].b == books[-1].a and float(books[-1].b) == sb.o[sb.index_of(start + 3 * BAR)]


def _open_and_protect(api: Any) -> tuple[float, Any]:
    api.new_order(BTC, NewOrderSideEnum.BUY, NewOrderTypeEnum.MARKET, quantity=0.01)
    last = float(api.symbol_price_ticker(symbol=BTC).data().actual_instance.price)
    stop = round(last * 0.998, 1)
    algo = api.new_algo_order(NewAlgoOrderAlgoTypeEnum.CONDITIONAL, BTC, NewAlgoOrderSideEnum.SELL,
                              NewAlgoOrderTypeEnum.STOP_MARKET, trigger_price=stop,
                              close_position=NewAlgoOrderClosePositionEnum.TRUE, client_algo_id="ws-sl").data()
    return stop, algo


def _target(api: Any) -> Any:
    """A close-position target placed while flat (algo orders are checked at their trigger)."""
    last = float(api.symbol_price_ticker(symbol=BTC).data().actual_instance.price)
    return api.new_algo_order(NewAlgoOrderAlgoTypeEnum.CONDITIONAL, BTC, NewAlgoOrderSideEnum.SELL,
                              NewAlgoOrderTypeEnum.TAKE_PROFIT_MARKET, trigger_price=round(last * 1.03, 1),
                              close_position=NewAlgoOrderClosePositionEnum.TRUE, client_algo_id="ws-tp").data()


def _kind(e: Any) -> tuple[str, str | None]:
    body: Any = getattr(e, "o", None) or getattr(e, "a", None)
    if isinstance(e, OrderTradeUpdate):
        return "OrderTradeUpdate", body.x
    if isinstance(e, AlgoUpdate):
        return "AlgoUpdate", body.X
    if isinstance(e, AccountUpdate):
        return "AccountUpdate", body.m
    return type(e).__name__, None


async def test_user_data_on_private(sim: ServerThread, market: MarketData, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    api = rest_api(sim)
    key = api.start_user_data_stream().data().listen_key
    streams = stream_client(sim)
    conn = await streams.create_connection()
    events: list[Any] = []
    try:
        (await conn.user_data(key)).on("message", lambda ev: events.append(ev.actual_instance))
        stop, algo = _open_and_protect(api)
        sb = market.bars[BTC]
        i0 = sb.index_of(START_MS)
        k = next(n for n in range(1, 2000) if sb.l[i0 + n] <= stop)
        advance(sim, (k + 1) * BAR)
        await until(lambda: ("AlgoUpdate", "FINISHED") in [_kind(e) for e in events], "FINISHED")
        _target(api)
        api.cancel_algo_order(client_algo_id="ws-tp")
        await until(lambda: ("AlgoUpdate", "CANCELED") in [_kind(e) for e in events], "CANCELED")
    finally:
        await conn.close_connection(close_session=True)
    assert not model_complaints(caplog.records)
    assert all(e.E >= e.T for e in events)
    assert [e.E for e in events] == sorted(e.E for e in events)
    events = [e for e in events if _kind(e) != ("AccountUpdate", "FUNDING_FEE")]  # held past 08:00
    assert [_kind(e) for e in events[-2:]] == [("AlgoUpdate", "NEW"), ("AlgoUpdate", "CANCELED")]
    assert events[-1].o.caid == "ws-tp" and events[-1].T >= events[-3].T
    events = events[:-2]
    kinds = [_kind(e) for e in events]
    assert kinds == [
        ("OrderTradeUpdate", "NEW"), ("TradeLite", None), ("OrderTradeUpdate", "TRADE"), ("AccountUpdate", "ORDER"),
        ("AlgoUpdate", "NEW"),
        ("AlgoUpdate", "TRIGGERING"), ("AlgoUpdate", "TRIGGERED"), ("OrderTradeUpdate", "NEW"), ("TradeLite", None),
        ("OrderTradeUpdate", "TRADE"), ("AccountUpdate", "ORDER"), ("AlgoUpdate", "FINISHED"),
    ], kinds
    fill = admin(sim, "/sim/state")["fills"][-1]
    finished: Any = events[-1].o
    child: Any = events[-3].o
    assert isinstance(events[-3], OrderTradeUpdate) and child.X == "FILLED" and child.o == "MARKET"
    assert finished.aid == algo.algo_id and finished.caid == "ws-sl" and finished.ai == str(child.i)
    assert float(finished.ap) == float(child.L) == fill["price"] and finished.aq == child.z == "0.010"
    assert finished.tt == child.T == events[-1].T == fill["time"]
    lite = events[-4]
    assert isinstance(lite, TradeLite) and lite.i == child.i and lite.t == child.t and lite.l == "0.010"
    acct: Any = events[-2]
    assert _kind(acct) == ("AccountUpdate", "ORDER") and acct.a.P[0].pa == "0.000"
    assert acct.a.B[0].bc == "0.00000000" and float(acct.a.B[0].wb) == pytest.approx(admin(sim, "/sim/state")["wallet"])


@pytest.mark.parametrize("isolated", [False, True])
async def test_funding_fee_account_update(sim: ServerThread, caplog: pytest.LogCaptureFixture, isolated: bool) -> None:
    caplog.set_level(logging.WARNING)
    api = rest_api(sim)
    if isolated:
        api.change_margin_type(BTC, ChangeMarginTypeMarginTypeEnum.ISOLATED)
    key = api.start_user_data_stream().data().listen_key
    streams = stream_client(sim)
    conn = await streams.create_connection()
    events: list[Any] = []
    try:
        (await conn.user_data(key)).on("message", lambda ev: events.append(ev.actual_instance))
        advance(sim, 8 * 3600_000 - BAR)
        api.new_order(BTC, NewOrderSideEnum.BUY, NewOrderTypeEnum.MARKET, quantity=0.1)
        wallet_before = admin(sim, "/sim/state")["wallet"]
        advance(sim, BAR)
        await until(lambda: ("AccountUpdate", "FUNDING_FEE") in [_kind(e) for e in events], "funding")
    finally:
        await conn.close_connection(close_session=True)
    assert not model_complaints(caplog.records)
    (f,) = admin(sim, "/sim/state")["fundingEvents"]
    fee: Any = next(e for e in events if _kind(e) == ("AccountUpdate", "FUNDING_FEE"))
    (bal,) = fee.a.B
    assert float(bal.bc) == pytest.approx(-f["amount"], abs=1e-8) and float(bal.bc) != 0.0
    assert float(bal.wb) == pytest.approx(wallet_before - f["amount"], abs=1e-8)
    if isolated:  # the isolated position the fee came from, as Binance sends it
        assert [(p.s, p.pa, p.mt) for p in fee.a.P] == [(BTC, "0.100", "isolated")]
    else:  # cross margin: the balance only
        assert fee.a.P == []
    assert fee.T == f["time"] == START_MS + 8 * 3600_000 and fee.E >= fee.T
    assert all(e.E >= e.T for e in events)
