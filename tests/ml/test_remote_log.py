"""A backtest with remote members logs where each prediction came from: model_predictions.endpoint
is the member's server without the credentials of its URL (NULL for in-process members); a
member whose server is down has a row at every bar (probability NULL, weight 0) and the
reason in system_events; the credentials reach the server as HTTP Basic authorization and
never the run log's predictions or events."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.backtest import run_backtest
from engine.ml.models.base import Segment
from engine.ml.models.external import RemoteModel, public_url
from engine.ml.serve import ModelService, ServerThread
from engine.runlog.query import run_query
from engine.strategy.load import load_strategy_text

from .serve_helpers import rsi_bb_atr_version

SECRET = "s3cr3t-token"

STRATEGY = """
name: remote_log
data: {{symbols: [BTCUSDT], interval: 5m, start: "2024-01-01", end: "2024-01-03T12:00",
        market: usdm}}
features: [rsi_14, bb_pct, atr_pct_14]
labels: {{horizon: 6, cost_bps: 2}}
training: {{train_window: 1d, retrain_every: 1d, warmup: 2d, embargo: 2, min_train_rows: 100,
           seed: 3, threads: 1}}
models:
  - {{kind: lightgbm, name: local, params: {{n_estimators: 5, num_leaves: 4}}}}
  - {{kind: remote, name: served, url: "{up}", timeout_s: 2}}
  - {{kind: remote, name: down, url: "{down}", timeout_s: 0.5}}
ensemble: {{payoff_lookback: 50, min_calibration_rows: 40}}
risk: {{sizing: fixed, fraction: 0.1}}
execution: {{initial_cash: 10000}}
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return rsi_bb_atr_version(tmp_path_factory.mktemp("models"), "lightgbm-log")


def test_public_url_drops_credentials_query_and_fragment():
    assert public_url("http://bot:s3cret@127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert (
        public_url("https://u@models.example:443/a/b?token=x#f") == "https://models.example:443/a/b"
    )
    assert public_url("http://[::1]:9000") == "http://[::1]:9000"
    node = RemoteModel("http://bot:s3cret@127.0.0.1:1", timeout_s=1, feature_names=["a"])
    assert SECRET not in repr(node) and "s3cret" not in node.endpoint + node.server + repr(node)


def test_credentials_in_the_url_are_sent_as_basic_authorization():
    """A server that records the request's Authorization header and answers 0.5 per row."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            out = json.dumps({"probabilities": [0.5] * len(body["rows"])}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            port = httpd.server_address[1]
            node = RemoteModel(
                f"http://bot:{SECRET}@127.0.0.1:{port}", timeout_s=5, feature_names=["a"]
            )
            seg = Segment(np.arange(3, dtype=np.int64), np.ones(3), np.ones((3, 1)))
            assert node.predict_proba(seg).tolist() == [0.5] * 3 and node.events == []
        finally:
            httpd.shutdown()
    token = base64.b64encode(f"bot:{SECRET}".encode()).decode()
    assert seen == [f"Basic {token}"]
    assert node.endpoint == f"http://127.0.0.1:{port}/predict" and SECRET not in repr(node)


def test_backtest_logs_each_remote_members_endpoint(model_dir, usdm_store, tmp_path):
    service = ModelService.from_path(model_dir)
    dead = ServerThread(service)
    dead_port = dead.start()
    dead.stop()  # nobody listens there any more: connection refused
    down = f"http://127.0.0.1:{dead_port}"
    with ServerThread(service) as server:
        up = f"http://bot:{SECRET}@127.0.0.1:{server.port}/"
        graph = load_strategy_text(STRATEGY.format(up=up, down=down), file="remote_log.yaml")
        res = run_backtest(graph, store=usdm_store, results=tmp_path)
    assert res.run_id is not None

    def q(sql: str) -> list[dict]:
        return run_query(sql, results_dir=tmp_path).to_pylist()

    rows = q(
        "SELECT model, count(*) AS n, count(probability) AS answered, max(weight) AS w_hi, "
        "any_value(endpoint) AS endpoint, count(DISTINCT endpoint) AS n_ep, "
        "count(latency_ms) AS timed FROM predictions GROUP BY model"
    )
    by = {r.pop("model"): r for r in rows}
    n = by["served"]["n"]
    assert n > 100 and by["down"]["n"] == n  # a remote member has a row at every bar
    # an answering member's fusion weight is logged (a number; in this one fold every member
    # is still at 0: a weight needs skill on matured out-of-fold labels, and fold 0 has none)
    assert by["served"]["answered"] == n and by["served"]["w_hi"] is not None
    assert by["served"]["endpoint"] == f"http://127.0.0.1:{server.port}"  # no credentials
    assert by["down"] == {
        "n": n,
        "answered": 0,
        "w_hi": 0.0,
        "endpoint": down,
        "n_ep": 1,
        "timed": 0,
    }  # latency_ms: live's measure, NULL in a backtest
    assert by["local"]["endpoint"] is None and by["local"]["n_ep"] == 0
    served = q("SELECT DISTINCT model_version FROM predictions WHERE model = 'served'")
    assert served == [{"model_version": "lightgbm-log"}]  # the version its server named
    ev = q("SELECT component, message FROM events WHERE component LIKE 'ml.remote.%'")
    assert ev and {e["component"] for e in ev} == {"ml.remote.down"}
    assert all(f"{down}/predict failed (ConnectionRefusedError" in e["message"] for e in ev)
    # nowhere in the run log: rows, runs.params' config, the strategy hash's input
    assert not [f for f in tmp_path.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    config = q("SELECT params FROM runs")[0]["params"]
    assert f"http://127.0.0.1:{server.port}" in config
