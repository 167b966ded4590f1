"""One clock a client can sync to: /fapi/v1/time, order times and event times are the market
clock; a signed request may carry the wall clock (ccxt by default, the official SDK) or a
clock synced to a served serverTime (ccxt's ``adjustForTimeDifference``, python-binance's
``timestamp_offset``), even after the market clock jumped or ran ahead; anything else is -1021.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import ccxt
import pytest

from engine.binance.venue import make_ccxt
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread
from engine.exchange_sim.signing import sign

from .conftest import KEY, SECRET, advance, running, url

BTC = "BTC/USDT:USDT"
BAR = 300_000


def _signed(sim: ServerThread, method: str, path: str, params: str, ts: int) -> tuple[int, dict]:
    """A raw signed request whose timestamp the caller chose."""
    q = f"{params}&timestamp={ts}" if params else f"timestamp={ts}"
    req = urllib.request.Request(f"{url(sim)}{path}?{q}&signature={sign(SECRET, q)}", method=method)
    req.add_header("X-MBX-APIKEY", KEY)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _server_time(sim: ServerThread) -> int:
    with urllib.request.urlopen(f"{url(sim)}/fapi/v1/time", timeout=10) as r:
        return int(json.loads(r.read())["serverTime"])


def _wall() -> int:
    return int(time.time() * 1000)


def test_ccxt_synced_to_server_time(sim: ServerThread) -> None:
    ex = make_ccxt(url(sim), KEY, SECRET, adjustForTimeDifference=True)
    ex.load_markets()  # fetches /fapi/v1/time and signs with that clock from now on
    start = sim.config.start_ms
    assert abs(ex.nonce() - start) < 5_000 and abs(ex.nonce() - _wall()) > 86_400_000
    o = ex.create_order(BTC, "market", "buy", 0.01)
    assert ex.fetch_order(o["id"], BTC)["status"] == "closed"
    assert o["timestamp"] == start  # the order's time is the market clock /time served
    advance(sim, 12 * BAR)  # the market jumps an hour; the client keeps the offset it had
    assert ex.fetch_balance()["USDT"]["total"] > 0
    ex.load_time_difference()  # and a re-sync is as good
    p = ex.create_order(BTC, "market", "sell", 0.01)
    assert p["timestamp"] == start + 12 * BAR and ex.fetch_positions([BTC]) == []


def test_wall_clock_client_and_synced_client_side_by_side(sim: ServerThread) -> None:
    wall_client = make_ccxt(url(sim), KEY, SECRET)  # engine.binance's own: signs with time.time()
    wall_client.load_markets()
    offset = _server_time(sim) - _wall()  # python-binance's timestamp_offset
    status, body = _signed(sim, "POST", "/fapi/v1/order",
                           "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.010&newClientOrderId=py-1",
                           _wall() + offset)
    assert status == 200 and body["clientOrderId"] == "py-1", body
    status, body = _signed(sim, "GET", "/fapi/v1/order", "symbol=BTCUSDT&origClientOrderId=py-1", _wall() + offset)
    assert status == 200 and body["status"] == "FILLED" and body["updateTime"] == sim.config.start_ms
    assert wall_client.fetch_order(None, BTC, params={"origClientOrderId": "py-1"})["status"] == "closed"


def test_timestamps_no_clock_explains_are_refused(sim: ServerThread) -> None:
    now_market = _server_time(sim)
    assert _signed(sim, "GET", "/fapi/v2/balance", "", _wall())[0] == 200
    assert _signed(sim, "GET", "/fapi/v2/balance", "", now_market)[0] == 200
    status, body = _signed(sim, "GET", "/fapi/v2/balance", "", now_market - 600_000)  # never served
    assert (status, body["code"]) == (400, -1021) and "outside of the recvWindow" in body["msg"]
    status, body = _signed(sim, "GET", "/fapi/v2/balance", "", _wall() + 600_000)  # ahead of every clock
    assert (status, body["code"]) == (400, -1021) and "ahead" in body["msg"]
    status, body = _signed(sim, "GET", "/fapi/v2/balance", "recvWindow=60000", _wall() - 70_000)
    assert (status, body["code"]) == (400, -1021)


def test_synced_client_while_the_market_runs_ahead(market: MarketData) -> None:
    """At 600x the market clock gains 10 minutes per real second: a client that synced once
    drifts from it by as much, and still signs in a clock the server accepts."""
    with running(market, speed=600.0) as sim:
        ex = make_ccxt(url(sim), KEY, SECRET, adjustForTimeDifference=True)
        ex.load_markets()
        synced_at = _server_time(sim)
        time.sleep(1.0)
        assert _server_time(sim) - synced_at >= 500_000
        o = ex.create_order(BTC, "market", "buy", 0.01)
        assert ex.fetch_order(o["id"], BTC)["status"] == "closed"
        with pytest.raises(ccxt.InvalidNonce):  # a clock nobody served: refused, as on Binance
            ex.options["timeDifference"] = ex.options["timeDifference"] + 3_600_000
            ex.fetch_balance()
