"""``engine serve-model``: a trained model behind HTTP, the counterpart of the ``remote`` node.

The server holds model versions (:mod:`~engine.ml.serve.versions`): the one it was started
with (a version folder under ``results/models/`` or an ``.onnx`` file) and those its retrains
saved beside it; the newest is current. Endpoints (JSON in and out; aiohttp, one asyncio
loop, bound to 127.0.0.1 unless told otherwise):

* ``POST /predict`` ``{"rows": [[x, ...], ...]}`` (features in the model's order, or in the
  order ``"features": [names]`` gives; ``"open_time"``/``"close"`` per row for Prophet), or
  ``{"candles": [{"open_time", "open", "high", "low", "close", "volume"}, ...],
  "funding": [{"funding_time", "funding_rate"}]}`` (features computed by the engine's
  :class:`~engine.features.FeatureStream` from the first candle), optionally ``"version"``
  -> ``{"probabilities": [p | null, ...], "model_version", "kind"}`` (+ ``"open_time"`` of
  each candle);
* ``POST /retrain`` the same inputs plus ``"labels"`` (one 0/1/null per row or candle;
  Prophet: candles and ``"forecast_bars"``) -> fits the current version's kind and params,
  saves a new version folder beside it, makes it current and answers
  ``{"ok", "model_version", "parent", "created", "rows"}`` (201; 200 when an identical
  retrain had saved it);
* ``GET /health`` -> ``{"status": "ok", "kind", "model_version", "features", "interval",
  "candles", "versions"}``;
* ``GET /metrics`` -> Prometheus text (:class:`~engine.ml.serve.app.ServeMetrics`).

A body that does not fit gets a 422 naming each bad field (``{"error": "rows.0: expected 3
feature values (f0, f1, f2), got 2", "detail": [{"field", "message"}, ...]}``), an unknown
version a 404, an oversized body a 413, a retrain of an ONNX model a 409; the server serves
on after each.

Modules: ``bodies`` (pydantic request bodies, :class:`RequestError`), ``versions`` (loading
and saving versions), ``service`` (:class:`ModelService`: predict, retrain, health),
``app`` (aiohttp routes, metrics, :class:`ServerThread`).
"""

from __future__ import annotations

from engine.ml.serve.app import DEFAULT_MAX_BODY, ServeMetrics, ServerThread, make_app, start
from engine.ml.serve.bodies import PredictBody, RequestError, RetrainBody
from engine.ml.serve.service import ModelService

__all__ = [
    "DEFAULT_MAX_BODY",
    "ModelService",
    "PredictBody",
    "RequestError",
    "RetrainBody",
    "ServeMetrics",
    "ServerThread",
    "make_app",
    "start",
]
