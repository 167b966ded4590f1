"""Fixtures: a real exchange simulator on 127.0.0.1 (port 0, frozen clock) over real 5m bars,
and a driver that runs ``engine live`` in a thread while moving the market one bar at a time."""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.faults import FaultSpec
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread
from engine.timeutil import parse_end, parse_time

from .stepping import step_live

KEY = "liveKey0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789abc"
SECRET = "liveSecret0123456789abcdefABCDEF0123456789abcdefABCDEF012345678"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
CLOCK_START = "2024-01-01T06:00"
BAR = 300_000

STRATEGY = """
name: ema_fast_cross
params: {{fast: 3, slow: 8}}
data:
  symbols: [BTCUSDT, ETHUSDT]
  interval: 5m
  start: {start}
  end: {end}
  market: usdm
  funding: true
features: ["ema_{{fast}}", "ema_{{slow}}"]
signals:
  long: ema_{{fast}} > ema_{{slow}}
  short: ema_{{fast}} < ema_{{slow}}
risk:
  sizing: fixed
  fraction: 0.2
  max_position_pct: 50
  max_leverage: 2
  max_exposure_pct: 100
execution:
  order_type: market
  leverage: 2
  margin_mode: cross
  taker_fee: 0.0005
  maker_fee: 0.0002
  slippage_bps: 1
  initial_cash: 10000
"""


def ms(when: str) -> int:
    """UTC milliseconds of an ISO time."""
    t = parse_time(when)
    assert t is not None
    return t


def strategy(start: int | str = "2024-01-01", end: int | str = "2024-01-02", *,
             text: str = STRATEGY, sets: tuple[str, ...] = ()) -> Any:
    """The strategy ``text`` (a format string with ``{start}``/``{end}``), with ``--set`` overrides."""
    from engine.strategy.load import load_strategy_text

    return load_strategy_text(text.format(start=start, end=end), file="ema_fast_cross.yaml",
                              overrides=list(sets))


@pytest.fixture(scope="session")
def market(usdm_store: Path) -> MarketData:
    md, _ = MarketData.load(
        list(SYMBOLS), interval="5m", start_ms=ms("2023-12-31T18:00"),
        end_ms=parse_end("2024-01-02"), store=usdm_store,
    )
    return md


def sim_config(**kw: Any) -> ExchangeSimSettings:
    base: dict[str, Any] = {
        "symbols": SYMBOLS, "interval": "5m", "start_ms": parse_time(CLOCK_START), "speed": 0.0,
        "port": 0, "api_key": KEY, "api_secret": SECRET, "ping_interval_s": 0.0,
        "slippage_bps": 1.0, "balance": 10_000.0, "default_leverage": 2,
    }
    base.update(kw)
    return ExchangeSimSettings(**base)


@contextlib.contextmanager
def simulator(market: MarketData, **kw: Any) -> Iterator[ServerThread]:
    t = ServerThread(sim_config(**kw), market=market)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def admin(t: ServerThread, path: str, *, method: str = "GET") -> Any:
    assert t.server is not None
    req = urllib.request.Request(t.server.url + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def advance(t: ServerThread, ms: int) -> Any:
    return admin(t, f"/sim/advance?ms={ms}", method="POST")


def faults(spec: str) -> FaultSpec:
    return FaultSpec.parse(spec)


def drive(sim: ServerThread, graph: Any, results: Path, *, bars: int, between: Any = None,
          timeout: float = 60.0, since: int | None = None, ws_url: str | None = None,
          advance_ms: Callable[[int], int] | None = None, **options: Any) -> Any:
    """Run live (max_bars=bars) in a thread; after it is ready, advance the clock one bar at a
    time, waiting for each bar to be processed. ``between(k)`` runs after bar k is done;
    ``advance_ms(k)``: how far the clock moves for bar k (default one bar)."""
    from engine.live import LiveOptions

    assert sim.server is not None
    opts = LiveOptions(url=sim.server.url, ws_url=ws_url or sim.server.ws_url, key=KEY,
                       secret=SECRET, results=results, max_bars=bars, max_wait_s=2.0, since=since,
                       **options)
    count = itertools.count()

    def step() -> None:
        k = next(count)
        advance(sim, BAR if advance_ms is None else advance_ms(k))

    return step_live(graph, opts, bars=bars, advance=step, timeout=timeout, between=between)
