"""kill -9 at ten random moments of a replay, each followed by a restart that resumes the run.

``engine live`` runs as a real subprocess against the simulator of this process. Each life
of the process ends with SIGKILL: the process kills itself at a named point
(``ENGINE_LIVE_CRASH_AT``, :mod:`engine.live.crash`: between an order's intent and its send,
between the venue's acknowledgement and the log's record of it, between the two legs of a
flip, between a bar's checkpoint and its decision rows, between its decision rows and its
orders, between its equity row and its last checkpoint, in the middle of a resume), or the
test kills it: while an order is on its way (REST answers 0.3 s late) or at a random moment
after closing a bar. The next start, with the same command, resumes the same run. After
every restart the engine's positions (its ``position_qty`` gauge) equal the exchange's; at
the end no client order id reached the exchange twice (ccxt ``fetch_orders`` and the algo
order list), every order the exchange has is in the run's log with the exchange's final
state, every closed bar has exactly one decision per symbol in the one run, the run's
metrics cover all its processes, and the run equals the backtest over its bars.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.faults import FaultSpec
from engine.exchange_sim.market import MarketData

from .conftest import SYMBOLS, simulator
from .proc import LiveProc, exchange_orders, exchange_positions, next_bar, open_algo, sql
from .test_exits import EXIT_STRATEGY
from .test_frames import scrape, total
from .test_parity import assert_parity

KILLS = 10
LIFE = 6  # bars a process may live before the test kills it itself
IN_FLIGHT = "in flight"  # killed by the test while an order is on its way to the exchange
#: (point, visits) the process may die at; the first four lives die at the first four
FIRST = ["intent:2", "sent:2", IN_FLIGHT, "flip:1"]
POINTS = [("intent", 3), ("sent", 3), ("checkpoint", 4), ("decided", 4), ("flip", 2), ("bar", 4),
          ("resumed", 1)]


def pick(rng: random.Random, lives: int) -> str | None:
    if lives < len(FIRST):
        return FIRST[lives]  # (IN_FLIGHT is no crash point: the process ignores it)
    if rng.random() < 0.25:
        return None  # the test kills this one at a random moment
    name, most = rng.choice(POINTS)
    return f"{name}:{rng.randint(1, most)}"


def engine_positions(proc: LiveProc) -> dict[str, float]:
    m = scrape(proc.port)
    return {s: total(m, "position_qty", symbol=s) for s in SYMBOLS}


@pytest.mark.slow
def test_kill_9_at_random_moments_resumes_the_run(market: MarketData, usdm_store: Path,
                                                 tmp_path: Path) -> None:
    rng = random.Random(20240101)
    strat = tmp_path / "ema_fast_cross.yaml"
    strat.write_text(EXIT_STRATEGY.format(start="2024-01-01", end="2024-01-02"))
    results = tmp_path / "results"
    deaths: list[str] = []
    bars: list[int] = []
    in_flight: list[str] = []
    with simulator(market) as sim:
        proc = LiveProc(sim, strat, results, tmp_path, crash=pick(rng, 0))
        assert proc.wait_ready()
        life = 0
        while len(deaths) < KILLS:
            if not proc.alive():
                deaths.append(_dead(proc))
                proc = _restart(sim, strat, results, tmp_path, rng, len(deaths))
                life = 0
                continue
            if proc.crash == IN_FLIGHT:
                bars.append(t := next_bar(sim, slow=True))
                if (cid := _kill_in_flight(sim, proc, t)) is not None:
                    in_flight.append(cid)
                continue
            t = next_bar(sim)
            bars.append(t)
            life += 1
            if life >= LIFE:  # a random moment after the bar closed
                time.sleep(rng.uniform(0.0, 0.15))
                proc.kill()
                continue
            proc.wait_bar(t)
        # the last life: no crash; three more bars, then a clean stop
        for _ in range(3):
            t = next_bar(sim)
            bars.append(t)
            assert proc.wait_bar(t), proc.stderr()[-3000:]
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.stderr()[-3000:]
        ids = exchange_orders(sim)
        held = exchange_positions(sim)
        resting = open_algo(sim)
    assert len([d for d in deaths if d.startswith(("intent", "sent", "flip"))]) >= 3, deaths
    run_id = _check_log(results, bars, ids, held, resting)
    # the order on its way when the process died reached the exchange once: the restart
    # looked it up by its client id first (the simulator drops a request whose client is
    # gone during its latency delay, so here the restart sends it; the order the venue did
    # accept before the death is the "sent" crash point's case)
    assert len(in_flight) == 1 and ids.count(in_flight[0]) == 1, in_flight
    looked = sql(results, "SELECT count(*) FROM system_events WHERE component = 'reconcile' "
                 "AND message LIKE ?", (f"%{in_flight[0]} logged before the restart%",))[0][0]
    assert looked == 1
    # both outcomes of a lookup at restart happened: found (not resent) and never received (sent)
    for outcome in ("%: not resent", "%: sent now"):
        assert sql(results, "SELECT count(*) FROM system_events WHERE component = 'reconcile' "
                   "AND message LIKE ?", (outcome,))[0][0] >= 1, outcome
    # the clock stood still while the process was down: what it decided and traded across
    # the ten deaths is what the backtest over the same bars decides and trades
    assert_parity(run_id, results, usdm_store, text=EXIT_STRATEGY)


def _kill_in_flight(sim: Any, proc: LiveProc, t: int) -> str | None:
    """While bar ``t`` is processed with every REST answer 0.3 s late: SIGKILL 50 ms after
    an order intent is written (the order is then on its way; the venue accepts it after the
    process is gone). Returns its client id; None when the bar needed no order."""
    before = {c for (c,) in sql(proc.results, "SELECT client_order_id FROM orders")}
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            new = [c for (c,) in sql(proc.results, "SELECT client_order_id FROM orders "
                                     "WHERE status = 'new' ORDER BY rowid") if c not in before]
            if new:
                time.sleep(0.05)
                proc.kill()
                return new[0]
            if sql(proc.results, "SELECT 1 FROM equity WHERE time = ?", (t,)):
                return None
            time.sleep(0.005)
    finally:
        sim.call(lambda s: setattr(s.faults, "spec", FaultSpec()))
    raise AssertionError("bar not done")


def _dead(proc: LiveProc) -> str:
    code = proc.p.wait(30)
    assert code == -signal.SIGKILL, f"exit {code} ({proc.crash}): {proc.stderr()[-3000:]}"
    return proc.crash or "killed by the test"


def _restart(sim: Any, strat: Path, results: Path, folder: Path, rng: random.Random,
             lives: int) -> LiveProc:
    """The same command again; it resumes the run. Once it streams, the engine's positions
    are the exchange's. (It may die again while resuming: that is one more life.)"""
    proc = LiveProc(sim, strat, results, folder, crash=pick(rng, lives) if lives < KILLS else None)
    if proc.wait_ready():
        assert "resumed: resuming run" in proc.stdout(), proc.stdout()
        assert engine_positions(proc) == exchange_positions(sim), proc.crash
    return proc


def _check_log(results: Path, bars: list[int], ids: list[str], held: dict[str, float],
               resting: list[tuple[str, str]]) -> str:
    runs = sql(results, "SELECT run_id, status FROM runs")
    assert len(runs) == 1 and runs[0][1] == "stopped", runs
    run_id = runs[0][0]
    # each closed bar: one decision per symbol, in order, none missing
    dec = sql(results, "SELECT open_time, count(*), count(DISTINCT symbol) FROM ensemble_decisions "
              "WHERE run_id = ? GROUP BY open_time ORDER BY open_time", (run_id,))
    assert [r[0] for r in dec] == bars
    assert all(n == d == len(SYMBOLS) for _, n, d in dec), [r for r in dec if r[1] != 2]
    # no client order id twice at the exchange; each one in the log, in its final state
    assert len(ids) == len(set(ids)) and ids, "an order reached the exchange twice"
    states = dict(sql(results, "SELECT client_order_id, status FROM orders WHERE run_id = ? "
                               "ORDER BY rowid", (run_id,)))
    assert set(ids) <= set(states), set(ids) - set(states)
    open_ids = {cid for _, cid in resting}
    pending = {cid for cid, st in states.items() if st == "new"}
    assert pending == open_ids, (pending, open_ids)  # only the stops/targets still resting
    # the stopped run kept the protective orders of what it holds
    assert {s for s, _ in resting} == {s for s, q in held.items() if q}
    fills = sql(results, "SELECT count(*) FROM orders WHERE run_id = ? AND status = 'filled'",
                (run_id,))[0][0]
    assert fills >= 10, "the replay must trade"
    resumes = sql(results, "SELECT count(*) FROM system_events WHERE run_id = ? "
                  "AND message LIKE 'resumed%'", (run_id,))[0][0]
    assert resumes >= KILLS
    # the run's metrics cover all its processes
    m = json.loads(sql(results, "SELECT metrics FROM runs WHERE run_id = ?", (run_id,))[0][0])
    trades = sql(results, "SELECT count(*) FROM trades WHERE run_id = ?", (run_id,))[0][0]
    filled = sum(1 for st in states.values() if st == "filled")
    assert (m["bars"], m["trades"], m["orders"]) == (len(bars), trades, filled), m
    return str(run_id)
