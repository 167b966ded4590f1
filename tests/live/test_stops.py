"""Clean stops of ``engine live`` (a real subprocess): SIGTERM while a position is held with
its stop and target (exit 0, run ``stopped``, the protective orders stay at the exchange and
are still there when the run is resumed), SIGTERM while the client waits out a 429 (exit
within 2 s), and ``--flatten-on-exit`` (flat, no order left)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from engine.exchange_sim.faults import FaultSpec
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread

from .conftest import simulator
from .proc import LiveProc, exchange_positions, next_bar, open_algo, sql
from .test_exits import EXIT_STRATEGY


def _strategy(folder: Path) -> Path:
    path = folder / "ema_fast_cross.yaml"
    path.write_text(EXIT_STRATEGY.format(start="2024-01-01", end="2024-01-02"))
    return path


def _until_protected(sim: ServerThread, proc: LiveProc, most: int = 40) -> dict[str, float]:
    """Close bars until a position is held with its stop and target resting."""
    for _ in range(most):
        assert proc.wait_bar(next_bar(sim)), proc.stderr()[-3000:]
        held = {s: q for s, q in exchange_positions(sim).items() if q}
        algo = open_algo(sim)
        if held and all(sum(1 for s2, _ in algo if s2 == s) == 2 for s in held):
            return held
    raise AssertionError("no protected position in time")


def _run_status(results: Path) -> list[tuple[str, str]]:
    return sql(results, "SELECT run_id, status FROM runs ORDER BY started_at")


def test_sigterm_keeps_protection_and_resume_finds_it(market: MarketData, tmp_path: Path) -> None:
    strat, results = _strategy(tmp_path), tmp_path / "results"
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path)
        assert proc.wait_ready()
        held = _until_protected(sim, proc)
        resting = open_algo(sim)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr()[-3000:]
        assert open_algo(sim) == resting  # nothing canceled
        assert exchange_positions(sim) == {**exchange_positions(sim), **held}
        (run_id, status), = _run_status(results)
        assert status == "stopped"
        out = proc.stdout()
        assert "stopped" in out and "kept at the exchange" in out, out
        for s in held:
            assert f"{s}: position" in out
        # the same command with --run-id resumes the stopped run: the orders are still there
        again = LiveProc(sim, strat, results, tmp_path, args=("--run-id", run_id))
        assert again.wait_ready(), again.stderr()[-3000:]
        assert f"resumed: resuming run {run_id} as asked" in again.stdout()
        assert open_algo(sim) == resting
        again.signal(signal.SIGTERM)
        assert again.wait(20) == 0
    assert _run_status(results) == [(run_id, "stopped")]


def _burst(on: bool) -> Any:
    """A 429 burst from now on (every REST answer 429, Retry-After ~10 s), or none."""

    def set_(server: Any) -> None:
        f = server.faults
        f.spec = FaultSpec(http_429_burst_s=100.0) if on else FaultSpec()
        f._t0 = time.monotonic() - 100.0

    return set_


def _in_429_wait(sim: ServerThread, results: Path) -> None:
    """Close a bar while every REST answer is 429; return once the client waits it out."""
    sim.call(_burst(True))
    next_bar(sim)
    deadline = time.monotonic() + 20
    while not sql(results, "SELECT 1 FROM system_events WHERE component = 'broker' "
                           "AND message LIKE '%retrying%'"):
        assert time.monotonic() < deadline, "the client never met the 429"
        time.sleep(0.05)


def test_sigterm_during_a_429_wait_exits_within_2s(market: MarketData, tmp_path: Path) -> None:
    strat, results = _strategy(tmp_path), tmp_path / "results"
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path)
        assert proc.wait_ready()
        _in_429_wait(sim, results)
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(10)
        took = time.monotonic() - t0
    assert code == 0, proc.stderr()[-3000:]
    assert took < 2.0, f"exit took {took:.2f}s"
    assert [st for _, st in _run_status(results)] == ["stopped"]


def test_flatten_on_exit_leaves_nothing(market: MarketData, tmp_path: Path) -> None:
    strat, results = _strategy(tmp_path), tmp_path / "results"
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path, args=("--flatten-on-exit",))
        assert proc.wait_ready()
        _until_protected(sim, proc)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr()[-3000:]
        assert not any(exchange_positions(sim).values())
        assert open_algo(sim) == []
        assert sim.call(lambda s: list(s.exchange.open_plain)) == []
    (run_id, status), = _run_status(results)
    assert status == "stopped"
    ends = sql(results, "SELECT count(*) FROM orders WHERE run_id = ? AND leg = 'end' "
                        "AND status = 'filled'", (run_id,))[0][0]
    assert ends >= 1
    trades = sql(results, "SELECT count(*) FROM trades WHERE run_id = ? AND exit_reason = 'end'",
                 (run_id,))[0][0]
    assert trades == ends


def test_a_second_signal_exits_at_once(market: MarketData, tmp_path: Path) -> None:
    """--flatten-on-exit waits for the venue (a 429 burst); a second SIGTERM ends it at once,
    the log stays sound, and the next start resumes the run."""
    strat, results = _strategy(tmp_path), tmp_path / "results"
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path, args=("--flatten-on-exit",))
        assert proc.wait_ready()
        _in_429_wait(sim, results)
        proc.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.alive(), "flattening waits for the venue"
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(10)
        assert code == 128 + signal.SIGTERM and time.monotonic() - t0 < 1.0
        assert sql(results, "PRAGMA integrity_check") == [("ok",)]
        assert [st for _, st in _run_status(results)] == ["running"]
        sim.call(_burst(False))
        again = LiveProc(sim, strat, results, tmp_path)
        assert again.wait_ready(), again.stderr()[-3000:]
        assert "resumed: resuming run" in again.stdout()
        again.signal(signal.SIGTERM)
        assert again.wait(20) == 0
