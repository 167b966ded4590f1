"""Helpers of the model-server tests: version folders of every kind, HTTP calls, metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from engine.ml.models import new_model
from engine.ml.models.base import TrainSet, write_json
from engine.strategy.ml_config import ModelNode

STEP = 300_000
HOUR = 3_600_000

#: small, fast params per trained kind
PARAMS = {
    "lightgbm": {"n_estimators": 10, "min_data_in_leaf": 10},
    "xgboost": {"n_estimators": 10, "max_depth": 3},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 20},
    "prophet": {"window": "10d", "n_changepoints": 3},
}


def make_version(
    root: Path, kind: str, train: TrainSet, *, features: list[str], version: str
) -> Path:
    """Fit ``kind`` on ``train`` and save it as the version folder ``root/version``."""
    params = ModelNode(kind=kind, params=PARAMS[kind]).params
    d = root / version
    d.mkdir(parents=True)
    new_model(kind, params).fit(train, seed=1, threads=1).save(d)
    write_json(
        d / "meta.json",
        {
            "kind": kind,
            "params": params,
            "features": features,
            "version": version,
            "seed": 1,
            "interval_ms": STEP,
        },
    )
    return d


def rsi_bb_atr_version(root: Path, version: str) -> Path:
    """A small LightGBM on made-up (rsi_14, bb_pct, atr_pct_14) rows (up when rsi_14 is high),
    saved as the version folder ``root/version``."""
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.uniform(0, 100, 500), rng.uniform(0, 1, 500), rng.uniform(0, 2, 500)])
    y = (X[:, 0] + rng.normal(0, 10, 500) > 50).astype(float)
    return make_version(
        root,
        "lightgbm",
        TrainSet(X, y),
        features=["rsi_14", "bb_pct", "atr_pct_14"],
        version=version,
    )


def prophet_trainset(open_time: np.ndarray, close: np.ndarray, n_forecast: int) -> TrainSet:
    """Prophet's inputs from 5m bars: the hourly closes and the next ``n_forecast`` bars."""
    hourly = (open_time + STEP) % HOUR == 0
    cutoff = int(open_time[-1]) + STEP
    ftimes = cutoff + np.arange(n_forecast, dtype=np.int64) * STEP + 7 * STEP
    return TrainSet(
        np.empty((0, 0)),
        np.empty(0),
        (),
        open_time[hourly] + STEP,
        close[hourly],
        ftimes,
        tau=0.001,
        horizon=6,
        interval_ms=STEP,
    )


def call(
    url: str, body: Any = None, *, raw: bytes | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """POST ``body`` as JSON (or ``raw`` bytes), or GET when both are None: (status, JSON)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if data is None else "POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` parsed by prometheus_client's own parser: {(sample, labels): value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def candle_dicts(candles: Any) -> list[dict[str, Any]]:
    """A polars candles frame as the JSON candles of a request."""
    cols = ("open_time", "open", "high", "low", "close", "volume")
    return [dict(zip(cols, r, strict=True)) for r in candles.select(cols).iter_rows()]


def labels_of(close: np.ndarray, horizon: int = 6) -> np.ndarray:
    """1 up / 0 down over ``horizon`` bars; NaN where not known yet (the last bars)."""
    y = np.full(close.shape[0], np.nan)
    y[:-horizon] = (close[horizon:] > close[:-horizon]).astype(float)
    return y


def onnx_file(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """A scikit-learn logistic regression exported to ONNX by skl2onnx."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=500).fit(X, y.astype(int))
    path.write_bytes(to_onnx(clf, X[:1].astype(np.float32)).SerializeToString())
    return path
