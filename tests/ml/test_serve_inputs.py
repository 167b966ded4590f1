"""engine serve-model refuses bad requests with a 4xx naming what was wrong, counts each
refusal by kind in /metrics, and keeps serving: after every refusal a good request gets
the same answer as before."""

from __future__ import annotations

import http.client
import json
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.ml.serve import ModelService, ServerThread

from .serve_helpers import call, metrics, onnx_file, rsi_bb_atr_version

FEATS = ["rsi_14", "bb_pct", "atr_pct_14"]
MAX_BODY = 64 << 10
GOOD = {"rows": [[55.0, 0.4, 0.3], [40.0, 0.9, 0.5]]}
CANDLE = {
    "open_time": 300_000,
    "open": 100.0,
    "high": 101.0,
    "low": 99.0,
    "close": 100.5,
    "volume": 3.0,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return rsi_bb_atr_version(tmp_path_factory.mktemp("models"), "lightgbm-in")


def candle(**over):
    return {**CANDLE, **over}


#: (what, endpoint, body, status, field, words in the message)
CASES = [
    (
        "wrong feature count",
        "/predict",
        {"rows": [[1.0, 2.0]]},
        422,
        "rows.0",
        "expected 3 feature values (rsi_14, bb_pct, atr_pct_14), got 2",
    ),
    (
        "a ragged later row",
        "/predict",
        {"rows": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]},
        422,
        "rows.1",
        "expected 3 feature values",
    ),
    (
        "a non-numeric value",
        "/predict",
        {"rows": [[1.0, "high", 3.0]]},
        422,
        "rows.0.1",
        "valid number",
    ),
    (
        "a number as a string",
        "/predict",
        {"rows": [[1.0, "0.5", 3.0]]},
        422,
        "rows.0.1",
        "valid number",
    ),
    ("a boolean value", "/predict", {"rows": [[True, 0.5, 3.0]]}, 422, "rows.0.0", "valid number"),
    ("rows not a list", "/predict", {"rows": 5}, 422, "rows", "valid array"),
    ("no rows nor candles", "/predict", {}, 422, "body", "send 'rows'"),
    ("an unknown field", "/predict", {**GOOD, "colour": "red"}, 422, "colour", "Extra inputs"),
    (
        "features lacking one",
        "/predict",
        {"features": ["rsi_14", "bb_pct", "x"], **GOOD},
        422,
        "features",
        "lacks the model's feature 'atr_pct_14'",
    ),
    (
        "open_time of another length",
        "/predict",
        {**GOOD, "open_time": [0]},
        422,
        "open_time",
        "expected 2 values",
    ),
    ("rows and candles", "/predict", {**GOOD, "candles": [CANDLE]}, 422, "body", "not both"),
    (
        "a candle without volume",
        "/predict",
        {"candles": [{k: v for k, v in CANDLE.items() if k != "volume"}]},
        422,
        "candles.0.volume",
        "Field required",
    ),
    (
        "a candle's high below its low",
        "/predict",
        {"candles": [candle(high=98.0)]},
        422,
        "candles.0",
        "high 98.0 is below",
    ),
    (
        "a negative close",
        "/predict",
        {"candles": [candle(close=-1.0)]},
        422,
        "candles.0.close",
        "greater than 0",
    ),
    (
        "a fractional open time",
        "/predict",
        {"candles": [candle(open_time=300_000.5)]},
        422,
        "candles.0.open_time",
        "valid integer",
    ),
    (
        "candles out of order",
        "/predict",
        {"candles": [CANDLE, candle(open_time=0)]},
        422,
        "candles.1.open_time",
        "does not follow",
    ),
    (
        "a candle off the 5m grid",
        "/predict",
        {"candles": [candle(open_time=60_000)]},
        422,
        "candles.0.open_time",
        "not on the model's 5m bar grid",
    ),
    (
        "funding without candles",
        "/predict",
        {**GOOD, "funding": [{"funding_time": 0, "funding_rate": 0.0001}]},
        422,
        "body",
        "goes with 'candles'",
    ),
    (
        "an unknown version",
        "/predict",
        {**GOOD, "version": "lightgbm-nope"},
        404,
        "version",
        "unknown model version 'lightgbm-nope'",
    ),
    (
        "labels of another length",
        "/retrain",
        {**GOOD, "labels": [1]},
        422,
        "labels",
        "per row: 2, got 1",
    ),
    ("a label of 2", "/retrain", {**GOOD, "labels": [1, 2]}, 422, "labels.1", "less than or equal"),
    (
        "too few labelled rows",
        "/retrain",
        {**GOOD, "labels": [1, 0]},
        422,
        "labels",
        "a retrain needs 20",
    ),
]


def test_bad_bodies_get_a_4xx_naming_the_field_and_the_server_serves_on(model_dir):
    with ServerThread(ModelService.from_path(model_dir), max_body=MAX_BODY) as server:
        url = server.url
        status, ref = call(url + "/predict", GOOD)
        assert status == 200 and len(ref["probabilities"]) == 2
        for what, endpoint, body, want_status, field, words in CASES:
            status, out = call(url + endpoint, body)
            assert status == want_status, (what, out)
            assert out["detail"][0]["field"] == field, (what, out)
            assert words in out["error"] and out["error"].startswith(field + ": "), (what, out)
            assert call(url + "/predict", GOOD) == (200, ref), what
        m = metrics(url)
    errors = {
        tuple(v for _, v in k[1]): n for k, n in m.items() if k[0] == "prediction_errors_total"
    }
    want: dict[tuple[str, str], int] = {}
    for _, endpoint, _, status, _, _ in CASES:
        key = (endpoint, "unknown_version" if status == 404 else "invalid_body")
        want[key] = want.get(key, 0) + 1
    assert errors == want and want[("/retrain", "invalid_body")] == 3
    assert m[("prediction_latency_seconds_count", ())] == 1 + len(CASES)


def test_malformed_json_oversized_bodies_and_unknown_routes(model_dir):
    with ServerThread(ModelService.from_path(model_dir), max_body=MAX_BODY) as server:
        url = server.url
        status, ref = call(url + "/predict", GOOD)
        for raw, field, words in [
            (b'{"rows": [[1.0, 2.0,', "body", "Invalid JSON"),
            (b"[1, 2, 3]", "body", "should be an object"),
            (b"", "body", "Invalid JSON"),
        ]:
            status, out = call(url + "/predict", raw=raw)
            assert status == 422 and out["detail"][0]["field"] == field, out
            assert words in out["error"], out
            assert call(url + "/predict", GOOD) == (200, ref)
        # oversized, announced by Content-Length: refused before reading
        big = json.dumps({"rows": [[50.0, 0.5, 0.5]] * 5000}).encode()
        assert len(big) > MAX_BODY
        status, out = call(url + "/predict", raw=big)
        assert status == 413 and out["detail"][0]["field"] == "body", out
        assert (
            f"at most {MAX_BODY:,} bytes" in out["error"] and f"{len(big):,} bytes" in out["error"]
        )
        assert call(url + "/predict", GOOD) == (200, ref)
        # oversized and chunked (no Content-Length): refused while reading
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
        conn.request(
            "POST",
            "/predict",
            body=chunks,
            encode_chunked=True,
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 413 and "at most" in json.loads(resp.read())["error"]
        conn.close()
        assert call(url + "/predict", GOOD) == (200, ref)
        # unknown routes and methods
        status, out = call(url + "/nope", GOOD)
        assert status == 404 and "POST /predict" in out["routes"], out
        status, out = call(url + "/health", GOOD)
        assert status == 405 and "no route POST /health" in out["error"], out
        assert call(url + "/predict", GOOD) == (200, ref)
        m = metrics(url)
    errors = {dict(k[1])["kind"]: v for k, v in m.items() if k[0] == "prediction_errors_total"}
    assert errors == {"invalid_body": 3, "too_large": 2, "no_route": 2}


def test_a_model_without_feature_names_refuses_candles(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 3)), (rng.normal(size=200) > 0).astype(float)
    path = onnx_file(tmp_path / "m.onnx", X, y)
    with ServerThread(ModelService.from_path(path)) as server:
        status, out = call(server.url + "/predict", {"candles": [CANDLE]})
        assert status == 422 and "serve it with --features" in out["error"], out
        status, out = call(server.url + "/predict", {"rows": [[1.0, 2.0]]})
        assert status == 422 and out["detail"][0]["field"] == "rows.0", out
        status, out = call(server.url + "/predict", {"rows": X[:4].tolist()})
        assert status == 200 and len(out["probabilities"]) == 4


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve-model", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    m = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no address: {line!r} {proc.stderr.read()}")
    return proc, m.group(0)


def test_cli_serves_an_onnx_file_with_feature_names_and_refuses_bad_options(tmp_path):
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(200, 3)), (rng.normal(size=200) > 0).astype(float)
    path = onnx_file(tmp_path / "m.onnx", X, y)
    proc, url = _start(
        [str(path), "--port", "0", "--features", ",".join(FEATS), "--interval", "5m"]
    )
    try:
        health = call(url + "/health")[1]
        assert health["kind"] == "onnx" and health["features"] == FEATS and health["candles"]
        status, out = call(url + "/predict", {"candles": [CANDLE, candle(open_time=600_000)]})
        assert status == 200 and out["probabilities"] == [None, None]  # features not warm yet
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        proc.stdout.close()
        proc.stderr.close()
    for args, words in [
        ([str(path), "--features", "rsi_14,bb_pct"], "takes 3 inputs, --features names 2"),
        ([str(path), "--interval", "7m"], "unknown interval '7m'"),
        ([str(path), "--max-body-mb", "0"], "--max-body-mb: must be > 0"),
    ]:
        r = subprocess.run(
            [sys.executable, "-m", "engine", "serve-model", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
