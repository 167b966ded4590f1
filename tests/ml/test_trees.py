"""The numba tree kernels against their oracles, ``lightgbm.Booster.predict`` and
``xgboost.Booster.inplace_predict`` (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ml.models.base import Segment
from engine.ml.models.gbm import LightGBMModel
from engine.ml.models.trees_nb import parse_lightgbm, predict_trees


def _train(X: np.ndarray, y: np.ndarray, rounds: int = 40, **params: object):  # type: ignore[no-untyped-def]
    import lightgbm as lgb

    p = {
        "objective": "binary",
        "verbosity": -1,
        "num_threads": 1,
        "deterministic": True,
        "force_col_wise": True,
        "seed": 1,
        "num_leaves": 15,
        **params,
    }
    return lgb.train(p, lgb.Dataset(X, label=y), num_boost_round=rounds)


def test_equal_to_booster_on_real_features(small) -> None:  # type: ignore[no-untyped-def]
    _, feats = small
    X = feats.drop("open_time").to_numpy()
    ok = np.isfinite(X).all(axis=1)
    X = X[ok]
    y = (np.roll(X[:, 3], -3) > 0).astype(float)  # next log returns up (a learnable-ish label)
    half = X.shape[0] // 2
    booster = _train(X[:half], y[:half], rounds=80, min_data_in_leaf=20)
    trees = parse_lightgbm(booster.model_to_string())
    assert trees is not None and trees.depth.max() >= 3
    np.testing.assert_array_equal(predict_trees(trees, X), booster.predict(X))
    big = np.tile(X, (max(1, 10_000 // X.shape[0] + 1), 1))  # enough rows for 2 threads
    np.testing.assert_array_equal(predict_trees(trees, big, threads=2), booster.predict(big))


@pytest.mark.parametrize("sigmoid", [1.0, 0.7])
def test_equal_with_zeros_tiny_values_single_leaf_trees_and_nan_training(sigmoid: float) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4000, 6))
    X[::4, 1] = 0.0
    X[::9, 2] = np.nan  # trained with NaNs: missing type NaN on those splits
    X[::5, 3] = rng.choice([1e-36, -1e-36, 1e-34, -5e-40], size=X[::5, 3].shape[0])
    y = ((np.nan_to_num(X[:, 0]) + X[:, 1] + rng.normal(size=4000)) > 0).astype(float)
    booster = _train(X, y, rounds=60, sigmoid=sigmoid, min_data_in_leaf=30, learning_rate=0.3)
    trees = parse_lightgbm(booster.model_to_string())
    assert trees is not None
    Xt = rng.normal(size=(5000, 6))
    Xt[::3, 1] = 0.0
    Xt[::7, 3] = rng.choice([1e-36, -1e-35, 1e-35, 2e-35, -1e-34], size=Xt[::7, 3].shape[0])
    np.testing.assert_array_equal(predict_trees(trees, Xt), booster.predict(Xt))
    # a model whose trees are single leaves (nothing to split on)
    flat = _train(X[:, :1] * 0.0, y, rounds=5)
    t1 = parse_lightgbm(flat.model_to_string())
    assert t1 is not None and int(t1.depth.max()) == 0
    np.testing.assert_array_equal(predict_trees(t1, Xt[:, :1]), flat.predict(Xt[:, :1]))


def test_uncovered_models_fall_back_to_the_booster(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(6)
    X = rng.normal(size=(3000, 4))
    X[::3, 0] = 0.0
    y = (X[:, 0] + rng.normal(size=3000) > 0).astype(float)
    booster = _train(X, y, zero_as_missing=True)
    assert parse_lightgbm(booster.model_to_string()) is None  # zero-as-missing splits
    booster.save_model(str(tmp_path / LightGBMModel.FILE))
    m = LightGBMModel.load(tmp_path, {}, threads=1)
    seg = Segment(np.arange(3000, dtype=np.int64), np.ones(3000), X)
    np.testing.assert_array_equal(m.predict_proba(seg), booster.predict(X))


def test_loaded_model_predicts_through_the_kernel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 5))
    y = (X[:, 0] - X[:, 4] + rng.normal(size=3000) > 0).astype(float)
    booster = _train(X, y)
    booster.save_model(str(tmp_path / LightGBMModel.FILE))
    m = LightGBMModel.load(tmp_path, {}, threads=1)
    Xt = rng.normal(size=(1000, 5))
    Xt[5, 2] = np.nan  # abstains
    seg = Segment(np.arange(1000, dtype=np.int64), np.ones(1000), Xt)
    got = m.predict_proba(seg)
    assert m._booster is None  # the kernel did it, no booster was built
    assert np.isnan(got[5])
    ok = np.isfinite(Xt).all(axis=1)
    np.testing.assert_array_equal(got[ok], booster.predict(Xt[ok]))
    # one row at a time (the live path) equals the batch
    one = np.array([m.predict_proba(seg.rows(slice(i, i + 1)))[0] for i in range(50)])
    np.testing.assert_array_equal(one, got[:50])


def _xgb(X: np.ndarray, y: np.ndarray, **params: object):  # type: ignore[no-untyped-def]
    import xgboost as xgb

    p = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 4, "eta": 0.1,
         "seed": 1, "nthread": 1, "verbosity": 0, **params}
    return xgb.train(p, xgb.DMatrix(X, label=y, nthread=1), num_boost_round=60)


def test_xgboost_equal_to_inplace_predict_on_real_features_and_split_points(small) -> None:  # type: ignore[no-untyped-def]
    from engine.ml.models.trees_nb import parse_xgboost

    _, feats = small
    X = feats.drop("open_time").to_numpy()
    X = X[np.isfinite(X).all(axis=1)]
    y = (np.roll(X[:, 3], -3) > 0).astype(float)
    half = X.shape[0] // 2
    booster = _xgb(X[:half], y[:half])
    trees = parse_xgboost(booster)
    assert trees is not None and trees.xgboost and trees.depth.max() == 4
    np.testing.assert_array_equal(predict_trees(trees, X), booster.inplace_predict(X))
    # values on, just below and just above every split condition (float32 ties)
    cond = np.nextafter(trees.threshold[np.isfinite(trees.threshold)], np.float32(np.inf))
    rng = np.random.default_rng(3)
    at = cond[rng.integers(0, cond.shape[0], (3000, X.shape[1]))].astype(np.float64)
    for Xt in (at, np.nextafter(at, -np.inf), np.nextafter(at, np.inf)):
        np.testing.assert_array_equal(predict_trees(trees, Xt), booster.inplace_predict(Xt))
    big = np.tile(X, (max(1, 10_000 // X.shape[0] + 1), 1))
    np.testing.assert_array_equal(predict_trees(trees, big, threads=2), booster.inplace_predict(big))


def test_xgboost_model_predicts_through_the_kernel_and_falls_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from engine.ml.models.gbm import XGBoostModel
    from engine.ml.models.trees_nb import parse_xgboost

    rng = np.random.default_rng(8)
    X = rng.normal(size=(3000, 5))
    y = (X[:, 0] - X[:, 4] + rng.normal(size=3000) > 0).astype(float)
    _xgb(X, y, base_score=0.3).save_model(str(tmp_path / XGBoostModel.FILE))
    m = XGBoostModel.load(tmp_path, {}, threads=1)
    Xt = rng.normal(size=(1000, 5))
    Xt[5, 2] = np.nan  # abstains
    seg = Segment(np.arange(1000, dtype=np.int64), np.ones(1000), Xt)
    got = m.predict_proba(seg)  # a batch: the library's inplace_predict
    assert m._trees is None and np.isnan(got[5])
    ok = np.isfinite(Xt).all(axis=1)
    np.testing.assert_array_equal(got[ok], m.booster.inplace_predict(Xt[ok]))
    # one row at a time (the live path): the kernel, the same floats
    one = np.array([m.predict_proba(seg.rows(slice(i, i + 1)))[0] for i in range(50)])
    assert m._trees is not None and m._trees is not False and m._trees.xgboost
    np.testing.assert_array_equal(one, got[:50])
    small = m.predict_proba(seg.rows(slice(0, XGBoostModel.KERNEL_ROWS - 1)))
    np.testing.assert_array_equal(small, got[: XGBoostModel.KERNEL_ROWS - 1])
    # another objective is not covered: the library predicts
    other = _xgb(X, X[:, 0] * 2.0, objective="reg:squarederror")
    assert parse_xgboost(other) is None
