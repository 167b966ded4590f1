"""The remote node against engine serve-model on 127.0.0.1: predictions, timeout, refusals,
a server that goes away and comes back, retrain, the CLI process."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.ml.models.base import Segment, TrainSet
from engine.ml.models.external import RemoteModel
from engine.ml.serve import ModelService, ServerThread

from .serve_helpers import call, make_version

FEATS = ["f0", "f1", "f2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=600) > 0).astype(float)
    root = tmp_path_factory.mktemp("models")
    return make_version(root, "lightgbm", TrainSet(X, y), features=FEATS, version="lightgbm-test")


def segment(n=50, seed=1):
    X = np.random.default_rng(seed).normal(size=(n, 3))
    return Segment(np.arange(n, dtype=np.int64) * 300_000, np.full(n, 100.0), X)


def test_remote_node_predicts_like_the_local_model(model_dir):
    service = ModelService.from_path(model_dir)
    with ServerThread(service) as server:
        seg = segment()
        seg.X[5, 1] = np.nan  # not sent: abstains locally
        node = RemoteModel(server.url, timeout_s=5, feature_names=FEATS)
        p = node.predict_proba(seg)
        local = service.get(None).model.predict_proba(seg)
        np.testing.assert_array_equal(p, local)  # NaN at the same rows, the rest bit for bit
        assert np.isnan(p[5]) and node.events == []
        assert node.endpoint == server.url + "/predict" and node.last_latency_ms > 0
        # the connection is kept alive: many one-row calls, each equal to the local model
        for i in range(20):
            one = seg.rows(slice(i, i + 1))
            np.testing.assert_array_equal(node.predict_proba(one), local[i : i + 1])
        assert node.events == []
        assert call(server.url + "/health")[1]["model_version"] == "lightgbm-test"


def test_remote_node_abstains_on_timeout_and_on_refusals(model_dir):
    service = ModelService.from_path(model_dir)
    with ServerThread(service, delay_s=1.0) as server:
        url = server.url
        node = RemoteModel(url, timeout_s=0.2, feature_names=FEATS)
        p = node.predict_proba(segment(10))
        assert np.isnan(p).all()
        assert len(node.events) == 1 and "timeout" in node.events[0]["message"]
        assert node.events[0]["severity"] == "warning"
    # nobody listening any more: connection refused -> abstain, event
    dead = RemoteModel(url, timeout_s=0.5, feature_names=FEATS)
    assert np.isnan(dead.predict_proba(segment(4))).all() and len(dead.events) == 1
    assert "ConnectionRefusedError" in dead.events[0]["message"]
    # wrong feature count -> the server answers 422 naming the field -> abstain, quoted
    with ServerThread(service) as server:
        bad = RemoteModel(server.url, timeout_s=2, feature_names=FEATS[:2])
        assert np.isnan(bad.predict_proba(Segment(np.arange(3), np.ones(3), np.ones((3, 2))))).all()
        msg = bad.events[0]["message"]
        assert "HTTP 422" in msg and "features: lacks the model's feature 'f2'" in msg, msg
        # the same server still answers a good node
        good = RemoteModel(server.url, timeout_s=2, feature_names=FEATS)
        assert np.isfinite(good.predict_proba(segment(3))).all() and good.events == []


def test_remote_node_comes_back_when_the_server_does(model_dir):
    service = ModelService.from_path(model_dir)
    first = ServerThread(service)
    port = first.start()
    node = RemoteModel(first.url, timeout_s=2, feature_names=FEATS)
    want = service.get(None).model.predict_proba(segment(5))
    np.testing.assert_array_equal(node.predict_proba(segment(5)), want)
    first.stop()
    assert np.isnan(node.predict_proba(segment(5))).all() and len(node.events) == 1
    with ServerThread(service, port=port):  # the kept-alive connection is dead: reopened
        np.testing.assert_array_equal(node.predict_proba(segment(5)), want)
    assert len(node.events) == 1


def test_retrain_endpoint_swaps_the_model(model_dir, tmp_path):
    import shutil

    d = shutil.copytree(model_dir, tmp_path / "lightgbm-test")
    with ServerThread(ModelService.from_path(d)) as server:
        rng = np.random.default_rng(3)
        X = rng.normal(size=(400, 3))
        y = (X[:, 1] > 0).astype(int)
        status, out = call(server.url + "/retrain", {"rows": X.tolist(), "labels": y.tolist()})
        assert status == 201 and out["ok"] and out["rows"] == 400, out
        assert out["parent"] == "lightgbm-test" and out["model_version"].startswith("lightgbm-")
        assert (tmp_path / out["model_version"] / "meta.json").is_file()
        assert call(server.url + "/health")[1]["model_version"] == out["model_version"]
        p = RemoteModel(server.url, timeout_s=5, feature_names=FEATS).predict_proba(
            Segment(np.arange(400), np.ones(400), X)
        )
        assert np.mean((p > 0.5) == (y == 1)) > 0.9  # the new model learned feature 1


def _read_line(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """The server's first stdout line, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "engine serve-model printed nothing"
    return proc.stdout.readline()


def test_engine_serve_model_cli(model_dir):
    with subprocess.Popen(
        [sys.executable, "-m", "engine", "serve-model", str(model_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            line = _read_line(proc)
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            assert m and "lightgbm-test (lightgbm)" in line, line
            url = m.group(0)
            assert call(url + "/health")[1]["status"] == "ok"
            p = RemoteModel(url, timeout_s=5, feature_names=FEATS).predict_proba(segment(5))
            assert np.isfinite(p).all()
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=20)
    assert rc == 0


def test_serve_model_rejects_a_folder_without_meta(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "engine", "serve-model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no meta.json" in r.stderr
