"""Models the engine does not train: a user's ONNX classifier and a remote HTTP model.

``onnx``: an onnxruntime ``InferenceSession`` over the file at ``path``; its single input
takes the node's features in order (float32 or float64 as the graph declares); P(up) is the
class-1 column of the probability output (a tensor [n, 2] or skl2onnx's ZipMap list of
dicts). ``remote``: ``POST {url}/predict`` with ``{"features": [...], "rows": [[...], ...],
"open_time": [...], "close": [...]}``, answer ``{"probabilities": [...]}`` (the contract of
``engine serve-model``); on a timeout, a connection error, a non-200 answer or a malformed
body the node abstains (NaN) for those rows and records an event. Each request has a
deadline (the node's ``timeout_s``) that also bounds its retries: a kept-alive connection
the server dropped is reopened at once (tenacity), a refused connection (the server is down)
abstains at once. :func:`predict_members` puts several members' requests in flight together,
so one bar waits for the slowest member, never for the sum.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine.errors import ConfigError
from engine.ml.models.base import Segment, finite_rows, masked_predict
from engine.strategy.ml_config import public_url


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


#: a kept-alive connection the server closed meanwhile (a restart, an idle timeout): the
#: request is sent again at once on a new connection (predictions are idempotent)
DROPPED = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


class RemoteModel:
    """HTTP model client (``engine serve-model`` or any server of the same contract).

    Each chunk of finite rows is one ``POST {url}/predict`` of ``{"features", "rows",
    "open_time", "close"}`` (open times and closes let a Prophet server answer too) over one
    kept-alive connection. A request has ``timeout_s`` in all (connect, send, answer and
    retries): a connection the server dropped is reopened and the request sent again, up to
    ``retries`` times, while the deadline allows (tenacity); a refused connection is not
    retried (the server is down: waiting would only delay the decision). Any failure (a
    timeout, a refused connection, a non-200 answer, a malformed body) makes the node
    abstain (NaN) on those rows and records an event naming the reason; a 4xx answer's
    JSON ``error`` (the field the server refused) is quoted. Credentials in the URL
    (``http://user:secret@host:port``) are sent as HTTP Basic authorization and never
    shown: ``server`` is the URL without them (what ``model_predictions.endpoint`` logs),
    ``endpoint`` the address posted to; ``last_latency_ms`` the round trip of the last
    successful request; ``version`` the model version the server named in its last answer
    (what ``model_predictions.model_version`` logs).
    """

    kind = "remote"
    #: feature values per request (about 8 MB of JSON, under the server's 32 MiB default)
    CELLS = 400_000

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        feature_names: list[str],
        name: str = "remote",
        retries: int = 1,
    ) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"remote model {name}: url {public_url(url)!r} is not an http(s) address",
                hint="e.g. url: http://127.0.0.1:8765 (the address engine serve-model prints)",
            )
        self.server = public_url(url)
        self.url = self.server  # kept for callers that read it: never carries credentials
        self.endpoint = self.server + "/predict"
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.feature_names = list(feature_names)
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.last_latency_ms: float | None = None
        #: the node's own id until its server names the version that answered
        self.identity = "remote-" + hashlib.sha256(self.server.encode()).hexdigest()[:16]
        self.served_version: str | None = None
        self._headers = {"Content-Type": "application/json"}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            secret = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = urllib.parse.urlsplit(self.endpoint).path
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """The model version the server named in its last answer (``model_version`` of
        ``engine serve-model``: e.g. the fold version it serves, or a retrain's), so the
        run log records which model made the prediction; ``remote-<hash of the url>``
        until the server has answered (or when it names none)."""
        return self.served_version or self.identity

    def __repr__(self) -> str:
        return f"RemoteModel({self.name!r}, {self.endpoint!r}, timeout_s={self.timeout_s})"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """The kept-alive connection (its socket timeout set to ``timeout``), or a new one."""
        conn = self._conn
        if conn is not None:
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            conn.timeout = timeout
            return conn
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        self._conn = cls(self._host or "", self._port, timeout=timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the kept-alive connection (the next request opens a new one)."""
        with self._lock:
            self._close()

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    def _once(self, body: bytes, deadline: float) -> tuple[int, bytes]:
        """One POST within what is left of the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: no time left of {self.timeout_s}s for a retry")
        conn = self._connection(left)
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self._close()
            raise
        if resp.will_close:
            self._close()
        return resp.status, data

    def _exchange(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body``; a dropped connection is reopened and the request sent again (up to
        ``retries`` times) while the deadline of ``timeout_s`` allows."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        deadline = time.monotonic() + self.timeout_s
        for attempt in Retrying(
            stop=stop_after_attempt(self.retries + 1),
            retry=retry_if_exception_type(DROPPED),
            reraise=True,
        ):
            with attempt:
                return self._once(body, deadline)
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover

    def _post(self, seg: Segment, idx: np.ndarray) -> np.ndarray:
        body = orjson.dumps(
            {
                "features": self.feature_names,
                "rows": np.ascontiguousarray(seg.X[idx], dtype=np.float64),
                "open_time": np.ascontiguousarray(seg.open_time[idx], dtype=np.int64),
                "close": np.ascontiguousarray(seg.close[idx], dtype=np.float64),
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        with self._lock:
            status, data = self._exchange(body)
        if status != 200:
            raise RemoteAnswerError(status, data)
        payload = orjson.loads(data)
        probs = np.array(payload["probabilities"], dtype=np.float64)
        if probs.shape != (idx.shape[0],):
            raise ValueError(f"expected {idx.shape[0]} probabilities, got shape {probs.shape}")
        named = payload.get("model_version")
        if isinstance(named, str) and named:
            self.served_version = named
        return probs

    def predict_proba(self, seg: Segment) -> np.ndarray:
        out = np.full(len(seg), np.nan)
        ok = np.flatnonzero(finite_rows(seg.X))
        step = max(1, self.CELLS // max(1, seg.X.shape[1]))
        for start in range(0, ok.shape[0], step):
            idx = ok[start : start + step]
            t0 = time.perf_counter()
            try:
                out[idx] = self._post(seg, idx)
                self.last_latency_ms = (time.perf_counter() - t0) * 1000.0
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
                self.events.append(self._event(seg, idx, exc, time.perf_counter() - t0))
        return out

    def _event(
        self, seg: Segment, idx: np.ndarray, exc: BaseException, took_s: float
    ) -> dict[str, Any]:
        timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc).lower()
        reason = "timeout" if timed_out else type(exc).__name__
        return {
            "time": int(seg.open_time[idx[-1]]),
            "severity": "warning",
            "component": f"ml.remote.{self.name}",
            "message": (
                f"remote model {self.endpoint} failed ({reason}: {exc}) after "
                f"{took_s:.3f}s; abstaining on {idx.shape[0]} bar(s)"
            ),
            "endpoint": self.server,
            "reason": reason,
            "bars": int(idx.shape[0]),
        }


def predict_members(
    calls: Sequence[tuple[Any, Segment]], executor: Executor | None = None
) -> list[tuple[np.ndarray, float]]:
    """Each ``(model, segment)``'s P(up) and the milliseconds it took, in order.

    With an ``executor`` and two or more remote members, their requests are in flight
    together (one worker each) while the in-process models predict here: a bar waits for
    its slowest member (each bounded by its own ``timeout_s``), not for the sum. The
    results do not depend on the order the answers arrive in.
    """
    remote = [i for i, (m, _) in enumerate(calls) if isinstance(m, RemoteModel)]
    out: list[tuple[np.ndarray, float] | None] = [None] * len(calls)

    def timed(i: int) -> tuple[np.ndarray, float]:
        model, seg = calls[i]
        t0 = time.perf_counter()
        p = model.predict_proba(seg)
        return p, (time.perf_counter() - t0) * 1000.0

    pending = {}
    if executor is not None and len(remote) > 1:
        pending = {i: executor.submit(timed, i) for i in remote}
    for i in range(len(calls)):
        if i not in pending:
            out[i] = timed(i)
    for i, fut in pending.items():
        out[i] = fut.result()
    return [o for o in out if o is not None]


def remote_endpoints(models: Sequence[Any]) -> dict[str, str]:
    """``{node name: server URL without credentials}`` of a strategy's ``remote`` model
    nodes (what ``model_predictions.endpoint`` logs; in-process models are not in it)."""
    return {m.name: public_url(m.url) for m in models if m.kind == "remote" and m.url}


class RemoteAnswerError(ValueError):
    """A non-200 answer; the message quotes the server's ``error`` (the field it refused)."""

    def __init__(self, status: int, data: bytes) -> None:
        try:
            detail = str(orjson.loads(data).get("error"))
        except (orjson.JSONDecodeError, AttributeError):
            detail = data[:200].decode("utf-8", "replace")
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class RemoteWatch:
    """Live mode's view of its remote members, bar by bar: an event when a member's server
    stops answering (the first failed request: the member abstains, weight 0) and when it
    answers again (after how many bars), so an outage shows in ``system_events`` while the
    run goes on, not only in the run's end-of-run summary (one ``ml.remote.<name>`` event per
    failed request)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}  # events of each member read so far
        self._down: dict[tuple[str, str], tuple[int, int]] = {}  # -> (first bar, bars down)

    def step(
        self, symbol: str, open_time: int, members: dict[str, Any], answered: dict[str, bool]
    ) -> list[tuple[str, str, str, dict[str, Any]]]:
        """``(severity, component, message, data)`` of the changes at this bar: ``members``
        the symbol's models by name (remote ones are watched), ``answered`` whether each
        gave a probability at this bar."""
        out = []
        for name, model in members.items():
            if not isinstance(model, RemoteModel):
                continue
            key = (symbol, name)
            new = model.events[self._seen.get(key, 0) :]
            self._seen[key] = len(model.events)
            data = {"symbol": symbol, "model": name, "endpoint": model.server, "bar": open_time}
            if new and key not in self._down:
                self._down[key] = (open_time, 1)
                reason = new[-1].get("reason", "failed")
                out.append(
                    (
                        "warning",
                        f"ml.remote.{name}",
                        f"{symbol}: model server {model.server} of {name} stopped answering at bar "
                        f"{open_time} ({reason}); {name} abstains (weight 0) until it answers",
                        {**data, "reason": reason, "state": "down"},
                    )
                )
            elif key in self._down:
                first, bars = self._down[key]
                if answered.get(name, False):
                    del self._down[key]
                    out.append(
                        (
                            "info",
                            f"ml.remote.{name}",
                            f"{symbol}: model server {model.server} of {name} answers again at bar "
                            f"{open_time}, after {bars} bar(s) without it",
                            {**data, "state": "up", "down_since": first, "bars_down": bars},
                        )
                    )
                else:
                    self._down[key] = (first, bars + 1)
        return out
