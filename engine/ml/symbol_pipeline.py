"""The ML stage of one symbol: its fold plan, fits, predictions, calibrators and fusion.

:class:`SymbolPipeline` is shared by the batch run (:func:`engine.ml.pipeline.run_ensemble`
predicts every fold, then calibrates fold by fold) and live mode
(:class:`engine.ml.live.LiveEnsemble` rolls folds and predicts one bar at a time): the same
fold models, the same calibrators (fitted at each cutoff on out-of-fold rows) and the same
fusion kernel state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.ml.ensemble import (
    IDENTITY_MAP,
    Calibrator,
    FusionRunner,
    fit_calibrator,
    fit_pool_map,
    fit_stacker,
)
from engine.ml.folds import FitPlan, FoldRows, fold_rows, plan_fold
from engine.ml.fusion_nb import AUX_COEF, AUX_SAT, AUX_SLOPE, aux_width
from engine.ml.inputs import REGIME, SymbolData
from engine.ml.labels import label_known_at
from engine.ml.meta import fit_or_load, margin, meta_matrix
from engine.ml.models import load_model
from engine.ml.models.external import OnnxModel, RemoteModel
from engine.ml.walkforward import Fold, Schedule
from engine.strategy.ml_config import MLSections, ModelNode

#: threads for prediction: rows are predicted independently, so LightGBM's and XGBoost's
#: outputs do not depend on the thread count (training keeps ``training.threads``)
PREDICT_THREADS = min(2, os.cpu_count() or 1)


def _external_model(node: ModelNode, features: list[str], threads: int) -> Any:
    """An untrained model node: an ONNX file or a remote model server."""
    if node.kind == "onnx":
        assert node.path is not None
        return OnnxModel(Path(node.path), threads=threads)
    assert node.url is not None
    return RemoteModel(node.url, timeout_s=node.timeout_s, feature_names=features, name=node.name)


def pooled_map(
    k: int,
    members: list[SymbolPipeline],
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[float, float]:
    """Cutoff ``k``'s pool map, one for every symbol of the run: :func:`fit_pool_map` over
    the member symbols' :meth:`SymbolPipeline.pool_rows` (``parts``, in the run's symbol
    order) together, started from the previous cutoff's map. The map is a property of the
    fusion (how far the skill-weighted pool of calibrated members is from calibrated), so
    the symbols share its evidence."""
    if not members:
        return IDENTITY_MAP
    start = next((m.pool_maps[k - 1] for m in members if k - 1 in m.pool_maps), IDENTITY_MAP)
    x, lb, y = (np.concatenate([p[i] for p in parts]) for i in range(3))
    ens = members[0].ml.ensemble
    return fit_pool_map(x, lb, y, min_rows=ens.pool_map_min_rows, start=start)


class SymbolPipeline:
    """The ML stage for one symbol: plans, fits, predicts, calibrates and fuses per fold.

    :meth:`plan` decides each (fold, model)'s version (the fits run in the caller's
    executor), :meth:`predict_fold` gives raw P(up) from the saved models, :meth:`calibrate`
    fits a fold's calibrators and stacker at its cutoff (``pool_maps``: the run's pool map of
    each cutoff, :func:`pooled_map`); ``runner`` is the fusion kernel's state once the batch
    run has folded it (live mode steps it on).
    """

    def __init__(
        self,
        sd: SymbolData,
        feats: dict[str, list[str]],
        ml: MLSections,
        sched: Schedule,
        models_dir: Path,
    ) -> None:
        self.sd = sd
        self.feats = feats
        self.ml = ml
        self.sched = sched
        self.models_dir = models_dir
        self.names = [n.name for n in ml.models]
        self.plans: dict[tuple[int, str], FitPlan] = {}
        self.loaded: dict[str, Any] = {}
        self.external: dict[str, Any] = {}
        self.calibrators: dict[tuple[int, str], Calibrator] = {}
        self.coefs: dict[int, np.ndarray] = {}
        self.bases: dict[int, float] = {}
        self.metas: dict[int, Any] = {}
        self.pool_maps: dict[int, tuple[float, float]] = {}
        self.events: list[dict[str, Any]] = []
        self.runner: FusionRunner | None = None

    # -- training
    def plan(self, folds: list[Fold]) -> list[FitPlan]:
        out = []
        for fold in folds:
            shared: dict[int, FoldRows] = {}  # one FoldRows per distinct feature matrix
            for node in self.ml.models:
                if not node.trained:
                    continue
                rows = None
                if node.kind != "prophet":
                    X = self.sd.X[node.name]
                    if id(X) not in shared:
                        shared[id(X)] = fold_rows(self.sd, X, fold, self.sched, self.ml)
                    rows = shared[id(X)]
                plan = plan_fold(
                    self.sd,
                    node,
                    self.feats[node.name],
                    fold,
                    self.sched,
                    self.ml,
                    self.models_dir,
                    rows=rows,
                )
                if plan.version is None:
                    self.events.append(
                        {
                            "time": fold.cutoff,
                            "severity": "warning",
                            "component": f"ml.train.{node.name}",
                            "message": f"{self.sd.symbol} fold {fold.index}: {node.name} not trained "
                            f"({plan.reason}); it abstains until the next cutoff",
                            "model": node.name,
                            "fold": fold.index,
                        }
                    )
                self.plans[(fold.index, node.name)] = plan
                out.append(plan)
        return out

    def _model(self, node: ModelNode, fold: Fold) -> Any:
        if not node.trained:
            if node.name not in self.external:
                self.external[node.name] = _external_model(
                    node, self.feats[node.name], self.ml.training.threads
                )
            return self.external[node.name]
        plan = self.plans[(fold.index, node.name)]
        if plan.version is None:
            return None
        if plan.version not in self.loaded:
            self.loaded[plan.version] = load_model(
                node.kind,
                self.models_dir / plan.version,
                node.params,
                threads=max(self.ml.training.threads, PREDICT_THREADS),
            )
        return self.loaded[plan.version]

    def version(self, node: ModelNode, fold: Fold) -> str | None:
        if not node.trained:
            return self._model(node, fold).version
        return self.plans[(fold.index, node.name)].version

    # -- calibration at a cutoff (out-of-fold only)
    def calibrate(
        self,
        fold: Fold,
        raw: np.ndarray,
        cal: np.ndarray,
        fold_of: np.ndarray,
        order: np.ndarray | None = None,
        pool: np.ndarray | None = None,
    ) -> None:
        """Fit fold ``fold``'s base rate, calibrators, stacker and meta-learner on the rows
        known at its cutoff (all but the base rate: out-of-fold rows only). Its pool map is
        fitted over every symbol (:func:`pooled_map`) and kept in ``pool_maps`` by the caller
        before :meth:`aux`.

        The base rate is the share of up-labels among every bar whose label is known at the
        cutoff. Each calibrator is shrunk toward it by :func:`fit_calibrator` (the map fitted
        on the older half of the OOF rows, judged on the newer half). ``order``: optional
        ``argsort`` of each column of ``raw`` (n, M); the isotonic fit then takes the OOF rows
        in that order instead of sorting them (same knots: equal p are pooled with the exact
        sum of their 0/1 labels). ``pool``: the bayesian pool's P(up) of every bar so far (the
        fusion kernel's ``pool_p``; the stacked meta-learner's offset).
        """
        sd = self.sd
        known = self._known(sd.open_time, fold)
        yk = sd.y[known]
        yk = yk[np.isfinite(yk)]
        base = float(yk.mean()) if yk.size else 0.5
        base = min(max(base, 1e-3), 1 - 1e-3)
        self.bases[fold.index] = base
        oof = known & (fold_of >= 0) & (fold_of < fold.index)
        idx = np.flatnonzero(oof)
        split = int(idx[idx.shape[0] // 2]) if idx.size else 0
        ens = self.ml.ensemble
        newer = idx >= split
        for j, name in enumerate(self.names):
            sort = None
            if order is not None and ens.calibration == "isotonic":
                # this column's OOF rows in ascending p, as positions among ``idx``
                sort = np.searchsorted(idx, order[:, j][oof[order[:, j]]])
            self.calibrators[(fold.index, name)] = fit_calibrator(
                ens.calibration,
                raw[idx, j],
                sd.y[idx],
                min_rows=ens.min_calibration_rows,
                base=base,
                newer=newer,
                sort=sort,
            )
        if ens.fusion == "stacked":
            self.coefs[fold.index] = fit_stacker(
                cal[oof], sd.y[oof], min_rows=ens.min_calibration_rows
            )
        else:
            self.coefs[fold.index] = np.zeros(len(self.names) + 1)
        self.metas[fold.index] = None
        if ens.fusion == "stacked_lgbm":
            assert pool is not None
            self.metas[fold.index] = self._fit_meta(fold, oof, cal, pool)

    def _known(self, open_time: np.ndarray, fold: Fold) -> np.ndarray:
        """Which bars' labels are known at ``fold``'s cutoff (the close of bar t+h)."""
        h, step = self.ml.labels.horizon, self.sd.interval_ms
        return label_known_at(open_time, horizon=h, interval_ms=step) <= fold.cutoff

    def pool_rows(
        self,
        fold: Fold,
        open_time: np.ndarray,
        y: np.ndarray,
        fold_of: np.ndarray,
        pool_x: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This symbol's part of fold ``fold``'s pool map fit (:func:`pooled_map`): its
        out-of-fold bars whose label is known at the cutoff, as ``(x, lb, y)``: the pool's
        log-odds over the base rate (``pool_x``), the logit of the base rate each was fused
        with (its fold's), and the label. The folds before ``fold`` are calibrated."""
        idx = np.flatnonzero(self._known(open_time, fold) & (fold_of >= 0) & (fold_of < fold.index))
        bases = np.array([self.bases[f] for f in range(fold.index)])
        lbs = np.log(bases / (1.0 - bases))
        return pool_x[idx], lbs[fold_of[idx]], y[idx]

    def _fit_meta(self, fold: Fold, oof: np.ndarray, cal: np.ndarray, pool: np.ndarray) -> Any:
        """Fold ``fold``'s meta-learner (:mod:`engine.ml.meta`): OOF rows, embargoed, thinned."""
        sd, s = self.sd, self.sched
        stride = self.ml.training.row_stride
        # the OOF rows are bars of earlier folds: only the bars up to the last one are read
        end = int(np.flatnonzero(oof)[-1]) + 1 if oof.any() else 0
        t = sd.open_time[:end]
        ok = oof[:end] & (t <= fold.cutoff - s.embargo - s.interval_ms)
        ok &= ((t - s.run_start) // s.interval_ms) % stride == 0
        X = meta_matrix(cal[:end], sd.X[REGIME][:end])
        ok &= np.isfinite(X).all(axis=1) & np.isfinite(sd.y[:end]) & np.isfinite(pool[:end])
        rows = np.flatnonzero(ok)
        q = np.clip(pool[rows], 1e-6, 1 - 1e-6)
        return fit_or_load(
            self.ml.ensemble.meta,
            X[rows],
            sd.y[rows],
            np.log(q / (1.0 - q)),
            seed=self.ml.training.seed,
            models_dir=self.models_dir,
        )

    def aux(self, k: int, cal_rows: np.ndarray, regime_rows: np.ndarray) -> np.ndarray:
        """The fusion kernel's per-bar ``aux`` of bars of fold ``k`` (their calibrated member
        probabilities and regime features): ``[base, meta, a, v, c_0, c_1..c_M]``. The batch
        run passes a fold's bars, live mode its one bar."""
        n = cal_rows.shape[0]
        out = np.empty((n, aux_width(len(self.names))))  # every column set below
        out[:, 0] = self.bases[k]
        out[:, 1] = np.nan
        out[:, AUX_SLOPE], out[:, AUX_SAT] = self.pool_maps.get(k, IDENTITY_MAP)
        out[:, AUX_COEF:] = self.coefs[k]
        meta = self.metas.get(k)
        if meta is not None and n:
            out[:, 1] = margin(meta, meta_matrix(cal_rows, regime_rows))
        return out

    def predict_fold(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        """Raw P(up) of every model for the given bar indices of one fold: (len(rows), M)."""
        out = np.full((rows.shape[0], len(self.names)), np.nan)
        if rows.shape[0] == 0:
            return out
        for j, node in enumerate(self.ml.models):
            model = self._model(node, fold)
            if model is not None:
                out[:, j] = model.predict_proba(self.sd.segment(node.name, rows))
        return out
