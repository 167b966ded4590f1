"""Model nodes: each gives P(up) per bar (NaN = abstain). See :mod:`engine.ml.models.base`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.ml.models.base import Model, Segment, TrainSet
from engine.ml.models.gbm import LightGBMModel, XGBoostModel
from engine.ml.models.mlp import MLPModel
from engine.ml.models.prophet_model import ProphetModel

TRAINED_KINDS = ("lightgbm", "xgboost", "prophet", "mlp")

#: the model class of each trained kind (each imports its library only when it fits or loads)
_CLASSES: dict[str, Any] = {
    "lightgbm": LightGBMModel,
    "xgboost": XGBoostModel,
    "prophet": ProphetModel,
    "mlp": MLPModel,
}


def _model_class(kind: str) -> Any:
    if kind not in _CLASSES:
        raise ValueError(f"{kind!r} is not a trained model kind (use one of {TRAINED_KINDS})")
    return _CLASSES[kind]


def new_model(kind: str, params: dict[str, Any]) -> Any:
    """An untrained model of a trained kind."""
    return _model_class(kind)(params)


def load_model(kind: str, path: Path, params: dict[str, Any], *, threads: int = 1) -> Any:
    """Load a saved model of a trained kind from its version directory."""
    return _model_class(kind).load(path, params, threads=threads)


__all__ = ["Model", "Segment", "TrainSet", "TRAINED_KINDS", "new_model", "load_model"]
