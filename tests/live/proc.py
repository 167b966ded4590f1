"""``engine live`` as a real subprocess (the command as users type it) against the exchange
simulator of the test process, and what the tests read while it runs: the run log through
plain sqlite3 (WAL: reading never blocks the writer), /metrics, the exchange through ccxt."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.binance.venue import make_ccxt
from engine.exchange_sim.faults import FaultSpec
from engine.exchange_sim.runner import ServerThread

from .conftest import KEY, SECRET, SYMBOLS, advance

BAR = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def key_file(folder: Path) -> Path:
    path = folder / "keys.txt"
    path.write_text(f"{KEY}\n{SECRET}\n")
    path.chmod(0o600)
    return path


def sql(results: Path, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``query`` over the run log (empty while the file or table does not exist)."""
    path = results / "runlog.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(query, args).fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return []
        raise
    finally:
        conn.close()


class LiveProc:
    """One ``python -m engine live ...`` process; stdout and stderr go to files in ``folder``."""

    count = 0

    def __init__(self, sim: ServerThread, strategy: Path, results: Path, folder: Path, *,
                 args: tuple[str, ...] = (), crash: str | None = None, keys: bool = True) -> None:
        assert sim.server is not None
        LiveProc.count += 1
        self.results = results
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "engine", "live", str(strategy), "--url", sim.server.url,
                    "--ws-url", sim.server.ws_url, "--results", str(results),
                    "--metrics-port", str(self.port), "--bar-grace", "0.5", *args]
        if keys:
            self.cmd += ["--key-file", str(key_file(folder))]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "ENGINE_LIVE"))}
        if crash:
            env["ENGINE_LIVE_CRASH_AT"] = crash
        self.crash = crash
        self.out = folder / f"stdout-{LiveProc.count}.txt"
        self.err = folder / f"stderr-{LiveProc.count}.txt"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.p = subprocess.Popen(self.cmd, stdout=out, stderr=err, env=env)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """True once it streams (its ``ready`` event); False if it died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for (data,) in sql(self.results, "SELECT data FROM system_events "
                               "WHERE message LIKE 'ready:%' ORDER BY rowid DESC LIMIT 5"):
                if json.loads(data).get("pid") == self.pid:
                    return True
            if not self.alive():
                return False
            time.sleep(0.05)
        raise AssertionError(f"engine live did not get ready in {timeout}s: {self.stderr()[-2000:]}")

    def wait_bar(self, t: int, timeout: float = 30.0) -> bool:
        """True once bar ``t`` is done (its equity row); False if the process died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sql(self.results, "SELECT 1 FROM equity WHERE time = ?", (t,)):
                return True
            if not self.alive():
                return False
            time.sleep(0.02)
        raise AssertionError(f"bar {t} was not done in {timeout}s: {self.stderr()[-2000:]}")

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.p.wait(10)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.p.wait(timeout)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def next_bar(sim: ServerThread, *, slow: bool = False) -> int:
    """Close the bar in progress (the clock moves one bar); returns its open time. ``slow``:
    every REST answer comes 0.3 s late from now on (the simulator's latency fault)."""
    if slow:
        sim.call(lambda s: setattr(s.faults, "spec", FaultSpec(latency_s=0.3)))
    return int(advance(sim, BAR)["marketTime"]) - BAR


def exchange_orders(sim: ServerThread) -> list[str]:
    """Every client order id the exchange ever accepted, through ccxt unmodified: plain
    orders (``fetch_orders``) and conditional ones (``GET /fapi/v1/allAlgoOrders``)."""
    assert sim.server is not None
    ex = make_ccxt(sim.server.url, KEY, SECRET)
    ex.load_markets()
    out = []
    for s in SYMBOLS:
        m = next(m["symbol"] for m in ex.markets.values() if m["id"] == s and m.get("swap"))
        out += [str(o["clientOrderId"]) for o in ex.fetch_orders(m, limit=1000)]
        out += [str(a["clientAlgoId"]) for a in ex.fapiPrivateGetAllAlgoOrders({"symbol": s, "limit": 1000})]
    return out


def exchange_positions(sim: ServerThread) -> dict[str, float]:
    return sim.call(lambda s: {x: float(s.exchange.book.qty(x)) for x in SYMBOLS})


def open_algo(sim: ServerThread) -> list[tuple[str, str]]:
    """(symbol, clientAlgoId) of the conditional orders resting at the exchange."""
    return sim.call(lambda s: sorted((o.symbol, o.client_id) for o in s.exchange.open_algo.values()))
