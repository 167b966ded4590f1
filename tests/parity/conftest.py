"""A live replay for parity tests: a real exchange simulator on 127.0.0.1 (port 0, frozen
clock) over real 5m bars, and ``engine.live.run_live`` in a thread while the test moves the
market one bar at a time (each bar waited for), as a user's live run would see it.

``engine parity`` itself always runs as a real subprocess (:func:`engine_cli`)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from live.stepping import step_live

from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread
from engine.timeutil import parse_time

KEY = "parityKey0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789a"
SECRET = "paritySecret0123456789abcdefABCDEF0123456789abcdefABCDEF01234567"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BAR = 300_000
REPO = Path(__file__).resolve().parents[2]


def load_market(store: Path, start: str, end_ms: int) -> MarketData:
    """Real 5m bars (and funding) of both symbols up to ``end_ms`` from the test store."""
    md, _ = MarketData.load(list(SYMBOLS), interval="5m", start_ms=parse_time(start),
                            end_ms=end_ms, store=store)
    return md


@contextmanager
def simulator(market: MarketData, clock_start: int, **kw: Any) -> Iterator[ServerThread]:
    """The simulator, its clock frozen at ``clock_start`` (moved by :func:`advance` only),
    with the strategy's fees and cash; request limits out of the way of a fast replay."""
    base: dict[str, Any] = {
        "symbols": SYMBOLS, "interval": "5m", "start_ms": clock_start, "speed": 0.0,
        "port": 0, "api_key": KEY, "api_secret": SECRET, "ping_interval_s": 0.0,
        "slippage_bps": 1.0, "balance": 10_000.0, "default_leverage": 2,
        "weight_limit": 10**9, "orders_10s": 10**9, "orders_1m": 10**9,
    }
    base.update(kw)
    t = ServerThread(ExchangeSimSettings(**base), market=market)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def advance(conn: http.client.HTTPConnection, ms: int) -> None:
    """Move the simulator's clock by ``ms`` over ``conn``, a kept-alive connection to it (a
    replay advances once a bar, and a new TCP connection each time cost ~15% of its time)."""
    conn.request("POST", f"/sim/advance?ms={ms}")
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body


def replay(sim: ServerThread, graph: Any, results: Path, *, bars: int,
           since: int | None = None, timeout: float = 60.0) -> Any:
    """Run live (``max_bars=bars``) in a thread; once it is ready, advance the simulator's
    clock one bar at a time, each time waiting until live mode has decided that bar."""
    from engine.live import LiveOptions

    assert sim.server is not None
    opts = LiveOptions(url=sim.server.url, ws_url=sim.server.ws_url, key=KEY, secret=SECRET,
                       results=results, max_bars=bars, max_wait_s=2.0, since=since)
    url = urllib.parse.urlsplit(sim.server.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        return step_live(graph, opts, bars=bars, advance=lambda: advance(conn, BAR),
                         timeout=timeout)
    finally:
        conn.close()


def engine_cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``engine ARGS`` as a real subprocess (the installed console script's module)."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def parity_json(run_id: str, results: Path, store: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """``engine parity RUN --json``: its exit code and its one JSON object."""
    p = engine_cli("parity", run_id, "--json", "--results", str(results), "--store", str(store),
                   *extra)
    lines = p.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return p.returncode, json.loads(lines[0])


#: where every replay's market clock starts (the first live bar)
CLOCK_START = "2024-01-01T06:00"
#: the last bar any replay here may reach
MARKET_END = "2024-02-01T00:00"


@pytest.fixture(scope="session")
def market(usdm_store: Path) -> MarketData:
    return load_market(usdm_store, "2023-12-01", parse_time(MARKET_END))
