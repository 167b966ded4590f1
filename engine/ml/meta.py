"""The ``stacked_lgbm`` meta-learner: a small LightGBM on the members' out-of-fold calibrated
probabilities and the strategy's regime features (``ensemble.regime_features``).

At fold k's cutoff it is trained on the rows the calibrators of fold k see (bars of folds
``< k`` whose label is known at the cutoff: purged), minus the bars that close within
``training.embargo`` of the cutoff (embargoed), every ``training.row_stride``-th bar. Each
row's member probabilities are the ones that bar really got (its own fold's models and
calibrators), so the meta-learner learns from out-of-fold forecasts only. The newest
``meta.holdout`` share of those rows is held out in two halves: the older picks the number of
trees (early stopping on log loss, up to ``meta.n_estimators``; none when the held-out loss
never drops below the pool's), the newest the scale ``lam`` in [0, 1] of the correction (the
calibrators' rule, :func:`engine.ml.calib_nb.shrink_nb` with the pool as offset); then the
model is refitted on all rows with that many trees and its correction scaled by ``lam``. The boosting starts from each row's
bayesian pool (``init_score`` = the pool's log-odds at that bar), so the trees learn a
correction of the pool from the members' probabilities and the regime, and a meta-learner
that finds nothing leaves the pool as it is. Out of sample the fusion kernel applies the
correction only while its matured log-score gain over the pool is positive
(:mod:`engine.ml.fusion_nb`, ``meta_skill``).

Fitted models are saved like the members' versions, ``results/models/meta-<hash>/model.txt``
(the hash covers the meta config and the training matrix and labels), and predictions come
from the saved text through the numba tree kernel, so a reuse, a fresh fit and live mode's one
row agree bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.ml.calib_nb import shrink_nb
from engine.strategy.ml_config import MetaConfig

MIN_META_ROWS = 2000


def meta_matrix(cal: np.ndarray, regime: np.ndarray) -> np.ndarray:
    """The meta-learner's inputs: members' calibrated P(up) (NaN = abstain) and regime."""
    return np.ascontiguousarray(np.hstack([cal, regime]), dtype=np.float64)


def _digest(cfg: MetaConfig, X: np.ndarray, y: np.ndarray, seed: int) -> str:
    h = hashlib.sha256()
    h.update(b"meta-v3")  # the folder format (model.txt + scale.txt)
    h.update(cfg.model_dump_json().encode())
    h.update(str(seed).encode())
    h.update(str(X.shape).encode())
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()[:16]


def _params(cfg: MetaConfig, seed: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "lambda_l2": cfg.lambda_l2,
        "feature_fraction": 1.0,
        "bagging_fraction": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    }


def _fit_text(
    cfg: MetaConfig, X: np.ndarray, y: np.ndarray, offset: np.ndarray, seed: int
) -> tuple[str | None, float]:
    """The model text (None when no tree helps) and the scale of its correction.

    The rows (in time order) are split into the oldest part, which trains, and two held-out
    parts of ``holdout / 2`` each: the older picks the number of trees (early stopping), the
    newest the scale of the correction (:func:`engine.ml.calib_nb.shrink_nb` with the pool as
    offset), each judged on rows the choice before it did not see. The final model is fitted
    on all rows with that many trees."""
    import lightgbm as lgb

    params = _params(cfg, seed)
    n = X.shape[0]
    c1 = int(n * (1.0 - cfg.holdout))
    c2 = int(n * (1.0 - cfg.holdout / 2))
    quiet = {"verbosity": -1}
    tr = lgb.Dataset(X[:c1], label=y[:c1], init_score=offset[:c1], params=quiet)
    va = lgb.Dataset(X[c1:c2], label=y[c1:c2], init_score=offset[c1:c2], reference=tr, params=quiet)
    rec: dict[str, Any] = {}
    booster = lgb.train(
        {**params, "metric": "binary_logloss"},
        tr,
        num_boost_round=cfg.n_estimators,
        valid_sets=[va],
        valid_names=["holdout"],
        callbacks=[lgb.record_evaluation(rec)],
    )
    curve = np.asarray(rec["holdout"]["binary_logloss"])
    yv, zv = y[c1:c2], offset[c1:c2]
    pv = 1.0 / (1.0 + np.exp(-zv))
    pool_ll = float(-np.mean(yv * np.log(pv) + (1 - yv) * np.log(1 - pv)))
    best = int(np.argmin(curve))
    if not curve[best] < pool_ll:
        return None, 0.0
    mv = booster.predict(X[c2:], raw_score=True, num_iteration=best + 1)
    ys, zs = np.ascontiguousarray(y[c2:]), np.ascontiguousarray(offset[c2:])
    scale = float(shrink_nb(np.ascontiguousarray(mv), ys, 0.0, 30, zs))
    if not scale > 0:
        return None, 0.0
    full = lgb.Dataset(X, label=y, init_score=offset, params=quiet)
    final = lgb.train(params, full, num_boost_round=best + 1)
    return str(final.model_to_string()), scale


def fit_or_load(
    cfg: MetaConfig,
    X: np.ndarray,
    y: np.ndarray,
    offset: np.ndarray,
    *,
    seed: int,
    models_dir: Path,
) -> Any:
    """The fold's meta-learner (a loaded :class:`LightGBMModel`), or None (too few rows, one
    class, or no tree that beats the bayesian pool on the held-out rows: the fusion then uses
    the pool). ``offset``: the rows' bayesian pool log-odds, the boosting's starting score."""
    from engine.ml.models.gbm import LightGBMModel

    if X.shape[0] < MIN_META_ROWS or float(y.min()) == float(y.max()):
        return None
    folder = models_dir / f"meta-{_digest(cfg, np.hstack([X, offset[:, None]]), y, seed)}"
    if not folder.exists():
        text, scale = _fit_text(cfg, X, y, offset, seed)
        tmp = Path(tempfile.mkdtemp(prefix=".meta-", dir=models_dir))
        (tmp / LightGBMModel.FILE).write_text(text if text is not None else "")
        (tmp / "scale.txt").write_text(repr(scale))
        try:
            os.replace(tmp, folder)
        except OSError:  # saved meanwhile by another run: keep theirs
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    text = (folder / LightGBMModel.FILE).read_text()
    if not text:
        return None
    model = LightGBMModel.load(folder, {}, threads=1)
    model.meta_scale = float((folder / "scale.txt").read_text())  # type: ignore[attr-defined]
    return model


def margin(model: Any, X: np.ndarray) -> np.ndarray:
    """The meta-learner's log-odds correction of each row (NaN where an input is missing)."""
    from engine.ml.models.base import Segment

    n = X.shape[0]
    p = model.predict_proba(Segment(np.zeros(n, dtype=np.int64), np.zeros(n), X))
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return float(model.meta_scale) * np.log(q / (1.0 - q))
