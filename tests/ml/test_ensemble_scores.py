"""The ensemble earns its place (issue 14), on a shorter window of the shipped data.

strategies/ensemble.yaml as shipped (its four members, features and walk-forward schedule) over
BTCUSDT and ETHUSDT from 2023-01-01 to 2023-06-30: per symbol, the out-of-fold log loss of the
fused forecast (``runs.metrics['models']``) is below the base rate's and below every member's,
and its AUC is at least the best member's minus 0.002, for the ``bayesian`` fusion; the fused
probability's reliability diagram stays within 0.05 of the diagonal in every bin of 500 bars or
more; the same scores for ``stacked_lgbm``. One session-scoped walk-forward run; the stacked
fusion reuses its models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.decisions.decide import compute_features
from engine.decisions.market import load_graph_market
from engine.ml import run_ensemble
from engine.ml.summary import ml_info, models_metrics
from engine.strategy import load_strategy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
END = "2023-06-30"


@pytest.fixture(scope="session")
def shipped_short(usdm_store: Path, tmp_path_factory: pytest.TempPathFactory):
    graph = load_strategy(ROOT / "strategies" / "ensemble.yaml", end=END)
    market = load_graph_market(graph, store=usdm_store)
    feats = {
        s: compute_features(graph, market.candles[s], market.funding.get(s)) for s in market.symbols
    }
    results = tmp_path_factory.mktemp("ens_scores")

    def run(fusion: str):
        ml = graph.config.ml()
        ml = ml.model_copy(update={"ensemble": ml.ensemble.model_copy(update={"fusion": fusion})})
        return run_ensemble(
            ml,
            {s: market.candles[s] for s in market.symbols},
            feats,
            run_start=int(market.open_time[0]),
            results_dir=results,
        )

    return run


def _members(doc: dict) -> list[str]:
    return [m for m in doc if m not in ("ensemble", "base_rate")]


def _beats_base_rate_with_best_auc(res, doc) -> None:  # type: ignore[no-untyped-def]
    """Per symbol: the fused log loss below the base rate's, its AUC at least the best
    member's minus 0.002."""
    for sym in res.symbols:
        ens = doc["ensemble"]["per_symbol"][sym]
        base = doc["base_rate"]["per_symbol"][sym]
        assert ens["log_loss"] < base["log_loss"], (sym, ens, base)
        best_auc = max(doc[m]["per_symbol"][sym]["auc"] for m in _members(doc))
        assert ens["auc"] >= best_auc - 0.002, (sym, ens["auc"], best_auc)


@pytest.fixture(scope="session")
def bayesian(shipped_short):
    res = shipped_short("bayesian")
    return res, models_metrics(res)


def test_bayesian_fusion_beats_the_base_rate_with_the_best_members_auc(bayesian):
    res, doc = bayesian
    _beats_base_rate_with_best_auc(res, doc)


def _below_every_member(res, doc) -> None:  # type: ignore[no-untyped-def]
    for sym in res.symbols:
        ens = doc["ensemble"]["per_symbol"][sym]
        for m in _members(doc):
            assert ens["log_loss"] < doc[m]["per_symbol"][sym]["log_loss"], (sym, m)


def test_bayesian_fusion_log_loss_is_below_every_member(bayesian):
    res, doc = bayesian
    _below_every_member(res, doc)


@pytest.fixture(scope="session")
def stacked(shipped_short, bayesian):  # after the bayesian run: the members' models are reused
    res = shipped_short("stacked_lgbm")
    return res, models_metrics(res)


def test_stacked_lgbm_beats_the_base_rate_with_the_best_members_auc(stacked, bayesian):
    """On this window no meta-learner beats the pool on its held-out rows (too few out-of-fold
    rows), so stacked_lgbm falls back on the bayesian pool bar for bar; its scores follow."""
    res, doc = stacked
    assert res.n_fitted == 0
    metas = [m for p in res.pipelines.values() for m in p.metas.values()]
    if all(m is None for m in metas):
        for sym, r in res.symbols.items():
            np.testing.assert_array_equal(r.p, bayesian[0].symbols[sym].p)
    _beats_base_rate_with_best_auc(res, doc)
    _below_every_member(res, doc)


def test_gate_counts_reliability_and_weights_over_time(bayesian):
    res, _ = bayesian
    info = ml_info(res)
    worst = info["worst_reliability_bin"]
    assert worst is not None and worst["count"] >= 500 and worst["gap"] <= 0.05
    # every predicted bar is counted once by the gate's conditions
    for sym, counts in info["gate_rejections"].items():
        assert sum(counts.values()) == int((res.symbols[sym].fold >= 0).sum())
    # the skill weights over time: members plus the base rate share the forecast
    for row in info["weights_over_time"]:
        total = sum(v for k, v in row.items() if k not in ("symbol", "time") and v is not None)
        assert total == pytest.approx(1.0, abs=1e-9)
