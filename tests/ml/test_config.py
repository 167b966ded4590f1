from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.errors import ConfigError
from engine.strategy.ml_config import EnsembleConfig, MLSections, ModelNode, TrainingConfig, span_ms


def test_spans():
    assert span_ms("30d", 300_000) == 30 * 86_400_000
    assert span_ms(12, 300_000) == 3_600_000
    assert TrainingConfig(train_window="12").train_window == 12
    with pytest.raises(ValidationError, match="duration"):
        TrainingConfig(train_window="30 days")
    with pytest.raises(ConfigError, match="whole number"):
        span_ms("7m", 300_000)
    with pytest.raises(ValidationError, match="> 0"):
        TrainingConfig(retrain_every="0d")


def test_params_validated_per_kind_with_suggestion():
    n = ModelNode(kind="lightgbm", params={"num_leaves": 7})
    assert n.name == "lightgbm" and n.params["num_leaves"] == 7 and n.params["n_estimators"] == 200
    with pytest.raises(ValidationError, match="did you mean 'num_leaves'"):
        ModelNode(kind="lightgbm", params={"num_leafs": 7})
    with pytest.raises(ValidationError, match="learning_rate"):
        ModelNode(kind="xgboost", params={"learning_rate": 0})
    with pytest.raises(ValidationError, match="needs 'path'"):
        ModelNode(kind="onnx")
    with pytest.raises(ValidationError, match="needs 'url'"):
        ModelNode(kind="remote")
    with pytest.raises(ValidationError, match="extra"):
        ModelNode(kind="mlp", color="red")


def test_sections_cross_checks():
    with pytest.raises(ValidationError, match="unique"):
        MLSections(models=[{"kind": "mlp"}, {"kind": "mlp"}])
    with pytest.raises(ValidationError, match="did you mean 'lgb'"):
        MLSections(
            models=[{"kind": "lightgbm", "name": "lgb"}],
            ensemble={"fusion": "weighted", "weights": {"lgbm": 1.0}},
        )
    with pytest.raises(ValidationError, match="needs 'weights'"):
        EnsembleConfig(fusion="weighted")
    cfg = MLSections(models=[{"kind": "lightgbm"}])
    with pytest.raises(ValidationError):
        cfg.labels.horizon = 3  # frozen
