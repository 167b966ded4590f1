"""``engine parity`` after a live replay of strategies/ema_cross.yaml against the exchange
simulator: 0 mismatches; --against; a tampered live decision or size; the usage errors.

The replay: live mode from CLOCK_START for DAYS days of real BTCUSDT and ETHUSDT 5m bars
(its warm-up read from the simulator's REST klines), then ``engine parity RUN --json`` as a
real subprocess, which reruns the backtest over exactly those bars and compares."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.market import MarketData
from engine.runlog.query import run_query
from engine.strategy import load_strategy
from engine.timeutil import fmt_ms, parse_time

from .conftest import BAR, CLOCK_START, REPO, engine_cli, parity_json, replay, simulator

pytestmark = pytest.mark.slow

DAYS = 30
N_BARS = DAYS * 288


def q(sql: str, results: Path) -> list[dict[str, Any]]:
    return run_query(sql, results_dir=results).to_pylist()


@pytest.fixture(scope="module")
def ema(market: MarketData, usdm_store: Path,
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The live replay and its ``engine parity --json``: results, run id, exit code, JSON."""
    results = tmp_path_factory.mktemp("ema_parity")
    graph = load_strategy(REPO / "strategies" / "ema_cross.yaml")
    with simulator(market, parse_time(CLOCK_START)) as sim:
        res = replay(sim, graph, results, bars=N_BARS)
    assert res.status == "ok" and res.bars == N_BARS
    rc, doc = parity_json(res.run_id, results, usdm_store)
    return {"results": results, "run_id": res.run_id, "rc": rc, "doc": doc}


def test_ema_cross_replay_has_no_decision_mismatch(ema: dict[str, Any]) -> None:
    doc, results, rid = ema["doc"], ema["results"], ema["run_id"]
    assert ema["rc"] == 0, doc
    assert list(doc)[:5] == ["bars_compared", "decision_mismatches", "size_mismatches",
                             "fill_differences", "first_mismatches"]
    assert doc["bars_compared"] == N_BARS and doc["decisions_compared"] == 2 * N_BARS
    assert (doc["decision_mismatches"], doc["size_mismatches"], doc["value_mismatches"],
            doc["fill_differences"], doc["first_mismatches"]) == (0, 0, 0, 0, [])
    assert doc["first_live_bar"] == parse_time(CLOCK_START)
    assert doc["last_bar"] == parse_time(CLOCK_START) + (N_BARS - 1) * BAR
    # every live fill of the compared bars was compared (the last bar's orders fill after it)
    fills = q(f"SELECT count(*) AS n FROM orders WHERE run_id = '{rid}' AND status = 'filled' "
              f"AND open_time < {doc['last_bar']}", results)[0]["n"]
    assert doc["fills_compared"] == fills and fills >= 50, "the EMA cross must trade"
    # the rerun is a backtest in the run log over exactly the live run's warm-up and bars
    bt = q(f"SELECT mode, status, params FROM runs WHERE run_id = '{doc['against']}'", results)
    assert doc["rerun"] is True and bt[0]["mode"] == "backtest" and bt[0]["status"] == "ok"
    warm = q(f"SELECT data->>'warmup_start' AS s FROM events WHERE run_id = '{rid}' "
             f"AND message LIKE 'warm-up%'", results)
    n_bt = q(f"SELECT min(open_time) AS a, max(open_time) AS b, count(DISTINCT open_time) AS n "
             f"FROM decisions WHERE run_id = '{doc['against']}'", results)[0]
    assert n_bt["a"] == int(warm[0]["s"]) and n_bt["b"] == doc["last_bar"]
    assert doc["warmup_fills"] == 0


def test_against_compares_the_given_backtest_and_writes_nothing(ema: dict[str, Any],
                                                                usdm_store: Path) -> None:
    results, doc = ema["results"], ema["doc"]
    before = q("SELECT run_id FROM runs ORDER BY run_id", results)
    rc, again = parity_json(ema["run_id"], results, usdm_store, "--against", doc["against"])
    assert rc == 0
    assert again["rerun"] is False and again["against"] == doc["against"]
    for k in ("bars_compared", "decisions_compared", "fills_compared", "decision_mismatches",
              "size_mismatches", "fill_differences"):
        assert again[k] == doc[k], k
    assert q("SELECT run_id FROM runs ORDER BY run_id", results) == before


def _copy(ema: dict[str, Any], tmp_path: Path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(ema["results"], out)
    return out


def _tamper(results: Path, run_id: str, sql: str, *args: Any) -> None:
    con = sqlite3.connect(results / "runlog.sqlite")
    with con:
        n = con.execute(sql, (*args, run_id)).rowcount
    con.close()
    assert n == 1


def _pick(results: Path, run_id: str, action: str, nth: int) -> dict[str, Any]:
    return q(f"SELECT symbol, open_time, target_position FROM decisions WHERE run_id = '{run_id}' "
             f"AND action = '{action}' ORDER BY open_time, symbol LIMIT 1 OFFSET {nth}", results)[0]


def test_a_tampered_live_decision_exits_1_and_names_its_bar(ema: dict[str, Any], usdm_store: Path,
                                                            tmp_path: Path) -> None:
    results, rid = _copy(ema, tmp_path), ema["run_id"]
    row = _pick(results, rid, "long", 100)
    _tamper(results, rid, "UPDATE ensemble_decisions SET action = 'short' WHERE symbol = ? "
            "AND open_time = ? AND run_id = ?", row["symbol"], row["open_time"])
    rc, doc = parity_json(rid, results, usdm_store)  # reruns the backtest on the copy
    assert rc == 1
    assert doc["decision_mismatches"] == 1 and doc["size_mismatches"] == 0
    assert doc["first_mismatches"] == [{
        "kind": "decision", "symbol": row["symbol"], "open_time": row["open_time"],
        "field": "action", "live": "short", "backtest": "long", "time_utc": fmt_ms(row["open_time"]),
    }]
    # the table of the human output names it too, with exit 1
    p = engine_cli("parity", rid, "--against", doc["against"], "--results", str(results))
    assert p.returncode == 1, p.stderr
    assert fmt_ms(row["open_time"]) in p.stdout and "decisions differ" in p.stdout
    assert row["symbol"] in p.stdout


def test_a_tampered_target_is_a_size_mismatch_not_a_decision(ema: dict[str, Any], usdm_store: Path,
                                                            tmp_path: Path) -> None:
    results, rid = _copy(ema, tmp_path), ema["run_id"]
    row = _pick(results, rid, "short", 50)
    _tamper(results, rid, "UPDATE ensemble_decisions SET target_position = target_position * 2 "
            "WHERE symbol = ? AND open_time = ? AND run_id = ?", row["symbol"], row["open_time"])
    rc, doc = parity_json(rid, results, usdm_store, "--against", ema["doc"]["against"])
    assert rc == 0
    assert (doc["decision_mismatches"], doc["size_mismatches"]) == (0, 1)
    (m,) = doc["first_mismatches"]
    assert (m["kind"], m["symbol"], m["open_time"], m["field"]) == (
        "size", row["symbol"], row["open_time"], "target_position")
    assert m["live"] == pytest.approx(2 * row["target_position"])


def _runlog_state(results: Path) -> tuple[Any, ...]:
    con = sqlite3.connect(f"file:{results / 'runlog.sqlite'}?mode=ro", uri=True)
    try:
        counts = tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in ("runs", "ensemble_decisions", "orders", "system_events"))
    finally:
        con.close()
    return counts, sorted(p.name for p in (results / "runs").iterdir())


def test_usage_errors_exit_2_with_a_message_and_write_nothing(ema: dict[str, Any], usdm_store: Path,
                                                              tmp_path: Path) -> None:
    results, rid, bt = ema["results"], ema["run_id"], ema["doc"]["against"]
    # a backtest over bars before the live run's: no overlap
    p = engine_cli("backtest", str(REPO / "strategies" / "ema_cross.yaml"), "--start", "2023-12-01",
                   "--end", "2023-12-02", "--results", str(results), "--store", str(usdm_store), "--json")
    assert p.returncode == 0, p.stderr
    early = q("SELECT run_id FROM runs WHERE mode = 'backtest' ORDER BY started_at DESC LIMIT 1",
              results)[0]["run_id"]
    state = _runlog_state(results)
    cases = [
        (("parity", "nope"), "unknown run id 'nope'"),
        (("parity", bt), "is a backtest run, not a live run"),
        (("parity", rid, "--against", rid), "is a live run, not a backtest"),
        (("parity", rid, "--against", "nope"), "--against: unknown run id 'nope'"),
        (("parity", rid, "--against", early), "has no bar in the live run's"),
    ]
    for args, message in cases:
        p = engine_cli(*args, "--results", str(results), "--store", str(usdm_store), "--json")
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert message in p.stderr and p.stdout == "", (args, p.stderr)
        assert "Traceback" not in p.stderr
        assert _runlog_state(results) == state, args
    empty = tmp_path / "empty"
    empty.mkdir()
    p = engine_cli("parity", rid, "--results", str(empty))
    assert p.returncode == 2 and "no run log in" in p.stderr
    assert list(empty.iterdir()) == []
