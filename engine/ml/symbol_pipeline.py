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
from engine.ml.inputs import SymbolData
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
    ) -> None:
        """Fit fold ``fold``'s calibrators and stacker on OOF rows known at its cutoff.

        ``order``: optional ``argsort`` of each column of ``raw`` (n, M); the isotonic fit then
        takes the OOF rows in that order instead of sorting them (same knots: equal p are
        pooled with the exact sum of their 0/1 labels).
        """
        lab = self.ml.labels
        known = self.sd.open_time + (lab.horizon + 1) * self.sd.interval_ms <= fold.cutoff
        oof = known & (fold_of >= 0) & (fold_of < fold.index)
        ens = self.ml.ensemble
        for j, name in enumerate(self.names):
            if order is not None and ens.calibration == "isotonic":
                sel = order[:, j][oof[order[:, j]]]
                cal_j = fit_calibrator(
                    ens.calibration,
                    raw[sel, j],
                    self.sd.y[sel],
                    min_rows=ens.min_calibration_rows,
                    presorted=True,
                )
            else:
                cal_j = fit_calibrator(
                    ens.calibration, raw[oof, j], self.sd.y[oof], min_rows=ens.min_calibration_rows
                )
            self.calibrators[(fold.index, name)] = cal_j
        if ens.fusion == "stacked":
            self.coefs[fold.index] = fit_stacker(
                cal[oof], self.sd.y[oof], min_rows=ens.min_calibration_rows
            )
        else:
            self.coefs[fold.index] = np.zeros(len(self.names) + 1)

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
