"""What every model node shares: its inputs (:class:`Segment`, :class:`TrainSet`) and contract.

A model maps a :class:`Segment` (a run of closed bars: open times, closes and the feature
matrix in the node's feature order) to P(up) per bar, NaN where it abstains. Batch
prediction over a fold's segment and single-bar live prediction are the same call: a single
bar is a 1-row segment. Trained kinds also ``fit(TrainSet, seed=, threads=)`` and
``save(dir)`` / ``load(dir)`` in their library's own format; after a fit the engine always
predicts from the saved-and-reloaded model, so a fresh fit and a reused version give
bit-identical predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Segment:
    """Bars to predict: ``open_time`` (int64 ms), ``close`` and ``X`` (n, n_features)."""

    open_time: np.ndarray
    close: np.ndarray
    X: np.ndarray

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def rows(self, sl: slice | np.ndarray) -> Segment:
        return Segment(self.open_time[sl], self.close[sl], self.X[sl])


@dataclass(frozen=True)
class TrainSet:
    """One fold's training data.

    ``X``/``y`` are the purged, embargoed, finite training rows (y in {0, 1}). Prophet uses
    ``hourly_time``/``hourly_close`` (hour close times in ms and closes up to the cutoff) and
    forecasts ``forecast_times`` (ms, the horizon-end times of the fold's bars). ``tau`` is the
    label threshold (costs + flat band, as a log return), so a forecast can be turned into the
    probability of the label's class.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...] = ()
    hourly_time: np.ndarray | None = None
    hourly_close: np.ndarray | None = None
    forecast_times: np.ndarray | None = None
    tau: float = 0.0
    drop_flat: bool = True
    horizon: int = 1
    interval_ms: int = 300_000
    info: dict[str, Any] = field(default_factory=dict)


class Model(Protocol):
    kind: str

    def predict_proba(self, seg: Segment) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...


def finite_rows(X: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose features are all finite (others abstain)."""
    if X.shape[1] == 0:
        return np.ones(X.shape[0], dtype=bool)
    return np.isfinite(X).all(axis=1)


def masked_predict(X: np.ndarray, fn: Any) -> np.ndarray:
    """Apply ``fn`` to the finite rows of ``X``; NaN (abstain) elsewhere."""
    out = np.full(X.shape[0], np.nan)
    ok = finite_rows(X)
    if ok.any():
        out[ok] = np.asarray(
            fn(np.ascontiguousarray(X[ok], dtype=np.float64)), dtype=np.float64
        ).ravel()
    return out


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
