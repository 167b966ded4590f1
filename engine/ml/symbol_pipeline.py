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

from engine.ml.ensemble import Calibrator, FusionRunner, fit_calibrator, fit_stacker
from engine.ml.folds import FitPlan, FoldRows, fold_rows, plan_fold
from engine.ml.inputs import REGIME, SymbolData
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


class SymbolPipeline:
    """The ML stage for one symbol: plans, fits, predicts, calibrates and fuses per fold.

    :meth:`plan` decides each (fold, model)'s version (the fits run in the caller's
    executor), :meth:`predict_fold` gives raw P(up) from the saved models, :meth:`calibrate`
    fits a fold's calibrators and stacker at its cutoff; ``runner`` is the fusion kernel's
    state once the batch run has folded it (live mode steps it on).
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
        known at its cutoff (calibrators and meta-learners: out-of-fold rows only).

        The base rate is the share of up-labels among every bar whose label is known at the
        cutoff. Each calibrator is shrunk toward it by :func:`fit_calibrator` (the map fitted
        on the older half of the OOF rows, judged on the newer half). ``order``: optional
        ``argsort`` of each column of ``raw`` (n, M); the isotonic fit then takes the OOF rows
        in that order instead of sorting them (same knots: equal p are pooled with the exact
        sum of their 0/1 labels). ``pool``: the bayesian pool's P(up) of every bar so far (the
        fusion kernel's ``pool_p``; the stacked meta-learner's offset).
        """
        lab = self.ml.labels
        sd = self.sd
        known = sd.open_time + (lab.horizon + 1) * sd.interval_ms <= fold.cutoff
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
        probabilities and regime features): ``[base, meta, kappa, c_0, c_1..c_M]``. The batch run
        passes a fold's bars, live mode its one bar."""
        n = cal_rows.shape[0]
        out = np.empty((n, len(self.names) + 4))
        out[:, 0] = self.bases[k]
        out[:, 1] = np.nan
        out[:, 2] = 1.0  # the pool's scale: not refitted (a scale fitted on OOF bars did worse)
        out[:, 3:] = self.coefs[k]
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
