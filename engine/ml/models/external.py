"""Models the engine does not train: a user's ONNX classifier and a remote HTTP model.

``onnx``: an onnxruntime ``InferenceSession`` over the file at ``path``; its single input
takes the node's features in order (float32 or float64 as the graph declares); P(up) is the
class-1 column of the probability output (a tensor [n, 2] or skl2onnx's ZipMap list of
dicts). ``remote``: ``POST {url}/predict`` with ``{"features": [...], "rows": [[...], ...]}``,
answer ``{"probabilities": [...]}``; on a timeout, a connection error, a non-200 answer or a
malformed body the node abstains (NaN) for those rows and records an event.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.ml.models.base import Segment, finite_rows, masked_predict


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxModel:
    kind = "onnx"

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(
                f"onnx model file not found: {self.path}",
                hint="set the model's 'path:' to an existing .onnx file (relative to the working directory)",
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(
                f"cannot load onnx model {self.path}: {exc}",
                hint="export a classifier with skl2onnx/torch.onnx and point 'path:' at it",
            ) from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.dtype = np.float64 if "double" in inp.type else np.float32
        outs = self.session.get_outputs()
        names = [o.name for o in outs]
        prob = [n for n in names if "prob" in n.lower()]
        self.output_name = prob[0] if prob else names[-1]
        self.n_inputs = (
            inp.shape[1] if len(inp.shape) == 2 and isinstance(inp.shape[1], int) else None
        )
        self.version = "onnx-" + file_digest(self.path)[:16]

    def _run(self, X: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.output_name], {self.input_name: X.astype(self.dtype)})
        if isinstance(out, list):  # ZipMap: a list of {class: prob}
            return np.array([float(d.get(1, d.get("1", np.nan))) for d in out])
        arr = np.asarray(out, dtype=np.float64)
        if arr.ndim == 2:
            return arr[:, -1]
        return arr

    def predict_proba(self, seg: Segment) -> np.ndarray:
        if self.n_inputs is not None and seg.X.shape[1] != self.n_inputs:
            raise ConfigError(
                f"onnx model {self.path} takes {self.n_inputs} inputs, the node gives {seg.X.shape[1]} features",
                hint="list exactly the model's inputs, in order, under the node's 'features:'",
            )
        return masked_predict(seg.X, self._run)


class RemoteModel:
    """HTTP model client; abstains (NaN) on any failure and records it in ``events``."""

    kind = "remote"
    CHUNK = 20_000

    def __init__(
        self, url: str, *, timeout_s: float, feature_names: list[str], name: str = "remote"
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.feature_names = list(feature_names)
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.version = "remote-" + hashlib.sha256(self.url.encode()).hexdigest()[:16]

    def _post(self, rows: np.ndarray) -> np.ndarray:
        body = json.dumps({"features": self.feature_names, "rows": rows.tolist()}).encode()
        req = urllib.request.Request(
            self.url + "/predict",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            payload = json.loads(resp.read())
        probs = np.asarray(payload["probabilities"], dtype=np.float64)
        if probs.shape != (rows.shape[0],):
            raise ValueError(f"expected {rows.shape[0]} probabilities, got shape {probs.shape}")
        return probs

    def predict_proba(self, seg: Segment) -> np.ndarray:
        out = np.full(len(seg), np.nan)
        ok = np.flatnonzero(finite_rows(seg.X))
        for start in range(0, ok.shape[0], self.CHUNK):
            idx = ok[start : start + self.CHUNK]
            t0 = time.perf_counter()
            try:
                out[idx] = self._post(np.ascontiguousarray(seg.X[idx], dtype=np.float64))
            except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
                reason = "timeout" if "timed out" in str(exc).lower() else type(exc).__name__
                self.events.append(
                    {
                        "time": int(seg.open_time[idx[-1]]),
                        "severity": "warning",
                        "component": f"ml.remote.{self.name}",
                        "message": (
                            f"remote model {self.url}/predict failed ({reason}: {exc}) after "
                            f"{time.perf_counter() - t0:.3f}s; abstaining on {idx.shape[0]} bar(s)"
                        ),
                    }
                )
        return out
