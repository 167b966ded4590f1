"""What ``engine serve-model`` does with a request, apart from HTTP: the versions it holds,
predictions from feature rows or raw candles, retrains into new version folders.

Every method takes a validated body (:mod:`engine.ml.serve.bodies`) and raises
:class:`~engine.ml.serve.bodies.RequestError` naming the field when the body does not fit
the model (a row of the wrong width, labels that do not match the rows, candles out of
order or off the model's bar grid, an unknown version).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.ml.models.base import Segment, TrainSet, finite_rows
from engine.ml.serve.bodies import Candle, Inputs, PredictBody, RequestError, RetrainBody
from engine.ml.serve.versions import ServedModel, load_served, save_retrained
from engine.ml.walkforward import data_digest
from engine.timeutil import HOUR_MS, interval_ms

#: a retrain needs at least this many labelled rows with finite features
MIN_RETRAIN_ROWS = 20
#: Prophet needs two days of hourly closes (as in the walk-forward fit)
MIN_HOURLY_CLOSES = 48


@dataclass(frozen=True)
class Bars:
    """A request's bars as the model's inputs: open times, closes, features (model order)."""

    open_time: np.ndarray
    close: np.ndarray
    X: np.ndarray

    def segment(self) -> Segment:
        return Segment(self.open_time, self.close, self.X)


class ModelService:
    """The versions one server holds; the current one answers requests without a version.

    Examples
    --------
    >>> service = ModelService.from_path(Path("results/models/lightgbm-..."))  # doctest: +SKIP
    >>> service.predict(PredictBody(rows=[[0.1, 0.2, 0.3]]))  # doctest: +SKIP
    {'model_version': 'lightgbm-...', 'kind': 'lightgbm', 'probabilities': array([0.52])}
    """

    def __init__(self, first: ServedModel) -> None:
        self.versions: dict[str, ServedModel] = {first.version: first}
        self.current = first.version

    @classmethod
    def from_path(
        cls, path: Path, *, features: list[str] | None = None, interval: str | None = None
    ) -> ModelService:
        """A service for the version folder (or ``.onnx`` file) at ``path``."""
        return cls(load_served(path, features=features, interval=interval))

    def get(self, version: str | None) -> ServedModel:
        """The version asked for (the current one for None); 404 when unknown."""
        key = self.current if version is None else version
        served = self.versions.get(key)
        if served is None:
            raise RequestError.field(
                "version",
                f"unknown model version {key!r}; this server has {sorted(self.versions)}",
                status=404,
                kind="unknown_version",
            )
        return served

    def warm_up(self) -> None:
        """Compile what the first request would (the feature stream, the tree kernel)."""
        m = self.get(None)
        if m.candle_problem is None and not m.needs_bars:
            step = interval_ms(m.interval or "5m")
            m.feature_stream().update_values(step, 1.0, 1.0, 1.0, 1.0, 1.0)
        width = len(m.features) or int(getattr(m.model, "n_inputs", None) or 0)
        if width or m.needs_bars:
            m.model.predict_proba(Segment(np.zeros(1, np.int64), np.ones(1), np.zeros((1, width))))

    # ------------------------------------------------------------------ predict

    def predict(self, body: PredictBody) -> dict[str, Any]:
        """P(up) per row (or candle); NaN where the model abstains (missing features,
        candles before the features are warm, a bar outside Prophet's forecast)."""
        m = self.get(body.version)
        bars = bars_of(m, body)
        try:
            p = m.model.predict_proba(bars.segment())
        except ConfigError as exc:  # e.g. an ONNX graph whose width the rows do not match
            raise RequestError.field("rows", exc.message) from None
        out: dict[str, Any] = {"model_version": m.version, "kind": m.kind, "probabilities": p}
        if body.candles is not None:
            out["open_time"] = bars.open_time
        return out

    # ------------------------------------------------------------------ retrain

    def retrain(self, body: RetrainBody) -> dict[str, Any]:
        """Fit the current version's kind and params on the body's rows, save the new
        version folder, make it current and answer its id."""
        parent = self.get(None)
        if parent.models_dir is None or parent.kind == "onnx":
            raise RequestError.field(
                "body",
                f"a {parent.kind} model is trained outside the engine: it cannot be retrained here",
                status=409,
                kind="not_retrainable",
            )
        train, digest = (
            prophet_trainset(parent, body) if parent.needs_bars else feature_trainset(parent, body)
        )
        served, created = save_retrained(parent, train, digest)
        self.versions[served.version] = served
        self.current = served.version
        return {
            "ok": True,
            "model_version": served.version,
            "parent": parent.version,
            "created": created,
            "rows": int((train.y if train.hourly_time is None else train.hourly_time).shape[0]),
        }

    def health(self) -> dict[str, Any]:
        """The ``GET /health`` answer."""
        m = self.get(None)
        return {
            "status": "ok",
            "kind": m.kind,
            "model_version": m.version,
            "features": m.features,
            "interval": m.interval,
            "candles": m.candle_problem is None,
            "versions": sorted(self.versions),
        }


# ---------------------------------------------------------------------- inputs -> arrays


def bars_of(m: ServedModel, body: Inputs) -> Bars:
    """The body's rows or candles as the model's inputs (422 naming the field if they do
    not fit it)."""
    if body.candles is not None:
        return _from_candles(m, body.candles, body)
    n = len(body.rows) if body.rows is not None else len(body.open_time or [])
    ot = _column(body.open_time, "open_time", n, np.int64, 0)
    close = _column(body.close, "close", n, np.float64, np.nan)
    if m.needs_bars:
        if body.open_time is None or body.close is None:
            raise RequestError.field(
                "open_time" if body.open_time is None else "close",
                "a prophet model predicts from each bar's open_time and close: send both "
                "(one per row) or 'candles'",
            )
        return Bars(ot, close, np.empty((n, 0)))
    if body.rows is None:
        raise RequestError.field("rows", "this model takes feature rows (or 'candles')")
    return Bars(ot, close, _matrix(m, body.rows, body.features))


def _column(values: list[Any] | None, name: str, n: int, dtype: Any, fill: Any) -> np.ndarray:
    if values is None:
        return np.full(n, fill, dtype=dtype)
    if len(values) != n:
        raise RequestError.field(name, f"expected {n} values (one per row), got {len(values)}")
    return np.asarray(values, dtype=dtype)


def _matrix(m: ServedModel, rows: list[list[float | None]], names: list[str] | None) -> np.ndarray:
    """The rows as an (n, features) float matrix in the model's column order."""
    cols: list[int] | None = None
    if names is not None and names != m.features and m.features:
        where = {f: i for i, f in enumerate(names)}
        missing = [f for f in m.features if f not in where]
        if missing:
            raise RequestError.field(
                "features",
                f"lacks the model's feature {missing[0]!r}; the model takes {m.features}",
            )
        cols = [where[f] for f in m.features]
    width = len(names) if names is not None else len(m.features)
    if not width:  # an ONNX file served without feature names: its input width, or the rows'
        width = int(getattr(m.model, "n_inputs", None) or (len(rows[0]) if rows else 0))
    for i, r in enumerate(rows):
        if len(r) != width:
            listed = f" ({', '.join(names or m.features)})" if (names or m.features) else ""
            raise RequestError.field(
                f"rows.{i}", f"expected {width} feature values{listed}, got {len(r)}"
            )
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    return np.ascontiguousarray(X[:, cols]) if cols is not None else X


def _from_candles(m: ServedModel, candles: list[Candle], body: Inputs) -> Bars:
    """Features of each candle through the engine's FeatureStream, from the first candle."""
    if m.candle_problem is not None:
        raise RequestError.field("candles", f"cannot compute features here: {m.candle_problem}")
    n = len(candles)
    ot = np.fromiter((c.open_time for c in candles), np.int64, n)
    close = np.fromiter((c.close for c in candles), np.float64, n)
    step = m.interval and interval_ms(m.interval)
    if step:
        off = np.flatnonzero(ot % step)
        if off.size:
            raise RequestError.field(
                f"candles.{off[0]}.open_time",
                f"{ot[off[0]]} is not on the model's {m.interval} bar grid",
            )
    back = np.flatnonzero(np.diff(ot) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise RequestError.field(
            f"candles.{i}.open_time",
            f"{ot[i]} does not follow the previous candle's {ot[i - 1]}: "
            "send closed bars once each, in time order",
        )
    if m.needs_bars:
        return Bars(ot, close, np.empty((n, 0)))
    stream = m.feature_stream()
    for f in body.funding or []:
        stream.add_funding(f.funding_time, f.funding_rate)
    X = np.empty((n, len(m.features)))
    for i, c in enumerate(candles):
        X[i] = stream.update_values(c.open_time, c.open, c.high, c.low, c.close, c.volume)
    return Bars(ot, close, X)


# ---------------------------------------------------------------------- retrain inputs


def feature_trainset(m: ServedModel, body: RetrainBody) -> tuple[TrainSet, str]:
    """The labelled rows with finite features (rows or candles) and their digest."""
    bars = bars_of(m, body)
    n = bars.X.shape[0]
    if body.labels is None or len(body.labels) != n:
        got = "none" if body.labels is None else str(len(body.labels))
        raise RequestError.field(
            "labels", f"expected one label (1 up, 0 down, null unknown) per row: {n}, got {got}"
        )
    y = np.array([np.nan if v is None else v for v in body.labels], dtype=np.float64)
    keep = finite_rows(bars.X) & np.isfinite(y)
    X, y = np.ascontiguousarray(bars.X[keep]), y[keep]
    if y.shape[0] < MIN_RETRAIN_ROWS or np.unique(y).size < 2:
        raise RequestError.field(
            "labels",
            f"{y.shape[0]} labelled rows with every feature known "
            f"({int(y.sum())} up); a retrain needs {MIN_RETRAIN_ROWS} and both classes",
        )
    return TrainSet(X, y, tuple(m.features)), data_digest(X, y)


def prophet_trainset(m: ServedModel, body: RetrainBody) -> tuple[TrainSet, str]:
    """Prophet's inputs from candles: the hourly closes, and the forecast of
    ``forecast_bars`` bars after the last candle (the parent's fold length by default)."""
    if body.candles is None:
        raise RequestError.field("candles", "a prophet model is retrained from candles")
    bars = bars_of(m, body)
    prophet = m.model
    step = int(prophet.interval_ms)
    hourly = (bars.open_time + step) % HOUR_MS == 0
    ht, hc = bars.open_time[hourly] + step, bars.close[hourly]
    if ht.shape[0] < MIN_HOURLY_CLOSES:
        raise RequestError.field(
            "candles",
            f"{ht.shape[0]} hourly closes in the candles; prophet needs {MIN_HOURLY_CLOSES}",
        )
    n_fc = body.forecast_bars or max(int(prophet.times.shape[0]), 1)
    cutoff = int(bars.open_time[-1]) + step
    ftimes = cutoff + np.arange(n_fc, dtype=np.int64) * step + (prophet.horizon + 1) * step
    train = TrainSet(
        np.empty((0, 0)),
        np.empty(0),
        (),
        ht,
        hc,
        ftimes,
        tau=prophet.tau,
        drop_flat=prophet.drop_flat,
        horizon=prophet.horizon,
        interval_ms=step,
    )
    return train, data_digest(ht, hc, ftimes)
