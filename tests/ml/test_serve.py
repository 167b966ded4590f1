"""engine serve-model serving every model kind on real BTCUSDT bars: the remote node's
answers equal the in-process model's, candles give the rows' answers (features from the
engine's FeatureStream), retrains save new version folders, metrics in Prometheus' format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.ml.models import load_model
from engine.ml.models.base import Segment, TrainSet
from engine.ml.models.external import OnnxModel, RemoteModel
from engine.ml.serve import ModelService, ServerThread

from .conftest import FEATURES
from .serve_helpers import (
    call,
    candle_dicts,
    labels_of,
    make_version,
    metrics,
    onnx_file,
    prophet_trainset,
)

TRAIN = 2500  # bars the models are fitted on; the rest of the 4,000 are predicted


@pytest.fixture(scope="module")
def bars(small):
    candles, feats = small
    X = feats.select(FEATURES).to_numpy()
    ot = candles["open_time"].to_numpy()
    close = candles["close"].to_numpy()
    return candles, ot, close, X, labels_of(close)


@pytest.fixture(scope="module")
def versions(bars, tmp_path_factory) -> dict[str, Path]:
    """One saved version per kind (ONNX: a file), fitted on the first TRAIN bars."""
    _, ot, close, X, y = bars
    root = tmp_path_factory.mktemp("models")
    ok = np.isfinite(X[:TRAIN]).all(axis=1) & np.isfinite(y[:TRAIN])
    train = TrainSet(X[:TRAIN][ok], y[:TRAIN][ok], tuple(FEATURES))
    out = {
        kind: make_version(root, kind, train, features=FEATURES, version=f"{kind}-served")
        for kind in ("lightgbm", "xgboost", "mlp")
    }
    out["prophet"] = make_version(
        root,
        "prophet",
        prophet_trainset(ot[:TRAIN], close[:TRAIN], 2000),
        features=[],
        version="prophet-served",
    )
    out["onnx"] = onnx_file(root / "clf.onnx", train.X, train.y)
    return out


def local_model(kind: str, path: Path):
    if kind == "onnx":
        return OnnxModel(path)
    meta = json.loads((path / "meta.json").read_text())
    return load_model(kind, path, meta["params"])


def service_for(kind: str, path: Path) -> ModelService:
    if kind == "onnx":
        return ModelService.from_path(path, features=FEATURES, interval="5m")
    return ModelService.from_path(path)


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "mlp", "prophet", "onnx"])
def test_every_kind_served_equals_the_local_model(kind, bars, versions):
    _, ot, close, X, _ = bars
    feats = [] if kind == "prophet" else FEATURES
    seg = Segment(ot[TRAIN:], close[TRAIN:], X[TRAIN:] if feats else np.empty((len(ot) - TRAIN, 0)))
    want = local_model(kind, versions[kind]).predict_proba(seg)
    assert np.isfinite(want).mean() > 0.9
    service = service_for(kind, versions[kind])
    service.warm_up()
    with ServerThread(service) as server:
        node = RemoteModel(server.url, timeout_s=10, feature_names=feats, name=kind)
        got = node.predict_proba(seg)
        assert node.events == []
        np.testing.assert_array_equal(got, want)  # bit for bit through JSON both ways
        # a single bar, as live mode asks
        np.testing.assert_array_equal(node.predict_proba(seg.rows(slice(7, 8))), want[7:8])
        health = call(server.url + "/health")[1]
        assert health["kind"] == kind and health["candles"] is True


@pytest.mark.parametrize("kind", ["lightgbm", "prophet", "onnx"])
def test_candles_give_the_rows_answers(kind, bars, versions):
    """Raw candles in, features computed by the server's FeatureStream from the first candle:
    the same probabilities as the batch features' rows (NaN during the warm-up)."""
    candles, ot, close, X, _ = bars
    local = local_model(kind, versions[kind])
    n = 1200
    lo = len(ot) - n
    feats = np.empty((n, 0)) if kind == "prophet" else None
    if feats is None:
        from engine.features import compute

        feats = compute(candles[lo:], FEATURES, interval="5m").select(FEATURES).to_numpy()
    want = local.predict_proba(Segment(ot[lo:], close[lo:], feats))
    with ServerThread(service_for(kind, versions[kind])) as server:
        status, out = call(server.url + "/predict", {"candles": candle_dicts(candles[lo:])})
    assert status == 200, out
    got = np.array(out["probabilities"], dtype=np.float64)
    np.testing.assert_array_equal(got, want)
    assert out["open_time"] == ot[lo:].tolist() and out["kind"] == kind
    if kind != "prophet":  # warm-up: the features are NaN for the first bars, the model abstains
        assert np.isnan(got[:20]).all() and np.isfinite(got[-500:]).all()


def test_retrain_saves_versions_and_keeps_the_old_ones(bars, versions, tmp_path):
    import shutil

    _, _, _, X, y = bars
    d = shutil.copytree(versions["xgboost"], tmp_path / "xgboost-served")
    rows = X[TRAIN:3500]
    labels = [None if not np.isfinite(v) else int(v) for v in y[TRAIN:3500]]
    with ServerThread(ModelService.from_path(d)) as server:
        url = server.url
        _, before = call(url + "/predict", {"rows": rows[:50].tolist()})
        status, out = call(url + "/retrain", {"rows": rows.tolist(), "labels": labels})
        assert status == 201 and out["created"] and out["parent"] == "xgboost-served", out
        new = out["model_version"]
        meta = json.loads((tmp_path / new / "meta.json").read_text())
        assert meta["parent"] == "xgboost-served" and meta["features"] == FEATURES
        assert meta["n_train"] == out["rows"] == 1000
        # the new version answers by default; the old one when asked for
        _, after = call(url + "/predict", {"rows": rows[:50].tolist()})
        _, old = call(url + "/predict", {"rows": rows[:50].tolist(), "version": "xgboost-served"})
        assert after["model_version"] == new and old["probabilities"] == before["probabilities"]
        assert after["probabilities"] != before["probabilities"]
        # the saved folder predicts what the server answers
        local = local_model("xgboost", tmp_path / new)
        np.testing.assert_array_equal(
            np.array(after["probabilities"]),
            local.predict_proba(Segment(np.zeros(50, np.int64), np.ones(50), rows[:50])),
        )
        # the same retrain again: the same version, already saved (200)
        status, again = call(url + "/retrain", {"rows": rows.tolist(), "labels": labels})
        assert status == 200 and again["model_version"] == new and not again["created"]
        assert call(url + "/health")[1]["versions"] == sorted(["xgboost-served", new])
        m = metrics(url)
        assert m[("retrains_total", ())] == 2


def test_retrain_from_candles_and_prophet(bars, versions, tmp_path):
    import shutil

    candles, ot, _, _, y = bars
    body = candle_dicts(candles[:TRAIN])
    labels = [None if not np.isfinite(v) else int(v) for v in y[:TRAIN]]
    d = shutil.copytree(versions["lightgbm"], tmp_path / "lightgbm-served")
    with ServerThread(ModelService.from_path(d)) as server:
        status, out = call(server.url + "/retrain", {"candles": body, "labels": labels})
        assert status == 201, out
        assert 2000 < out["rows"] < TRAIN  # warm-up rows and unknown labels left out
        status, bad = call(server.url + "/retrain", {"candles": body, "labels": labels[:-1]})
        assert status == 422 and bad["detail"][0]["field"] == "labels", bad
    d = shutil.copytree(versions["prophet"], tmp_path / "prophet-served")
    with ServerThread(ModelService.from_path(d)) as server:
        status, out = call(
            server.url + "/retrain", {"candles": candle_dicts(candles[:3000]), "forecast_bars": 900}
        )
        assert status == 201 and (tmp_path / out["model_version"] / "forecast.npz").is_file()
        _, p = call(server.url + "/predict", {"candles": candle_dicts(candles[3000:3900])})
        got = np.array(p["probabilities"], dtype=np.float64)
        assert p["model_version"] == out["model_version"] and np.isfinite(got).all()
        status, err = call(server.url + "/retrain", {"candles": candle_dicts(candles[:200])})
        assert status == 422 and "hourly closes" in err["error"], err
    with ServerThread(service_for("onnx", versions["onnx"])) as server:
        status, err = call(server.url + "/retrain", {"rows": [[0.0] * 6], "labels": [1]})
        assert status == 409 and "cannot be retrained" in err["error"], err
        assert call(server.url + "/health")[0] == 200
        assert (
            metrics(server.url)[
                ("prediction_errors_total", (("endpoint", "/retrain"), ("kind", "not_retrainable")))
            ]
            == 1
        )


def test_metrics_count_predictions_and_latency(bars, versions):
    _, ot, close, X, _ = bars
    with ServerThread(ModelService.from_path(versions["lightgbm"])) as server:
        node = RemoteModel(server.url, timeout_s=10, feature_names=FEATURES)
        for i in range(30):
            node.predict_proba(Segment(ot[3000 + i : 3001 + i], close[:1], X[3000 + i : 3001 + i]))
        node.predict_proba(Segment(ot[3000:3400], close[3000:3400], X[3000:3400]))
        call(server.url + "/predict", {"rows": [[1.0, 2.0]]})  # refused: 422
        m = metrics(server.url)
    key = ("predictions_total", (("source", "rows"), ("version", "lightgbm-served")))
    assert m[key] == 30 + 400
    assert m[("prediction_latency_seconds_count", ())] == 31
    assert m[("prediction_latency_seconds_bucket", (("le", "+Inf"),))] == 31
    assert 0 < m[("prediction_latency_seconds_sum", ())] < 31 * 0.5
    # buckets are cumulative and the one-row predictions sit in the fine buckets
    assert m[("prediction_latency_seconds_bucket", (("le", "0.01"),))] >= 25
    assert m[("prediction_errors_total", (("endpoint", "/predict"), ("kind", "invalid_body")))] == 1


@pytest.mark.parametrize("kind", ["lightgbm", "mlp"])
def test_retrain_of_each_feature_kind_saves_a_version_that_predicts_as_served(
    kind, bars, versions, tmp_path
):
    """LightGBM and the MLP (XGBoost above, Prophet from candles): POST /retrain answers the
    new version's id, its folder is saved, and loaded back it predicts what the server says."""
    import shutil

    _, _, _, X, y = bars
    d = shutil.copytree(versions[kind], tmp_path / f"{kind}-served")
    rows = X[TRAIN:3500]
    labels = [None if not np.isfinite(v) else int(v) for v in y[TRAIN:3500]]
    with ServerThread(ModelService.from_path(d)) as server:
        status, out = call(server.url + "/retrain", {"rows": rows.tolist(), "labels": labels})
        assert status == 201 and out["parent"] == f"{kind}-served", out
        assert out["model_version"].startswith(f"{kind}-")
        _, after = call(server.url + "/predict", {"rows": rows[:50].tolist()})
    assert after["model_version"] == out["model_version"]
    np.testing.assert_array_equal(
        np.array(after["probabilities"], dtype=np.float64),
        local_model(kind, tmp_path / out["model_version"]).predict_proba(
            Segment(np.zeros(50, np.int64), np.ones(50), rows[:50])
        ),
    )
