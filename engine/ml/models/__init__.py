"""Model nodes: each gives P(up) per bar (NaN = abstain). See :mod:`engine.ml.models.base`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.ml.models.base import Model, Segment, TrainSet

TRAINED_KINDS = ("lightgbm", "xgboost", "prophet", "mlp")


def new_model(kind: str, params: dict[str, Any]) -> Any:
    """An untrained model of a trained kind."""
    if kind == "lightgbm":
        from engine.ml.models.gbm import LightGBMModel

        return LightGBMModel(params)
    if kind == "xgboost":
        from engine.ml.models.gbm import XGBoostModel

        return XGBoostModel(params)
    if kind == "mlp":
        from engine.ml.models.mlp import MLPModel

        return MLPModel(params)
    if kind == "prophet":
        from engine.ml.models.prophet_model import ProphetModel

        return ProphetModel(params)
    raise ValueError(f"{kind!r} is not a trained model kind (use one of {TRAINED_KINDS})")


def load_model(kind: str, path: Path, params: dict[str, Any], *, threads: int = 1) -> Any:
    """Load a saved model of a trained kind from its version directory."""
    if kind == "lightgbm":
        from engine.ml.models.gbm import LightGBMModel

        return LightGBMModel.load(path, params, threads=threads)
    if kind == "xgboost":
        from engine.ml.models.gbm import XGBoostModel

        return XGBoostModel.load(path, params, threads=threads)
    if kind == "mlp":
        from engine.ml.models.mlp import MLPModel

        return MLPModel.load(path, params, threads=threads)
    if kind == "prophet":
        from engine.ml.models.prophet_model import ProphetModel

        return ProphetModel.load(path, params, threads=threads)
    raise ValueError(f"{kind!r} is not a trained model kind (use one of {TRAINED_KINDS})")


__all__ = ["Model", "Segment", "TrainSet", "TRAINED_KINDS", "new_model", "load_model"]
