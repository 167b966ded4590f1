"""Which run a start continues; bars that closed while live mode was down (decided as stale,
not traded); a symbol the venue does not list (an error before anything is sent); feature
snapshots logged as the backtest logs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ExchangeError, RunError, UsageError
from engine.exchange_sim.market import MarketData
from engine.live.resume import find_run, reopen
from engine.runlog import RunLog

from .conftest import drive, ms, simulator, strategy
from .parity import q
from .proc import BAR, LiveProc, next_bar, sql
from .test_exits import EXIT_STRATEGY
from .test_parity import backtest_for

VENUE = "http://127.0.0.1:8900"
SYMS = ("BTCUSDT", "ETHUSDT")


def _live_run(log: RunLog, digest: str = "h1", *, status: str | None = None, dead: bool = False,
              symbols: tuple[str, ...] = SYMS) -> str:
    rid = log.start_run(mode="live", strategy="s", strategy_hash=digest,
                        params={"symbols": list(symbols), "venue": VENUE})
    if dead:  # its process is gone: the next look at the log marks it failed
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        db = log.store.conn()
        with db:
            db.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (int(gone), rid))
        log._running.discard(rid)
    if status:
        log.finish_run(rid, status=status)
    return rid


def test_which_run_a_start_resumes(tmp_path: Path) -> None:
    log = RunLog(tmp_path)

    def choose(**kw: object) -> str | None:
        args = {"run_id": None, "new_run": False, "digest": "h1", "symbols": SYMS, "venue": VENUE}
        return find_run(log, **{**args, **kw}).run_id  # type: ignore[arg-type]

    assert choose() is None  # nothing to resume
    died = _live_run(log, dead=True)
    assert choose() == died  # reaped (failed): resumed
    assert (log.get_run(died) or {})["status"] == "failed"
    assert choose(new_run=True) is None
    assert choose(digest="h2") is None and choose(symbols=("BTCUSDT",)) is None
    assert choose(venue="http://elsewhere") is None
    ok = _live_run(log, status="ok")
    assert choose() is None  # the newest run of this strategy ended cleanly
    assert choose(run_id=ok) == ok  # unless asked for by id
    with pytest.raises(UsageError, match="strategy differs"):
        choose(run_id=ok, digest="h2")
    with pytest.raises(UsageError, match="no such run"):
        choose(run_id="nope")
    running = _live_run(log)  # this process: alive
    with pytest.raises(RunError, match="is running"):
        choose(run_id=running)
    reopen(log, ok)
    assert (log.get_run(ok) or {})["status"] == "running" and log.get_run(ok)["pid"] == os.getpid()  # type: ignore[index]
    with pytest.raises(RunError, match="another process"):
        reopen(log, ok)


def test_bars_missed_while_down_are_decided_stale(market: MarketData, tmp_path: Path) -> None:
    strat = tmp_path / "ema_fast_cross.yaml"
    strat.write_text(EXIT_STRATEGY.format(start="2024-01-01", end="2024-01-02"))
    results = tmp_path / "results"
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path)
        assert proc.wait_ready()
        for _ in range(4):
            assert proc.wait_bar(next_bar(sim))
        proc.kill()
        missed = [next_bar(sim) for _ in range(3)]  # closed while nothing runs
        again = LiveProc(sim, strat, results, tmp_path)
        assert again.wait_ready(), again.stderr()[-3000:]
        assert "resumed: resuming run" in again.stdout()
        t = next_bar(sim)
        assert again.wait_bar(t)
        again.signal(signal.SIGTERM)
        assert again.wait(20) == 0
    (run_id,), = sql(results, "SELECT run_id FROM runs")
    rows = sql(results, "SELECT open_time, symbol, risk_check, target_position, rejection_reason "
                        "FROM ensemble_decisions WHERE run_id = ? ORDER BY open_time, symbol", (run_id,))
    times = sorted({r[0] for r in rows})
    assert len(rows) == 2 * len(times) and times == list(range(times[0], t + BAR, BAR))
    stale = {r[0] for r in rows if r[2] == "stale"}
    assert stale == set(missed[:-1]), stale  # the last one closed just now: traded
    assert all("closed while live mode was down" in r[4] for r in rows if r[2] == "stale")
    traded = sql(results, "SELECT count(*) FROM orders WHERE run_id = ? AND open_time IN (?, ?)",
                 (run_id, *missed[:-1]))[0][0]
    assert traded == 0


def test_a_symbol_the_venue_does_not_list(usdm_store: Path, tmp_path: Path) -> None:
    btc, _ = MarketData.load(["BTCUSDT"], interval="5m", start_ms=ms("2023-12-31T18:00"),
                             end_ms=ms("2024-01-01T12:00"), store=usdm_store)
    with simulator(btc, symbols=("BTCUSDT",)) as sim:
        with pytest.raises(ExchangeError, match="does not list ETHUSDT"):
            drive(sim, strategy(), tmp_path, bars=1)
        sent = sim.call(lambda s: len(s.exchange.orders) + len(s.exchange.algo))
    assert sent == 0
    assert not (tmp_path / "runlog.sqlite").exists() or not sql(tmp_path, "SELECT * FROM runs")


def test_feature_snapshots_as_the_backtest(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    sets = ("log.snapshots=true", "data.funding=false")
    with simulator(market) as sim:
        res = drive(sim, strategy(sets=sets), tmp_path, bars=12)
    bt_id, first_live = backtest_for(res.run_id, tmp_path, usdm_store, sets=sets)

    def snaps(rid: str) -> list[tuple[object, ...]]:
        rows = q(f"SELECT symbol, open_time, feature, value FROM snapshots WHERE run_id = '{rid}' "
                 f"AND open_time >= {first_live} ORDER BY open_time, symbol, feature", tmp_path)
        return [tuple(r.values()) for r in rows]

    live, bt = snaps(res.run_id), snaps(bt_id)
    assert len(live) == 12 * 2 * 2  # bars x symbols x features (ema_3, ema_8)
    assert [r[:3] for r in live] == [r[:3] for r in bt]
    assert all(a[3] == pytest.approx(b[3], rel=1e-12) for a, b in zip(live, bt, strict=True))
