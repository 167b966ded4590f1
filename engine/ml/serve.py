"""``engine serve-model``: a trained model behind HTTP (``/predict``, ``/retrain``, ``/health``,
``/metrics``), the counterpart of the ``remote`` model node.

``MODEL_DIR`` is a version folder under ``results/models/`` (its ``meta.json`` names the kind,
params and features). Endpoints (JSON in and out):

* ``POST /predict`` ``{"rows": [[x, ...], ...]}`` (features in the model's order, or
  ``{"rows": [{name: x}, ...]}``) -> ``{"probabilities": [...], "model_version": ...}``;
* ``POST /retrain`` ``{"rows": [...], "labels": [0|1, ...]}`` -> refits the same kind and
  params on the posted rows (in memory) and answers the new version id;
* ``GET /health`` -> ``{"status": "ok", "kind", "model_version", "features"}``;
* ``GET /metrics`` -> request counts, errors and latency (mean, p50, p99 in ms) per endpoint.

``delay_s`` adds latency to every ``/predict`` answer (fault injection for tests of the
remote node's timeout).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.ml.models import TRAINED_KINDS, load_model, new_model
from engine.ml.models.base import Segment, TrainSet


class ModelService:
    """The model, its metadata and request statistics (thread-safe)."""

    def __init__(self, model_dir: Path, *, delay_s: float = 0.0) -> None:
        meta_path = Path(model_dir) / "meta.json"
        if not meta_path.is_file():
            raise ConfigError(
                f"{model_dir}: not a model version folder (no meta.json)",
                hint="pass a folder under results/models/ written by a backtest (e.g. results/models/lightgbm-...)",
            )
        self.meta = json.loads(meta_path.read_text())
        self.kind = self.meta["kind"]
        if self.kind not in TRAINED_KINDS or self.kind == "prophet":
            raise ConfigError(
                f"{model_dir}: serve-model serves feature models (lightgbm, xgboost, mlp), not {self.kind}",
                hint="pick a lightgbm-*, xgboost-* or mlp-* folder",
            )
        self.features: list[str] = list(self.meta.get("features", []))
        self.version: str = self.meta["version"]
        self.model = load_model(self.kind, Path(model_dir), self.meta["params"], threads=1)
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.stats: dict[str, dict[str, Any]] = {}

    def record(self, path: str, seconds: float, ok: bool) -> None:
        with self.lock:
            st = self.stats.setdefault(path, {"count": 0, "errors": 0, "latencies": []})
            st["count"] += 1
            st["errors"] += 0 if ok else 1
            st["latencies"].append(seconds)
            del st["latencies"][:-10_000]

    def metrics(self) -> dict[str, Any]:
        with self.lock:
            out = {}
            for path, st in self.stats.items():
                lat = np.asarray(st["latencies"]) * 1000
                out[path] = {
                    "count": st["count"],
                    "errors": st["errors"],
                    "latency_ms_mean": float(lat.mean()) if lat.size else None,
                    "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
                    "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
                }
            return {"model_version": self.version, "requests": out}

    def _matrix(self, rows: Any) -> np.ndarray:
        if not isinstance(rows, list):
            raise ValueError("'rows' must be a list")
        if rows and isinstance(rows[0], dict):
            missing = [f for f in self.features if f not in rows[0]]
            if missing:
                raise ValueError(f"row 0 lacks feature {missing[0]!r}")
            rows = [[r[f] for f in self.features] for r in rows]
        X = np.asarray(rows, dtype=np.float64)
        if X.ndim != 2 or (self.features and X.shape[1] != len(self.features)):
            raise ValueError(
                f"expected rows of {len(self.features)} features, got shape {list(X.shape)}"
            )
        return X

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        X = self._matrix(body.get("rows"))
        n = X.shape[0]
        seg = Segment(np.zeros(n, dtype=np.int64), np.full(n, np.nan), X)
        with self.lock:
            model = self.model
            version = self.version
        p = model.predict_proba(seg)
        return {
            "probabilities": [None if not np.isfinite(v) else float(v) for v in p],
            "model_version": version,
        }

    def retrain(self, body: dict[str, Any]) -> dict[str, Any]:
        X = self._matrix(body.get("rows"))
        y = np.asarray(body.get("labels"), dtype=np.float64)
        if y.shape != (X.shape[0],) or not np.isin(y, (0.0, 1.0)).all() or np.unique(y).size < 2:
            raise ValueError("'labels' must hold one 0/1 label per row, both classes present")
        seed = int(self.meta.get("seed", 7))
        model = new_model(self.kind, self.meta["params"]).fit(
            TrainSet(X, y, tuple(self.features)), seed=seed, threads=1
        )
        digest = hashlib.sha256(X.tobytes() + y.tobytes() + self.version.encode()).hexdigest()[:16]
        with self.lock:
            self.model = model
            self.version = f"{self.kind}-{digest}"
        return {"ok": True, "rows": int(X.shape[0]), "model_version": self.version}

    def health(self) -> dict[str, Any]:
        """The ``GET /health`` answer: the model's kind, version and features."""
        return {
            "status": "ok",
            "kind": self.kind,
            "model_version": self.version,
            "features": self.features,
        }

    def post(self, path: str, body: Any) -> dict[str, Any]:
        """``POST /predict`` (after the configured delay) or ``POST /retrain`` with a JSON body."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        if path == "/predict":
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.predict(body)
        return self.retrain(body)


#: the server's routes (listed in a 404 answer)
ROUTES = ("POST /predict", "POST /retrain", "GET /health", "GET /metrics")


def make_server(
    service: ModelService, *, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """An HTTP server for ``service`` (``port=0``: any free port; see ``server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            return

        def _send(self, code: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            t0 = time.perf_counter()
            path = self.path.split("?")[0]
            ok = True
            try:
                if method == "GET" and path == "/health":
                    self._send(200, service.health())
                elif method == "GET" and path == "/metrics":
                    self._send(200, service.metrics())
                elif method == "POST" and path in ("/predict", "/retrain"):
                    length = int(self.headers.get("Content-Length") or 0)
                    try:
                        out = service.post(path, json.loads(self.rfile.read(length) or b"{}"))
                    except (ValueError, TypeError, KeyError) as exc:
                        ok = False
                        self._send(400, {"error": str(exc)})
                    else:
                        self._send(200, out)
                else:
                    ok = False
                    self._send(404, {"error": f"no route {method} {path}", "routes": list(ROUTES)})
            except (BrokenPipeError, ConnectionResetError):
                ok = False
            service.record(path, time.perf_counter() - t0, ok)

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
