"""Fixtures: a real simulator on 127.0.0.1 (port 0) replaying real data from the store."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread
from engine.timeutil import parse_end, parse_time

KEY = "simKey0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abcd"
SECRET = "simSecret0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
START = "2024-01-01"  # no 1m data here: partial bars are interpolated
FINE_START = "2023-07-20"  # 1m data here: partial bars are built from it
START_MS = 1_704_067_200_000  # START in ms (2024-01-01T00:00Z)


def _load(store: Path, start: str, end: str) -> MarketData:
    start_ms = parse_time(start)
    assert start_ms is not None
    md, _ = MarketData.load(
        list(SYMBOLS), interval="5m", start_ms=start_ms, end_ms=parse_end(end), store=store
    )
    return md


@pytest.fixture(scope="session")
def market(usdm_store: Path) -> MarketData:
    """BTCUSDT + ETHUSDT 5m up to 2024-01-03, replay from 2024-01-01 (interpolated partials)."""
    return _load(usdm_store, START, "2024-01-03")


@pytest.fixture(scope="session")
def fine_market(usdm_store: Path) -> MarketData:
    """5m replay from 2023-07-20 where the store has 1m bars (partials from 1m data)."""
    return _load(usdm_store, FINE_START, "2023-07-21")


def make_config(start: str = START, **kw: Any) -> ExchangeSimSettings:
    base: dict[str, Any] = {
        "symbols": SYMBOLS, "interval": "5m", "start_ms": parse_time(start), "speed": 0.0, "port": 0,
        "api_key": KEY, "api_secret": SECRET, "ping_interval_s": 0.0,
    }
    base.update(kw)
    return ExchangeSimSettings(**base)


@contextlib.contextmanager
def running(market: MarketData, **kw: Any) -> Iterator[ServerThread]:
    start = kw.pop("start", START)
    t = ServerThread(make_config(start, **kw), market=market)
    t.start()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture()
def sim(market: MarketData) -> Iterator[ServerThread]:
    """A frozen-clock simulator (speed 0): the market moves only through /sim/advance."""
    with running(market) as t:
        yield t


def room_in_weight_window(seconds: float = 20.0) -> None:
    """Wait for the next calendar minute when fewer than ``seconds`` of this one are left.
    Binance, and the simulator, count request weight per calendar minute of wall time; a
    test that adds up the weight of a sequence of requests starts it here, so that the
    sequence does not straddle two windows (it did once in ~60 CI runs: 19 for 21)."""
    left = 60.0 - time.time() % 60.0
    if left < seconds:
        time.sleep(left + 0.05)


def url(t: ServerThread) -> str:
    assert t.server is not None
    return t.server.url


def admin(t: ServerThread, path: str, *, method: str = "GET") -> Any:
    req = urllib.request.Request(url(t) + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def advance(t: ServerThread, ms: int) -> Any:
    return admin(t, f"/sim/advance?ms={ms}", method="POST")
