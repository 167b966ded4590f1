"""LightGBM and XGBoost classifiers on the feature matrix (deterministic, fixed threads).

Saved in each library's own format: LightGBM model text (``model.txt``), XGBoost UBJSON
(``model.ubj``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.ml.models.base import Segment, TrainSet, masked_predict
from engine.ml.models.trees_nb import parse_lightgbm, parse_xgboost, predict_trees


def _predict(seg: Segment, trees: Any, threads: int, library: Any) -> np.ndarray:
    """P(up) of a segment's rows through the tree kernel (``trees``), or the library's own
    predict (``library(X)``) when the kernel does not cover the model (``trees`` False)."""
    if trees is False:
        return masked_predict(seg.X, library)
    return masked_predict(seg.X, lambda X: predict_trees(trees, X, threads=threads))


class LightGBMModel:
    """``lightgbm`` node: binary GBDT, ``deterministic=True``, ``force_col_wise``, fixed seed.

    Prediction goes through the numba tree kernel (:mod:`engine.ml.models.trees_nb`,
    bit-identical to ``Booster.predict``); a loaded model builds its LightGBM ``booster``
    only when asked for it (or for a model the kernel does not cover).
    """

    kind = "lightgbm"
    FILE = "model.txt"

    def __init__(self, params: dict[str, Any], *, threads: int = 1) -> None:
        self.params = dict(params)
        self.threads = threads
        self._booster: Any = None
        self._text: str | None = None  # the model text, when loaded and not parsed into a booster
        self._trees: Any = None  # trees_nb.Trees, False if not covered, None not parsed yet

    @property
    def booster(self) -> Any:
        """The ``lightgbm.Booster`` (built from the saved text on first use)."""
        if self._booster is None and self._text is not None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self._text)
        return self._booster

    def fit(self, train: TrainSet, *, seed: int, threads: int) -> LightGBMModel:
        import lightgbm as lgb

        p = self.params
        lgb_params = {
            "objective": "binary",
            "learning_rate": p["learning_rate"],
            "num_leaves": p["num_leaves"],
            "max_depth": p["max_depth"],
            "min_data_in_leaf": p["min_data_in_leaf"],
            "feature_fraction": p["feature_fraction"],
            "bagging_fraction": p["bagging_fraction"],
            "bagging_freq": p["bagging_freq"],
            "lambda_l1": p["lambda_l1"],
            "lambda_l2": p["lambda_l2"],
            "seed": seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": threads,
            "verbosity": -1,
        }
        ds = lgb.Dataset(
            np.ascontiguousarray(train.X, dtype=np.float64),
            label=train.y,
            params={"verbosity": -1, "num_threads": threads, "seed": seed},
            free_raw_data=True,
        )
        self._booster = lgb.train(lgb_params, ds, num_boost_round=p["n_estimators"])
        self._text = None
        self._trees = None
        self.threads = threads
        return self

    def _kernel(self) -> Any:
        if self._trees is None:
            text = self._text if self._text is not None else self.booster.model_to_string()
            self._trees = parse_lightgbm(text) or False
        return self._trees

    def predict_proba(self, seg: Segment) -> np.ndarray:
        return _predict(seg, self._kernel(), self.threads,
                        lambda X: self.booster.predict(X, num_threads=self.threads))

    def save(self, path: Path) -> None:
        if self._booster is None and self._text is not None:
            (path / self.FILE).write_text(self._text)
        else:
            self.booster.save_model(str(path / self.FILE))

    @classmethod
    def load(cls, path: Path, params: dict[str, Any], *, threads: int = 1) -> LightGBMModel:
        m = cls(params, threads=threads)
        m._text = (path / cls.FILE).read_text()
        return m


class XGBoostModel:
    """``xgboost`` node: ``binary:logistic``, ``tree_method=hist``, fixed ``seed``/``nthread``.

    A few rows (live mode's one) are predicted by the numba tree kernel
    (:mod:`engine.ml.models.trees_nb`, bit-identical to ``Booster.inplace_predict``, which
    costs about 1 ms for one row) unless the kernel does not cover the model; a batch by
    ``inplace_predict``, as fast there. Which one does not change a float.
    """

    kind = "xgboost"
    FILE = "model.ubj"
    #: segments this long or longer go to ``inplace_predict`` (same floats, see above)
    KERNEL_ROWS = 256

    def __init__(self, params: dict[str, Any], *, threads: int = 1) -> None:
        self.params = dict(params)
        self.threads = threads
        self.booster: Any = None
        self._trees: Any = None  # trees_nb.Trees, False if not covered, None not parsed yet

    def fit(self, train: TrainSet, *, seed: int, threads: int) -> XGBoostModel:
        import xgboost as xgb

        p = self.params
        xgb_params = {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "eta": p["learning_rate"],
            "max_depth": p["max_depth"],
            "min_child_weight": p["min_child_weight"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample_bytree"],
            "lambda": p["reg_lambda"],
            "alpha": p["reg_alpha"],
            "max_bin": p["max_bin"],
            "tree_method": "hist",
            "seed": seed,
            "nthread": threads,
            "verbosity": 0,
        }
        dtrain = xgb.DMatrix(
            np.ascontiguousarray(train.X, dtype=np.float64), label=train.y, nthread=threads
        )
        self.booster = xgb.train(xgb_params, dtrain, num_boost_round=p["n_estimators"])
        self.booster.set_param({"nthread": threads})
        self.threads = threads
        self._trees = None
        return self

    def predict_proba(self, seg: Segment) -> np.ndarray:
        if seg.X.shape[0] >= self.KERNEL_ROWS:  # as fast, and no model to parse (~15 ms)
            return _predict(seg, False, self.threads, self.booster.inplace_predict)
        if self._trees is None:
            self._trees = parse_xgboost(self.booster) or False
        return _predict(seg, self._trees, self.threads, self.booster.inplace_predict)

    def save(self, path: Path) -> None:
        self.booster.save_model(str(path / self.FILE))

    @classmethod
    def load(cls, path: Path, params: dict[str, Any], *, threads: int = 1) -> XGBoostModel:
        import xgboost as xgb

        m = cls(params, threads=threads)
        booster = xgb.Booster()
        booster.load_model(str(path / cls.FILE))
        booster.set_param({"nthread": threads})
        m.booster = booster
        return m
