"""The one classification table: every ccxt error class and every Binance code we map, by
what the caller must do. Codes go through ccxt's own error handler at a make_ccxt URL (the
USD-M table), and the common ones are provoked on the simulator end to end."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from typing import Any

import ccxt
import pytest

from engine.binance import Kind, classify, make_ccxt
from engine.binance.errors import RequestRejected, binance_code
from engine.exchange_sim import errors as E
from engine.exchange_sim.market import MarketData

from .conftest import KEY, SECRET, Scripted, venue

T, R, F = Kind.TEMPORARY, Kind.REJECTED, Kind.FATAL

# ccxt class -> (kind, unknown status). Every ccxt error class must be here (see below).
CLASSES: dict[str, tuple[Kind, bool]] = {
    "BaseError": (R, False), "ExchangeError": (R, False), "UnsubscribeError": (R, False),
    # temporary, status unknown: the request may have been executed
    "OperationFailed": (T, True), "NetworkError": (T, True), "RequestTimeout": (T, True),
    "ExchangeNotAvailable": (T, True), "OnMaintenance": (T, True), "InvalidNonce": (T, True),
    "ChecksumError": (T, True), "BadResponse": (T, True), "NullResponse": (T, True),
    "CancelPending": (T, True),
    # temporary, refused before processing
    "DDoSProtection": (T, False), "RateLimitExceeded": (T, False),
    # rejected: record and continue
    "InvalidOrder": (R, False), "OrderNotFound": (R, False), "DuplicateOrderId": (R, False),
    "OrderImmediatelyFillable": (R, False), "OrderNotFillable": (R, False),
    "OrderNotCached": (R, False), "ContractUnavailable": (R, False),
    "InsufficientFunds": (R, False), "BadRequest": (R, False), "OperationRejected": (R, False),
    "NoChange": (R, False), "MarginModeAlreadySet": (R, False), "MarketClosed": (R, False),
    "InvalidAddress": (R, False), "AddressPending": (R, False),
    # fatal: fix keys, permissions or config
    "AuthenticationError": (F, False), "PermissionDenied": (F, False),
    "AccountSuspended": (F, False), "AccountNotEnabled": (F, False), "NotSupported": (F, False),
    "BadSymbol": (F, False), "ArgumentsRequired": (F, False), "ExchangeClosedByUser": (F, False),
    "InvalidProxySettings": (F, False), "RestrictedLocation": (F, False),
    "ManualInteractionNeeded": (F, False),
}


def test_every_ccxt_error_class_has_a_kind() -> None:
    found = {n for n, c in vars(ccxt).items() if inspect.isclass(c) and issubclass(c, ccxt.BaseError)}
    assert found == set(CLASSES), "a ccxt error class without a decided kind (or a stale entry)"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_ccxt_class(name: str) -> None:
    v = classify(getattr(ccxt, name)("binanceusdm something went wrong"))
    assert (v.kind, v.unknown_status, v.reason, v.code) == (*CLASSES[name], name, None)


@pytest.mark.parametrize("err", [ValueError("a bug"), asyncio.CancelledError(), KeyError("x")])
def test_not_a_ccxt_error_is_fatal(err: BaseException) -> None:
    assert classify(err).kind is F


def _sim(fn: Any, *args: Any) -> tuple[int, int, str]:
    e = fn(*args)
    return e.status, e.code, e.msg


# Binance code -> the answer (HTTP status, body) and the kind expected. Messages are the
# simulator's (Binance's own wording, which ccxt matches on first).
ANSWERS: dict[int, tuple[tuple[int, int, str], Kind, bool]] = {
    -1000: (_sim(E.unknown), T, True),
    -1001: (_sim(E.service_unavailable), T, True),
    -1006: ((502, -1006, "An unexpected response was received from the message bus."), T, True),
    -1007: (_sim(E.unknown_status), T, True),
    -1008: ((503, -1008, "Server is currently overloaded with other requests."), T, True),
    -1003: (_sim(E.too_many_requests, 2400, 5), T, False),
    -1015: ((429, -1015, "Too many new orders; current limit is 300 orders per TEN_SECONDS."), T, False),
    -1021: (_sim(E.timestamp_outside), T, True),
    -1022: (_sim(E.bad_signature), F, False),
    -2014: (_sim(E.bad_api_key_format), F, False),
    -2015: (_sim(E.bad_api_key), F, False),
    -1121: (_sim(E.bad_symbol), F, False),
    -4028: (_sim(E.bad_leverage), F, False),
    -4047: (_sim(E.margin_type_open_orders), F, False),
    -4048: (_sim(E.margin_type_position), F, False),
    -4061: (_sim(E.position_side_mismatch), F, False),
    -4120: ((400, -4120, "Order type not supported for this endpoint. Please use the Algo "
                         "Order API endpoints instead."), F, False),
    -1102: (_sim(E.mandatory, "quantity"), R, False),
    -1106: (_sim(E.not_required, "price"), R, False),
    -1111: (_sim(E.bad_precision), R, False),
    -1115: (_sim(E.bad_tif), R, False),
    -1116: (_sim(E.bad_order_type), R, False),
    -1117: (_sim(E.bad_side), R, False),
    -1130: (_sim(E.illegal, "price"), R, False),
    -2011: (_sim(E.cancel_rejected), R, False),
    -2013: (_sim(E.no_such_order), R, False),
    -2018: ((400, -2018, "Balance is insufficient."), R, False),
    -2019: (_sim(E.margin_insufficient), R, False),
    -2021: (_sim(E.would_trigger), R, False),
    -2022: (_sim(E.reduce_only_rejected), R, False),
    -4001: (_sim(E.price_le_zero), R, False),
    -4003: (_sim(E.qty_le_zero), R, False),
    -4004: (_sim(E.qty_below_min), R, False),
    -4005: (_sim(E.qty_above_max), R, False),
    -4014: (_sim(E.price_not_tick), R, False),
    -4023: (_sim(E.qty_not_step), R, False),
    -4046: (_sim(E.margin_type_unchanged), R, False),
    -4059: (_sim(E.position_side_unchanged), R, False),
    -4116: ((400, -4116, "ClientOrderId is duplicated."), R, False),
    -4136: ((400, -4136, "Target strategy invalid for orderType MARKET,closePosition true"), R, False),
    -4164: (_sim(E.min_notional, "100"), R, False),
    -5021: (_sim(E.fok_rejected), R, False),
    -5022: (_sim(E.gtx_rejected), R, False),
}


def ccxt_error_for(status: int, code: int, msg: str) -> ccxt.BaseError:
    """What ccxt raises for this answer from a make_ccxt venue (its real error handler)."""
    ex = make_ccxt("http://127.0.0.1:9", "k", "s")
    body = json.dumps({"code": code, "msg": msg})
    url = "http://127.0.0.1:9/fapi/v1/order"
    try:
        ex.handle_errors(status, "reason", url, "POST", {}, body, json.loads(body), None, None)
        ex.handle_http_status_code(status, "reason", url, "POST", body)
    except ccxt.BaseError as err:
        return err
    raise AssertionError(f"ccxt raised nothing for {code}")


@pytest.mark.parametrize("code", sorted(ANSWERS))
def test_binance_code(code: int) -> None:
    (status, c, msg), kind, unknown = ANSWERS[code]
    err = ccxt_error_for(status, c, msg)
    v = classify(err)
    assert (v.kind, v.unknown_status, v.code) == (kind, unknown, code), type(err).__name__


def test_lookup_and_no_change_flags() -> None:
    def rejected(code: int) -> RequestRejected:
        (status, c, msg), _, _ = ANSWERS[code]
        return RequestRejected("x", verdict=classify(ccxt_error_for(status, c, msg)))

    assert rejected(-2013).not_found and rejected(-2011).not_found
    assert rejected(-4046).no_change and rejected(-4059).no_change
    assert not rejected(-2019).not_found and not rejected(-2019).no_change


def test_binance_code_from_text() -> None:
    assert binance_code(ccxt.InsufficientFunds('binanceusdm {"code":-2019,"msg":"x"}')) == -2019
    assert binance_code(ccxt.RequestTimeout("binanceusdm GET http://x timed out")) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _caught(coro: Any) -> BaseException:
    try:
        await coro
    except ccxt.BaseError as err:
        return err
    raise AssertionError("the call did not fail")


async def test_errors_provoked_on_the_simulator(market: MarketData) -> None:
    """Each error as a real venue answers it, through unmodified ccxt, then classified."""
    async with venue(market) as (server, client, _, _s):
        ex = client.ex
        bad_secret = make_ccxt(server.url, KEY, "wrong" * 13, async_=True)
        bad_key = make_ccxt(server.url, "unknownKey" * 6, SECRET, async_=True)
        skewed = make_ccxt(server.url, KEY, SECRET, async_=True)
        skewed.options["timeDifference"] = 120_000  # our clock 2 min behind: -1021
        try:
            got = {
                "-1022": await _caught(bad_secret.fapiPrivateV2GetAccount()),
                "-2015": await _caught(bad_key.fapiPrivateV2GetAccount()),
                "-1021": await _caught(skewed.fapiPrivateV2GetAccount()),
            }
        finally:
            for e in (bad_secret, bad_key, skewed):
                await e.close()
        got["-1121"] = await _caught(ex.fapiPublicGetKlines({"symbol": "DOGEUSDT", "interval": "5m"}))
        got["-4028"] = await _caught(ex.fapiPrivatePostLeverage({"symbol": "BTCUSDT", "leverage": 200}))
        await ex.fapiPrivatePostMarginType({"symbol": "BTCUSDT", "marginType": "ISOLATED"})
        got["-4046"] = await _caught(
            ex.fapiPrivatePostMarginType({"symbol": "BTCUSDT", "marginType": "ISOLATED"}))
        got["-2013"] = await _caught(
            ex.fapiPrivateGetOrder({"symbol": "BTCUSDT", "origClientOrderId": "nope"}))
        got["-2011"] = await _caught(
            ex.fapiPrivateDeleteOrder({"symbol": "BTCUSDT", "origClientOrderId": "nope"}))
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "50"}
        got["-2019"] = await _caught(ex.fapiPrivatePostOrder(order))
        got["-4164"] = await _caught(ex.fapiPrivatePostOrder({**order, "quantity": "0.001"}))
        got["-1111"] = await _caught(ex.fapiPrivatePostOrder({**order, "quantity": "0.0101"}))
        server.faults = faults = Scripted()
        faults.before = 1
        got["-1001"] = await _caught(ex.fapiPublicGetTime())
        faults.after = 1
        got["-1007"] = await _caught(ex.fapiPrivatePostOrder({**order, "quantity": "0.01"}))
        faults.burst = 3  # a 429 burst with 3 s left
        got["429"] = await _caught(ex.fapiPublicGetTime())
        retry_after = ex.last_response_headers.get("Retry-After")
    refused = make_ccxt(f"http://127.0.0.1:{_free_port()}", async_=True)
    try:
        got["refused"] = await _caught(refused.fapiPublicGetTime())
    finally:
        await refused.close()
    expect = {
        "-1022": (F, -1022), "-2015": (F, -2015), "-1021": (T, -1021), "-1121": (F, -1121),
        "-4028": (F, -4028), "-4046": (R, -4046), "-2013": (R, -2013), "-2011": (R, -2011),
        "-2019": (R, -2019), "-4164": (R, -4164), "-1111": (R, -1111), "-1001": (T, -1001),
        "-1007": (T, -1007), "429": (T, -1003), "refused": (T, None),
    }
    seen = {k: (classify(e).kind, classify(e).code) for k, e in got.items()}
    assert seen == expect, {k: type(e).__name__ for k, e in got.items()}
    assert classify(got["-1007"]).unknown_status and not classify(got["429"]).unknown_status
    assert retry_after == "3"
    assert isinstance(got["refused"], ccxt.NetworkError)
