"""What the run log keeps of an ensemble result: runs.metrics['models'] and system_events."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from engine.metrics import classification_metrics
from engine.ml.pipeline import run_ensemble
from engine.ml.summary import event_rows, ml_info, models_metrics
from tests.ml.conftest import small_config


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def with_dead_remote(small, tmp_path_factory):  # type: ignore[no-untyped-def]
    candles, feats = small
    models = [
        {
            "kind": "lightgbm",
            "params": {"n_estimators": 15, "num_leaves": 7, "min_data_in_leaf": 20},
        },
        {"kind": "remote", "url": f"http://127.0.0.1:{_closed_port()}", "timeout_s": 0.5},
    ]
    d = tmp_path_factory.mktemp("summary")
    return run_ensemble(
        small_config(models=models), {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=d
    )


def test_remote_failures_and_abstentions_become_system_events(with_dead_remote) -> None:  # type: ignore[no-untyped-def]
    res = with_dead_remote
    rows = event_rows(res)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert all(set(r) == {"time", "severity", "component", "message", "data"} for r in rows)
    remote = [r for r in rows if r["component"] == "ml.remote.remote"]
    assert len(remote) == len(res.schedule["BTCUSDT"].folds)  # one failed call per fold
    assert all(r["severity"] == "warning" and "abstaining" in r["message"] for r in remote)
    assert all(json.loads(r["data"])["symbol"] == "BTCUSDT" for r in remote)
    abstained = [r for r in rows if r["component"] == "ml.model.remote"]
    (a,) = abstained
    data = json.loads(a["data"])
    assert data["abstained"] == data["predicted"] and a["severity"] == "warning"
    assert not [r for r in rows if r["component"] == "ml.model.lightgbm"]  # it never abstained
    (plan,) = [r for r in rows if r["component"] == "ml.train"]
    assert json.loads(plan["data"])["fitted"] == res.n_fitted


def test_models_document_matches_the_report_scorers(with_dead_remote) -> None:  # type: ignore[no-untyped-def]
    res = with_dead_remote
    doc = models_metrics(res)
    assert set(doc) == {"lightgbm", "remote", "ensemble", "base_rate"}
    r = res.symbols["BTCUSDT"]
    sel = r.fold >= 0
    p, y = r.probs[sel, 0], r.labels[sel]
    ok = np.isfinite(p) & np.isfinite(y)
    want = classification_metrics(y[ok], p[ok])
    got = doc["lightgbm"]
    for key in ("n", "auc", "log_loss", "brier", "calibration_error"):
        assert got[key] == want[key], key
    assert sum(b["count"] for b in got["calibration_curve"]) == got["n"]
    assert got["folds"] == len(res.schedule["BTCUSDT"].folds) == len(got["per_fold"])
    assert got["per_symbol"]["BTCUSDT"]["auc"] == got["auc"]  # one symbol: pooled = its own
    # the remote model abstained everywhere: no scores (None, JSON null), no weight
    assert doc["remote"]["n"] == 0 and doc["remote"]["auc"] is None
    # the remote member has no weight; lightgbm and the base rate share the whole pool
    base_share = float(np.mean(r.base_weight[np.isfinite(r.p) & sel]))
    assert doc["remote"]["weight"] == 0.0 and doc["base_rate"]["weight"] == base_share
    assert doc["lightgbm"]["weight"] + base_share == pytest.approx(1.0)
    assert "weight" not in doc["ensemble"]
    json.dumps(doc, allow_nan=False)  # strict JSON: NaN never reaches the run log
    info = ml_info(res)
    assert info["models_fitted"] == res.n_fitted and info["folds"] == {"BTCUSDT": 5}
    assert info["versions"]["BTCUSDT"]["remote"][0].startswith("remote-")
    # every cutoff's pool map, in fold order (the identity: too few out-of-fold bars here)
    sched = res.schedule["BTCUSDT"]
    assert [(m["fold"], m["cutoff"]) for m in info["pool_maps"]] == [
        (f.index, f.cutoff) for f in sched.folds
    ]
    assert {(m["a"], m["v"]) for m in info["pool_maps"]} == {(1.0, 0.0)}
    json.dumps(info, allow_nan=False)
