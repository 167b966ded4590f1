"""The remote node against engine serve-model on 127.0.0.1: predictions, timeout, endpoints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from engine.ml.models import new_model
from engine.ml.models.base import Segment, TrainSet, write_json
from engine.ml.models.external import RemoteModel
from engine.ml.serve import ModelService, make_server
from engine.strategy.ml_config import ModelNode

FEATS = ["f0", "f1", "f2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=600) > 0).astype(float)
    params = ModelNode(kind="lightgbm", params={"n_estimators": 10, "min_data_in_leaf": 10}).params
    d = tmp_path_factory.mktemp("models") / "lightgbm-test"
    d.mkdir()
    new_model("lightgbm", params).fit(TrainSet(X, y), seed=1, threads=1).save(d)
    write_json(
        d / "meta.json",
        {
            "kind": "lightgbm",
            "params": params,
            "features": FEATS,
            "version": "lightgbm-test",
            "seed": 1,
        },
    )
    return d


def serve(model_dir: Path, delay_s: float = 0.0):
    service = ModelService(model_dir, delay_s=delay_s)
    server = make_server(service, host="127.0.0.1", port=0)
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    return service, server, f"http://127.0.0.1:{server.server_address[1]}"


def segment(n=50, seed=1):
    X = np.random.default_rng(seed).normal(size=(n, 3))
    return Segment(np.arange(n, dtype=np.int64) * 300_000, np.full(n, 100.0), X)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_remote_node_predicts_like_the_local_model(model_dir):
    service, server, url = serve(model_dir)
    try:
        seg = segment()
        seg.X[5, 1] = np.nan  # not sent: abstains locally
        node = RemoteModel(url, timeout_s=5, feature_names=FEATS)
        p = node.predict_proba(seg)
        local = service.model.predict_proba(seg)
        np.testing.assert_array_equal(np.isnan(p), np.isnan(local))
        np.testing.assert_allclose(p[~np.isnan(p)], local[~np.isnan(local)], rtol=0, atol=0)
        assert np.isnan(p[5]) and node.events == []
        assert get(url + "/health")["model_version"] == "lightgbm-test"
        m = get(url + "/metrics")["requests"]
        assert (
            m["/predict"]["count"] == 1
            and m["/predict"]["errors"] == 0
            and m["/predict"]["latency_ms_p50"] > 0
        )
    finally:
        server.shutdown()
        server.server_close()


def test_remote_node_abstains_on_timeout_and_on_errors(model_dir):
    _, server, url = serve(model_dir, delay_s=1.0)
    try:
        node = RemoteModel(url, timeout_s=0.2, feature_names=FEATS)
        p = node.predict_proba(segment(10))
        assert np.isnan(p).all()
        assert len(node.events) == 1 and "timeout" in node.events[0]["message"]
        assert node.events[0]["severity"] == "warning"
    finally:
        server.shutdown()
        server.server_close()
    # nobody listening any more: connection refused -> abstain, event
    dead = RemoteModel(url, timeout_s=0.5, feature_names=FEATS)
    assert np.isnan(dead.predict_proba(segment(4))).all() and len(dead.events) == 1
    # wrong feature count -> the server answers 400 -> abstain
    _, server, url = serve(model_dir)
    try:
        bad = RemoteModel(url, timeout_s=2, feature_names=FEATS[:2])
        assert np.isnan(bad.predict_proba(Segment(np.arange(3), np.ones(3), np.ones((3, 2))))).all()
        assert "HTTPError" in bad.events[0]["message"]
    finally:
        server.shutdown()
        server.server_close()


def test_retrain_endpoint_swaps_the_model(model_dir):
    _, server, url = serve(model_dir)
    try:
        rng = np.random.default_rng(3)
        X = rng.normal(size=(400, 3))
        y = (X[:, 1] > 0).astype(int)
        req = urllib.request.Request(
            url + "/retrain",
            data=json.dumps({"rows": X.tolist(), "labels": y.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())
        assert out["ok"] and out["rows"] == 400 and out["model_version"] != "lightgbm-test"
        assert get(url + "/health")["model_version"] == out["model_version"]
        p = RemoteModel(url, timeout_s=5, feature_names=FEATS).predict_proba(
            Segment(np.arange(400), np.ones(400), X)
        )
        assert np.mean((p > 0.5) == (y == 1)) > 0.9  # the new model learned feature 1
    finally:
        server.shutdown()
        server.server_close()


def test_engine_serve_model_cli(model_dir):
    with subprocess.Popen(
        [sys.executable, "-m", "engine", "serve-model", str(model_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            assert m, line
            url = m.group(0)
            assert get(url + "/health")["status"] == "ok"
            p = RemoteModel(url, timeout_s=5, feature_names=FEATS).predict_proba(segment(5))
            assert np.isfinite(p).all()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_serve_model_rejects_a_folder_without_meta(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "engine", "serve-model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no meta.json" in r.stderr
