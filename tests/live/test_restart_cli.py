"""Restart after K bars (reconcile: adopt the position, no duplicate orders) and the CLI's
door checks (no venue, no key, ML strategies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.exchange_sim.market import MarketData
from engine.runlog.query import run_query

from .conftest import drive, simulator, strategy


def test_restart_reconciles_and_never_doubles(market: MarketData, tmp_path: Path) -> None:
    with simulator(market) as sim:
        first = drive(sim, strategy(), tmp_path, bars=40)
        n_before = sim.call(lambda s: len(s.exchange.orders))
        second = drive(sim, strategy(), tmp_path, bars=40)
        orders = sim.call(lambda s: [o.client_id for o in s.exchange.orders.values()])
    assert first.status == second.status == "ok"
    assert len(orders) == len(set(orders))
    rows = run_query(
        "SELECT run_id, count(*) AS n FROM orders WHERE status = 'filled' GROUP BY run_id", results_dir=tmp_path
    ).to_pylist()
    by_run = {r["run_id"]: r["n"] for r in rows}
    assert by_run.get(first.run_id, 0) == n_before
    assert sum(by_run.values()) == len(orders)
    ev = run_query(
        f"SELECT data FROM events WHERE run_id = '{second.run_id}' AND component = 'reconcile'",
        results_dir=tmp_path,
    ).to_pylist()
    assert len(ev) == 1 and "positions" in ev[0]["data"]
    # the restarted run adopted the first run's position: its last targets
    import json

    held = json.loads(ev[0]["data"])["positions"]
    last = run_query(
        f"SELECT symbol, target_position FROM decisions WHERE run_id = '{first.run_id}' "
        f"QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY open_time DESC) = 1",
        results_dir=tmp_path,
    ).to_pylist()
    assert {r["symbol"]: r["target_position"] for r in last if r["target_position"] != 0} == held
    assert any(v != 0 for v in held.values())


def _engine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          timeout=120, env=e)


def test_cli_door_checks(tmp_path: Path) -> None:
    r = _engine("live", "strategies/ema_cross.yaml", "--results", str(tmp_path))
    assert r.returncode == 2 and "--testnet, or --url and --ws-url" in r.stderr
    r = _engine("live", "strategies/ema_cross.yaml", "--url", "http://127.0.0.1:9", "--ws-url",
                "ws://127.0.0.1:9", "--results", str(tmp_path))
    assert r.returncode == 2 and "BINANCE_API_KEY" in r.stderr
    # the shipped ensemble (ML, loss-streak breaker) passes the strategy checks: it stops at the key
    r = _engine("live", "strategies/ensemble.yaml", "--url", "http://127.0.0.1:9", "--ws-url",
                "ws://127.0.0.1:9", "--results", str(tmp_path))
    assert r.returncode == 2 and "BINANCE_API_KEY" in r.stderr, r.stderr
    # no strategy: the shipped ensemble (it passes the checks and stops at the key)
    r = _engine("live", "--testnet", "--results", str(tmp_path))
    assert r.returncode == 2 and "BINANCE_API_KEY" in r.stderr, r.stderr
    # a limit entry at the close itself (offset 0) is rejected, naming the key
    r = _engine("live", "strategies/ensemble.yaml", "--testnet", "--set", "execution.order_type=limit",
                "--results", str(tmp_path), env={"BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"})
    assert r.returncode == 2 and "execution.limit_offset_bps" in r.stderr, r.stderr
    assert not (tmp_path / "runlog.sqlite").exists()
