"""The remote node against engine serve-model on 127.0.0.1: predictions, timeout, refusals,
a server that goes away and comes back, retrain, the CLI process."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
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
        assert node.version.startswith("remote-")  # until the server names its version
        p = node.predict_proba(seg)
        assert node.version == "lightgbm-test"
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


def test_members_requests_in_flight_together(model_dir):
    """Three slow servers (0.3 s each): a bar waits for the slowest, not for the sum; the
    answers are the sequential ones, in the members' order."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.ml.models.external import predict_members

    service = ModelService.from_path(model_dir)
    servers = [ServerThread(service, delay_s=0.3) for _ in range(3)]
    for s in servers:
        s.start()
    try:
        nodes = [RemoteModel(s.url, timeout_s=5, feature_names=FEATS) for s in servers]
        local = service.get(None).model
        calls = [
            (nodes[0], segment(4, 1)),
            (local, segment(4, 2)),
            (nodes[1], segment(4, 3)),
            (nodes[2], segment(4, 4)),
        ]
        with ThreadPoolExecutor(3) as pool:
            predict_members(calls, pool)  # connections opened
            t0 = time.perf_counter()
            got = predict_members(calls, pool)
            took = time.perf_counter() - t0
        assert took < 0.6, took  # one delay (0.3 s), not three (0.9 s)
        for (model, seg), (p, ms) in zip(calls, got, strict=True):
            np.testing.assert_array_equal(p, local.predict_proba(seg))
            assert ms >= (300 if model is not local else 0)
    finally:
        for s in servers:
            s.stop()


def test_a_dropping_server_is_retried_within_the_deadline():
    """A server that accepts and drops every connection: the request is sent again once
    (tenacity), then the member abstains, well inside its timeout."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        accepted = []

        def drop() -> None:
            while len(accepted) < 2:
                conn, _ = srv.accept()
                conn.recv(65536)
                accepted.append(1)
                conn.close()

        th = threading.Thread(target=drop, daemon=True)
        th.start()
        node = RemoteModel(f"http://127.0.0.1:{port}", timeout_s=3, feature_names=FEATS)
        t0 = time.perf_counter()
        p = node.predict_proba(segment(2))
        took = time.perf_counter() - t0
        th.join(5)
    assert np.isnan(p).all() and len(accepted) == 2 and took < 1.0, (accepted, took)
    (ev,) = node.events
    assert ev["reason"] in ("RemoteDisconnected", "ConnectionResetError"), ev
    assert ev["endpoint"] == f"http://127.0.0.1:{port}"
