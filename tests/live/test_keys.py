"""The API key and secret appear nowhere: not in stdout or stderr, not in the run log
(SQLite, its WAL, Parquet), the checkpoint, a report, or /metrics; a key file others may
read is refused; a key the venue refuses is a one-line error (exit 2); Binance's production
venue needs --production."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from engine.exchange_sim.market import MarketData

from .conftest import KEY, SECRET, simulator
from .proc import LiveProc, next_bar, sql
from .test_exits import EXIT_STRATEGY


def _engine(*args: str) -> subprocess.CompletedProcess[bytes]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, timeout=120,
                          env=env)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_keys_appear_nowhere(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    strat = tmp_path / "ema_fast_cross.yaml"
    strat.write_text(EXIT_STRATEGY.format(start="2024-01-01", end="2024-01-02"))
    results = tmp_path / "results"
    secrets = (KEY.encode(), SECRET.encode())
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path)
        assert proc.wait_ready()
        for _ in range(12):
            assert proc.wait_bar(next_bar(sim))
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5) as r:
            metrics = r.read()
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr()[-3000:]
    (run_id,), = sql(results, "SELECT run_id FROM runs")
    assert sql(results, "SELECT count(*) FROM orders WHERE status = 'filled'")[0][0] > 0
    report = _engine("report", run_id, "--results", str(results))
    assert report.returncode == 0, report.stderr[-2000:]
    query = _engine("query", "SELECT * FROM events", "--results", str(results))
    assert query.returncode == 0
    # a backtest in the same folder publishes Parquet beside the live run's SQLite
    bt = _engine("backtest", str(strat), "--results", str(results), "--store", str(usdm_store),
                 "--end", "2024-01-01T12:00")
    assert bt.returncode == 0 and list(results.rglob("*.parquet")), bt.stderr[-2000:]
    places = {"stdout": proc.out.read_bytes(), "stderr": proc.err.read_bytes(), "metrics": metrics,
              "report stdout": report.stdout + report.stderr, "query": query.stdout,
              "backtest": bt.stdout + bt.stderr}
    places.update({str(p.relative_to(tmp_path)): p.read_bytes() for p in _files(results)})
    assert any(p.endswith(".html") for p in places) and any("runlog.sqlite" in p for p in places)
    # the checkpoint is in runlog.sqlite (run_state), searched with it: it is there
    db = sqlite3.connect(results / "runlog.sqlite")
    assert db.execute("SELECT count(*) FROM run_state WHERE name = 'checkpoint'").fetchone()[0]
    db.close()
    leaked = [name for name, data in places.items() for s in secrets if s in data]
    assert not leaked, f"the key or secret is in {leaked}"


def test_key_file_door_checks(tmp_path: Path) -> None:
    loose = tmp_path / "keys.txt"
    loose.write_text(f"{KEY}\n{SECRET}\n")
    loose.chmod(0o644)
    r = _engine("live", "strategies/ema_cross.yaml", "--url", "http://127.0.0.1:9", "--ws-url",
                "ws://127.0.0.1:9", "--key-file", str(loose), "--results", str(tmp_path))
    assert r.returncode == 2 and b"chmod 600" in r.stderr, r.stderr
    assert KEY.encode() not in r.stdout + r.stderr
    # the production venue is never reached by accident
    loose.chmod(0o600)
    r = _engine("live", "strategies/ema_cross.yaml", "--url", "https://fapi.binance.com", "--ws-url",
                "wss://fstream.binance.com", "--key-file", str(loose), "--results", str(tmp_path))
    assert r.returncode == 2 and b"--production" in r.stderr, r.stderr
    r = _engine("live", "--testnet", "--production", "--key-file", str(loose))
    assert r.returncode == 2 and b"exclude each other" in r.stderr, r.stderr
    assert not (tmp_path / "runlog.sqlite").exists()


def test_a_refused_key_is_one_line(market: MarketData, tmp_path: Path) -> None:
    strat = tmp_path / "ema_fast_cross.yaml"
    strat.write_text(EXIT_STRATEGY.format(start="2024-01-01", end="2024-01-02"))
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("wrongKey0123456789abcdef\nwrongSecret0123456789abcdef\n")
    wrong.chmod(0o600)
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, tmp_path / "results", tmp_path, keys=False,
                        args=("--key-file", str(wrong)))
        code = proc.wait(60)
    err = proc.stderr().strip().splitlines()
    assert code == 2, proc.stderr()
    assert len(err) == 1 and "refused the API key or secret" in err[0], err
    assert "Traceback" not in proc.stderr()
    assert "wrongKey0123456789abcdef" not in proc.stderr() + proc.stdout()
    assert "wrongSecret" not in proc.stderr() + proc.stdout()
