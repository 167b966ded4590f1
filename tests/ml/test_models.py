"""Model nodes: fit -> save -> load gives identical predictions; fits are deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.ml.models import load_model, new_model
from engine.ml.models.base import Segment, TrainSet
from engine.strategy.ml_config import ModelNode

TINY = {
    "lightgbm": {"n_estimators": 20, "num_leaves": 7, "min_data_in_leaf": 20},
    "xgboost": {"n_estimators": 20, "max_depth": 3},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 20},
    "prophet": {"window": "10d", "n_changepoints": 5},
}


@pytest.fixture(scope="module")
def train_data(small):
    from engine.ml.labels import make_labels
    from engine.strategy.ml_config import LabelsConfig

    candles, feats = small
    X = feats.drop("open_time").to_numpy()
    _, y = make_labels(candles["close"].to_numpy(), LabelsConfig(horizon=6, cost_bps=2))
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    idx = np.flatnonzero(ok)
    tr, te = idx[:2000], np.arange(2500, 4000)
    seg = Segment(candles["open_time"].to_numpy()[te], candles["close"].to_numpy()[te], X[te])
    return TrainSet(X[tr], y[tr]), seg, candles


def fit(kind, train, seed=3):
    params = ModelNode(kind=kind, params=TINY[kind]).params
    return new_model(kind, params).fit(train, seed=seed, threads=1), params


def prophet_train(candles):
    ot = candles["open_time"].to_numpy()
    close = candles["close"].to_numpy()
    hourly = (ot + 300_000) % 3_600_000 == 0
    cutoff = int(ot[2500])
    m = hourly & (ot + 300_000 <= cutoff)
    ft = np.arange(cutoff, cutoff + 1500 * 300_000, 300_000) + 7 * 300_000
    return TrainSet(
        np.empty((0, 0)), np.empty(0), (), ot[m] + 300_000, close[m], ft, tau=2e-4, horizon=6
    )


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "mlp"])
def test_round_trip_and_determinism(kind, train_data, tmp_path: Path):
    train, seg, _ = train_data
    m1, params = fit(kind, train)
    m1.save(tmp_path)
    loaded = load_model(kind, tmp_path, params, threads=2)
    p1 = m1.predict_proba(seg)
    assert np.isfinite(p1).all() and ((p1 > 0) & (p1 < 1)).all() and p1.std() > 0
    np.testing.assert_array_equal(loaded.predict_proba(seg), p1)
    m2, _ = fit(kind, train)
    np.testing.assert_array_equal(m2.predict_proba(seg), p1)  # same seed, same threads
    # a single bar is a one-row segment: the same function, the same number
    np.testing.assert_array_equal(loaded.predict_proba(seg.rows(slice(7, 8))), p1[7:8])
    # non-finite features abstain
    X = seg.X.copy()
    X[3, 0] = np.nan
    assert np.isnan(loaded.predict_proba(Segment(seg.open_time, seg.close, X))[3])


def test_mlp_forward_equals_sklearn(train_data):
    from engine.ml.models.mlp import train_net

    train, seg, _ = train_data
    m, params = fit("mlp", train)
    sc, clf = train_net(train, params, seed=3)
    assert clf.hidden_layer_sizes == (8,) and len(clf.loss_curve_) <= params["max_iter"]
    np.testing.assert_allclose(
        m.predict_proba(seg), clf.predict_proba(sc.transform(seg.X))[:, 1], rtol=0, atol=1e-12
    )


def test_mlp_fit_is_safe_beside_a_thread_that_enters_catch_warnings(train_data):
    """A net that runs out of epochs (fixed budgets do) raises no ConvergenceWarning under
    ``-W error`` while another thread enters and leaves ``warnings.catch_warnings`` (as numba
    compiles do in the live thread during a fit ahead): the fit relies on no filter of its own.
    """
    import threading
    import warnings

    train, _, _ = train_data
    params = ModelNode(
        kind="mlp", params={"hidden_layer_sizes": [8], "max_iter": 40, "tol": 1e-12}
    ).params
    done = threading.Event()
    errors: list[BaseException] = []

    def fit_in_thread():
        try:
            new_model("mlp", params).fit(train, seed=3, threads=1)
        except BaseException as e:  # noqa: BLE001 - the assertion below reports it
            errors.append(e)
        finally:
            done.set()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = threading.Thread(target=fit_in_thread)
        t.start()
        while not done.is_set():
            with warnings.catch_warnings():
                done.wait(0.0005)
        t.join()
    assert errors == []


def test_prophet_forecast_lookup_round_trip(train_data, tmp_path: Path):
    _, seg, candles = train_data
    ts = prophet_train(candles)
    m, params = fit("prophet", ts)
    p = m.predict_proba(seg)
    assert np.isfinite(p[:1490]).all() and 0 < p[:1490].min() and p[:1490].max() < 1
    m.save(tmp_path)
    assert (tmp_path / "prophet.json").is_file()
    np.testing.assert_array_equal(load_model("prophet", tmp_path, params).predict_proba(seg), p)
    m2, _ = fit("prophet", ts)
    np.testing.assert_array_equal(m2.predict_proba(seg), p)
    # the lookup: yhat at the bar's horizon end vs its close, a normal model with sigma
    from math import erf, log, sqrt

    i = 100
    target = int(seg.open_time[i]) + 7 * 300_000
    mu = m.yhat[np.searchsorted(m.times, target)] - log(seg.close[i])
    phi = lambda x: 0.5 * (1 + erf(x / sqrt(2)))  # noqa: E731
    up, dn = 1 - phi((2e-4 - mu) / m.sigma), phi((-2e-4 - mu) / m.sigma)
    assert p[i] == pytest.approx(up / (up + dn), abs=1e-9)
    # beyond the stored forecast: abstain
    late = Segment(np.array([seg.open_time[-1] + 10**9]), seg.close[-1:], np.empty((1, 0)))
    assert np.isnan(m.predict_proba(late)).all()
    assert ModelNode.model_fields  # keep the import used
    assert m.load_prophet(tmp_path).history is not None


def test_onnx_node_with_skl2onnx_classifier(train_data, tmp_path: Path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from engine.ml.models.external import OnnxModel

    train, seg, _ = train_data
    clf = LogisticRegression(max_iter=500).fit(train.X, train.y.astype(int))
    path = tmp_path / "clf.onnx"
    path.write_bytes(to_onnx(clf, train.X[:1].astype(np.float32)).SerializeToString())
    node = OnnxModel(path)
    p = node.predict_proba(seg)
    np.testing.assert_allclose(p, clf.predict_proba(seg.X)[:, 1], atol=2e-5)
    np.testing.assert_array_equal(node.predict_proba(seg.rows(slice(0, 1))), p[:1])
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="takes 6 inputs"):
        node.predict_proba(Segment(seg.open_time, seg.close, seg.X[:, :3]))
    with pytest.raises(ConfigError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_dense_layer_sums_each_output_in_input_order():
    """dense_nb's output j of row i is ``((b_j + a_i0 w_0j) + a_i1 w_1j) + ...`` exactly (the
    order that makes one row equal to the same row of a batch), and ReLU maps NaN to 0."""
    from engine.ml.models.mlp import dense_nb

    rng = np.random.default_rng(5)
    a = rng.normal(size=(9, 13)) * rng.choice([1e-8, 1.0, 1e8], size=(9, 13))
    w, b = rng.normal(size=(13, 6)), rng.normal(size=6)
    want = np.empty((9, 6))
    for i in range(9):
        for j in range(6):
            s = float(b[j])
            for t in range(13):
                s += float(a[i, t]) * float(w[t, j])
            want[i, j] = s
    np.testing.assert_array_equal(dense_nb(a, w, b, False), want)
    np.testing.assert_array_equal(dense_nb(a, w, b, True), np.where(want > 0, want, 0.0))
    a[2, 4] = np.nan
    out = dense_nb(a, w, b, True)
    assert not np.isnan(out).any() and (out[2] == 0.0).all()
    assert np.isnan(dense_nb(a, w, b, False)[2]).all()
