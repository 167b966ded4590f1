"""``engine parity`` after a live replay of strategies/ensemble.yaml (LightGBM, XGBoost,
Prophet and an MLP, Bayesian fusion, Kelly sizing) against the exchange simulator.

Its training windows are shortened with ``--set`` so that a replay fits a test: 10 days of
training and warm-up instead of 60, a retrain every 6 hours instead of 30 days (so folds
are trained while live, not only in the warm-up), and the row and calibration minimums,
payoff lookback, reliability half-life and the matured labels a member's skill needs scaled
down with them, and the net-edge gate's cost at 0 (so that the short replay trades).
Everything else (features on 5m/15m/1h, the four models and their parameters, the gate,
Kelly, the breaker) is the shipped file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.market import MarketData
from engine.runlog.query import run_query
from engine.strategy import load_strategy
from engine.timeutil import parse_time

from .conftest import BAR, CLOCK_START, REPO, parity_json, replay, simulator

pytestmark = pytest.mark.slow

N_BARS = 576
SHORTER = (
    "training.train_window=10d", "training.warmup=10d", "training.retrain_every=6h",
    "training.min_train_rows=500", "ensemble.min_calibration_rows=200",
    "ensemble.payoff_lookback=288", "ensemble.reliability_halflife=576",
    "ensemble.min_skill_labels=24", "ensemble.trade_cost_bps=0",
)


def q(sql: str, results: Path) -> list[dict[str, Any]]:
    return run_query(sql, results_dir=results).to_pylist()


def test_ensemble_replay_has_no_decision_mismatch(market: MarketData, usdm_store: Path,
                                                  tmp_path: Path) -> None:
    graph = load_strategy(REPO / "strategies" / "ensemble.yaml", overrides=list(SHORTER))
    with simulator(market, parse_time(CLOCK_START)) as sim:
        res = replay(sim, graph, tmp_path, bars=N_BARS)
    assert res.status == "ok" and res.bars == N_BARS
    rid = res.run_id
    # the live run really ran the ensemble: every model trained, folds rolled while live
    ev = q(f"SELECT message FROM events WHERE run_id = '{rid}' AND component LIKE 'ml.train%'", tmp_path)
    assert not [e for e in ev if "not trained" in e["message"]], ev
    versions = q(f"SELECT model, count(DISTINCT model_version) AS n FROM predictions "
                 f"WHERE run_id = '{rid}' GROUP BY model ORDER BY model", tmp_path)
    assert [v["model"] for v in versions] == ["lightgbm", "mlp", "prophet", "xgboost"]
    assert all(v["n"] == 2 * 8 for v in versions), versions  # folds 0-7 of both symbols
    probs = q(f"SELECT count(probability) AS n, count(DISTINCT action) AS a FROM decisions "
              f"WHERE run_id = '{rid}'", tmp_path)[0]
    assert probs["n"] == 2 * N_BARS and probs["a"] >= 2

    rc, doc = parity_json(rid, tmp_path, usdm_store)
    assert rc == 0, doc
    assert doc["bars_compared"] == N_BARS and doc["decisions_compared"] == 2 * N_BARS
    assert (doc["decision_mismatches"], doc["size_mismatches"], doc["value_mismatches"],
            doc["fill_differences"], doc["first_mismatches"]) == (0, 0, 0, 0, [])
    assert doc["last_bar"] == parse_time(CLOCK_START) + (N_BARS - 1) * BAR
    fills = q(f"SELECT count(*) AS n FROM orders WHERE run_id = '{rid}' AND status = 'filled' "
              f"AND open_time < {doc['last_bar']}", tmp_path)[0]["n"]
    assert doc["fills_compared"] == fills > 0, "Kelly must size positions"
    # the rerun predicted with the live run's model versions (reused from results/models)
    bt_versions = q(f"SELECT DISTINCT model, model_version FROM predictions WHERE run_id = "
                    f"'{doc['against']}' AND open_time >= {doc['first_live_bar']} ORDER BY 1, 2",
                    tmp_path)
    live_versions = q(f"SELECT DISTINCT model, model_version FROM predictions WHERE run_id = "
                      f"'{rid}' ORDER BY 1, 2", tmp_path)
    assert bt_versions == live_versions
