"""Model version identity and the batch path's shortcuts (presorted calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.ml.pipeline import run_ensemble
from tests.ml.conftest import small_config


@pytest.fixture(scope="module")
def run(small, tmp_path_factory):  # type: ignore[no-untyped-def]
    candles, feats = small
    d = tmp_path_factory.mktemp("versions")
    res = run_ensemble(small_config(), {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=d)
    return res, d


def test_presorted_calibration_gives_the_same_maps(run) -> None:  # type: ignore[no-untyped-def]
    res, _ = run
    pipe = res.pipelines["BTCUSDT"]
    r = res.symbols["BTCUSDT"]
    batch = dict(pipe.calibrators)  # fitted with the presorted order
    assert sum(c.kind == "isotonic" for c in batch.values()) >= 4
    for fold in pipe.sched.folds:
        pipe.calibrate(fold, r.raw, r.probs, r.fold)  # sorting the OOF rows itself
    for key, cal in batch.items():
        other = pipe.calibrators[key]
        assert cal.kind == other.kind and cal.n == other.n, key
        # the shrinking toward the base rate sums its rows in time order either way
        assert (cal.base, cal.lam) == (other.base, other.lam), key
        if cal.kind == "isotonic":
            np.testing.assert_array_equal(cal.x, other.x)
            np.testing.assert_array_equal(cal.y, other.y)


def test_version_meta_records_the_identity(run) -> None:  # type: ignore[no-untyped-def]
    res, d = run
    r = res.symbols["BTCUSDT"]
    metas = [json.loads((d / "models" / v / "meta.json").read_text()) for v in r.versions["mlp"]]
    assert len({m["strategy_hash"] for m in metas}) == 1  # same config: same strategy hash
    assert len({m["data_digest"] for m in metas}) == len(metas)  # a new window per fold
    assert all(m["library"].startswith("scikit-learn==") for m in metas)


def test_identity_follows_model_config_not_risk_or_gate(small, run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The gate and calibration are not part of a model: changing them reuses every version;
    changing a label setting or a model param gives new versions."""
    candles, feats = small
    res, d = run
    base = res.symbols["BTCUSDT"].versions
    other_gate = small_config(
        ensemble={"gate": {"max_uncertainty": 0.5, "min_agreement": 0.9}, "calibration": "platt"}
    )
    again = run_ensemble(other_gate, {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=d)
    assert again.n_fitted == 0 and again.symbols["BTCUSDT"].versions == base
    new_label = small_config(labels={"cost_bps": 3.0})
    changed = run_ensemble(new_label, {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=d)
    assert changed.n_fitted > 0
    for name, vers in changed.symbols["BTCUSDT"].versions.items():
        assert not set(v for v in vers if v) & set(v for v in base[name] if v), name
    # one feature value changed inside fold 1's training window: fold 1 and later change,
    # fold 0 (trained before that bar) keeps its version
    sched = res.schedule["BTCUSDT"]
    i = int(np.searchsorted(candles["open_time"].to_numpy(), sched.folds[1].cutoff - 86_400_000))
    col = feats.columns[1]
    vals = feats[col].to_numpy().copy()
    vals[i] += 1e-9
    feats2 = feats.with_columns(feats[col].__class__(col, vals))
    edited = run_ensemble(
        small_config(), {"BTCUSDT": candles}, {"BTCUSDT": feats2}, results_dir=tmp_path
    )
    ev = edited.symbols["BTCUSDT"].versions["lightgbm"]
    assert ev[0] == base["lightgbm"][0] and ev[1] != base["lightgbm"][1]
