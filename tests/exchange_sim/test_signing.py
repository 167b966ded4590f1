"""Signing as Binance does it: the documented test vector, and raw HTTP requests."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from engine.exchange_sim import errors as E
from engine.exchange_sim.signing import check_signed, sign, split_signature

from .conftest import KEY, SECRET, url

VECTOR_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
VECTOR_PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
)
VECTOR_SIG = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_reference_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_PAYLOAD) == VECTOR_SIG
    # query + body concatenated, the signature taken out wherever it is
    q, b = VECTOR_PAYLOAD[:40], VECTOR_PAYLOAD[40:] + "&signature=" + VECTOR_SIG
    assert split_signature(q, b) == (VECTOR_PAYLOAD, VECTOR_SIG)
    params = dict(urllib.parse.parse_qsl(VECTOR_PAYLOAD))
    check_signed(query=q, body=b, params=params, secret=VECTOR_SECRET, now_ms=1591702613943 + 10)
    with pytest.raises(E.BinanceError) as err:
        check_signed(query=q, body=b, params=params, secret=VECTOR_SECRET, now_ms=1591702613943 + 5001)
    assert err.value.code == -1021 and "outside of the recvWindow" in err.value.msg
    with pytest.raises(E.BinanceError) as err:
        check_signed(query=q, body=b, params=params, secret=VECTOR_SECRET, now_ms=1591702613943 - 1000)
    assert err.value.code == -1021 and "ahead" in err.value.msg
    with pytest.raises(E.BinanceError) as err:
        check_signed(query=q.replace("BUY", "SELL"), body=b, params=params, secret=VECTOR_SECRET, now_ms=1591702613943)
    assert err.value.code == -1022


def _send(base: str, method: str, path: str, query: str = "", body: str | None = None, *, key: str | None = KEY,
          ctype: str = "application/x-www-form-urlencoded") -> tuple[int, dict, object]:
    req = urllib.request.Request(base + path + ("?" + query if query else ""), method=method,
                                 data=body.encode() if body is not None else None)
    if key is not None:
        req.add_header("X-MBX-APIKEY", key)
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def _signed(params: str) -> str:
    return params + "&signature=" + sign(SECRET, params)


def test_raw_signed_requests(sim) -> None:  # type: ignore[no-untyped-def]
    base = url(sim)
    now = int(time.time() * 1000)
    # form body, mixed with the query string: HMAC over query + body
    q = "symbol=BTCUSDT&side=BUY"
    b = f"type=LIMIT&timeInForce=GTC&quantity=0.010&price=41500.0&timestamp={now}"
    status, headers, body = _send(base, "POST", "/fapi/v1/order", q, b + "&signature=" + sign(SECRET, q + b))
    assert status == 200, body
    assert isinstance(body, dict) and body["status"] == "NEW" and body["price"] == "41500.00" and body["origQty"] == "0.010"
    assert headers["X-MBX-ORDER-COUNT-10S"] == "1" and headers["X-MBX-ORDER-COUNT-1M"] == "1"
    assert headers["X-MBX-USED-WEIGHT-1M"] == "0"  # POST /order weighs 0 on the IP budget
    # a JSON body is not a form: the mandatory parameters are missing
    status, _, body = _send(base, "POST", "/fapi/v1/order", "", json.dumps({"symbol": "BTCUSDT"}), ctype="application/json")
    assert status == 400 and body["code"] == -1102  # type: ignore[index]
    # tampered, stale, missing key, wrong key
    p = f"timestamp={now}"
    status, _, body = _send(base, "GET", "/fapi/v2/balance", _signed(p).replace(f"{now}", f"{now + 1}", 1))
    assert (status, body["code"]) == (400, -1022)  # type: ignore[index]
    stale = f"timestamp={now - 70_000}&recvWindow=60000"
    status, _, body = _send(base, "GET", "/fapi/v2/balance", _signed(stale))
    assert (status, body["code"]) == (400, -1021)  # type: ignore[index]
    status, _, body = _send(base, "GET", "/fapi/v2/balance", _signed(p), key=None)
    assert (status, body["code"]) == (401, -2014)  # type: ignore[index]
    status, _, body = _send(base, "GET", "/fapi/v2/balance", _signed(p), key="someoneElse")
    assert (status, body["code"]) == (401, -2015)  # type: ignore[index]
    assert SECRET not in json.dumps(body)
    status, headers, body = _send(base, "GET", "/fapi/v2/balance", _signed(f"timestamp={int(time.time() * 1000)}"))
    assert status == 200 and body[0]["asset"] == "USDT" and body[0]["balance"] == "10000.00000000"  # type: ignore[index]
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 5
    # unknown orders
    status, _, body = _send(base, "DELETE", "/fapi/v1/order", _signed(f"symbol=BTCUSDT&orderId=1&timestamp={int(time.time() * 1000)}"))
    assert (status, body["code"]) == (400, -2011)  # type: ignore[index]
    status, _, body = _send(base, "GET", "/fapi/v1/order", _signed(f"symbol=BTCUSDT&orderId=1&timestamp={int(time.time() * 1000)}"))
    assert (status, body["code"]) == (400, -2013)  # type: ignore[index]
    status, _, body = _send(base, "GET", "/fapi/v1/klines", "symbol=XRPUSDT&interval=5m")
    assert (status, body["code"]) == (400, -1121)  # type: ignore[index]
    # listenKey: API key only, no signature
    status, _, body = _send(base, "POST", "/fapi/v1/listenKey", "", "")
    assert status == 200 and len(body["listenKey"]) == 64  # type: ignore[index]
