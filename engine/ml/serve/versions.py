"""The model versions a server holds: loading one from disk and saving a retrained one.

A served version is a folder under ``results/models/`` written by a backtest (its
``meta.json`` names the kind, params, feature names and bar interval; the model is in its
library's format beside it) or an ONNX file (``.onnx``; its feature names and interval come
from the command line, since the file does not carry them). A retrained version is saved as
a sibling folder of the same layout through :func:`engine.ml.walkforward.fit_task` (a
temporary folder and a rename; an identical retrain reuses the folder).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, EngineError
from engine.features import FeatureStream
from engine.ml.models import TRAINED_KINDS, load_model
from engine.ml.models.base import TrainSet
from engine.ml.models.external import OnnxModel
from engine.ml.walkforward import FitTask, fit_task, library_version
from engine.timeutil import INTERVALS, interval_ms


@dataclass
class ServedModel:
    """One version: its id, kind, feature names (in the model's column order), base bar
    interval (None when unknown: candles cannot be turned into features), the model object
    and the folder new versions are saved in (None: not retrainable)."""

    version: str
    kind: str
    features: list[str]
    interval: str | None
    model: Any
    meta: dict[str, Any]
    models_dir: Path | None
    candle_problem: str | None = field(default=None)

    @property
    def needs_bars(self) -> bool:
        """Prophet predicts from each bar's open time and close, not from features."""
        return self.kind == "prophet"

    def feature_stream(self) -> FeatureStream:
        """A fresh :class:`FeatureStream` of this model's features (the engine's own)."""
        assert self.interval is not None
        return FeatureStream(self.features, interval=self.interval)


def interval_name(ms: int) -> str | None:
    """The Binance interval name of ``ms`` milliseconds (None if it is not one)."""
    return next((i for i in INTERVALS if interval_ms(i) == ms), None)


def _candle_problem(features: list[str], interval: str | None, kind: str) -> str | None:
    """Why candles cannot be turned into this model's features (None: they can)."""
    if kind == "prophet":
        return None
    if not features:
        return "the model's feature names are unknown (serve it with --features)"
    if interval is None:
        return "the model's bar interval is unknown (serve it with --interval)"
    try:
        FeatureStream(features, interval=interval)
    except EngineError as exc:
        return f"the model's features are not engine features ({exc.message})"
    return None


def load_served(
    path: Path, *, features: list[str] | None = None, interval: str | None = None
) -> ServedModel:
    """Load the version at ``path`` (a version folder or an ``.onnx`` file).

    ``features``/``interval`` override (or, for an ONNX file, supply) the feature names and
    the base bar interval. Raises ConfigError naming the path when it is neither.
    """
    path = Path(path)
    if interval is not None:
        interval_ms(interval)  # UsageError for an unknown interval name
    if path.is_file() and path.suffix == ".onnx":
        onnx = OnnxModel(path, threads=1)
        meta: dict[str, Any] = {"kind": "onnx", "version": onnx.version, "path": str(path)}
        return _served(onnx.version, "onnx", onnx, meta, features, interval, None)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(
            f"{path}: not a model version folder (no meta.json) nor an .onnx file",
            hint="pass a folder under results/models/ written by a backtest "
            "(e.g. results/models/lightgbm-...) or a classifier exported to .onnx",
        )
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind == "onnx":
        onnx = OnnxModel(path / "model.onnx", threads=1)
        return _served(
            meta.get("version", onnx.version), "onnx", onnx, meta, features, interval, None
        )
    if kind not in TRAINED_KINDS:
        raise ConfigError(
            f"{meta_path}: unknown model kind {kind!r}",
            hint=f"serve-model serves {', '.join(TRAINED_KINDS)} folders and .onnx files",
        )
    model = load_model(kind, path, meta["params"], threads=1)
    return _served(meta["version"], kind, model, meta, features, interval, path.parent)


def _served(
    version: str,
    kind: str,
    model: Any,
    meta: dict[str, Any],
    features: list[str] | None,
    interval: str | None,
    models_dir: Path | None,
) -> ServedModel:
    names = list(features) if features is not None else list(meta.get("features") or [])
    if interval is None and meta.get("interval_ms"):
        interval = interval_name(int(meta["interval_ms"]))
    n_in = getattr(model, "n_inputs", None)
    if kind == "onnx" and names and n_in is not None and n_in != len(names):
        raise ConfigError(
            f"{meta.get('path', version)}: the ONNX graph takes {n_in} inputs, "
            f"--features names {len(names)}",
            hint="list exactly the model's inputs, in order, with --features",
        )
    problem = _candle_problem(names, interval, kind)
    return ServedModel(version, kind, names, interval, model, meta, models_dir, problem)


def retrained_version(parent: ServedModel, train: TrainSet, digest: str) -> str:
    """``<kind>-<16 hex>`` of a retrain: what determines the fitted model (kind, params, seed,
    library, features, the training data's digest), not the parent's weights (a fit starts
    from scratch), so the same retrain gives the same version whichever version is current."""
    blob = json.dumps(
        {
            "kind": parent.kind,
            "params": parent.meta.get("params"),
            "seed": parent.meta.get("seed"),
            "library": library_version(parent.kind),
            "features": parent.features,
            "data": digest,
            "rows": int(train.y.shape[0]),
        },
        sort_keys=True,
    )
    return f"{parent.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def save_retrained(parent: ServedModel, train: TrainSet, digest: str) -> tuple[ServedModel, bool]:
    """Fit the parent's kind and params on ``train``, save the version folder beside the
    parent's and load it back (predictions always come from the saved model).

    Returns the new version and whether its folder was created (False: an identical retrain
    had saved it already).
    """
    assert parent.models_dir is not None
    version = retrained_version(parent, train, digest)
    folder = parent.models_dir / version
    created = not (folder / "meta.json").is_file()
    meta = {
        "symbol": parent.meta.get("symbol"),
        "model": parent.meta.get("model"),
        "features": parent.features,
        "interval_ms": parent.meta.get("interval_ms"),
        "library": library_version(parent.kind),
        "data_digest": digest,
        "parent": parent.version,
        "trained_by": "engine serve-model POST /retrain",
    }
    task = FitTask(
        version,
        parent.kind,
        dict(parent.meta["params"]),
        int(parent.meta.get("seed", 7)),
        1,
        train,
        str(parent.models_dir),
        meta,
    )
    fit_task(task)
    served = load_served(folder, features=parent.features, interval=parent.interval)
    return served, created
