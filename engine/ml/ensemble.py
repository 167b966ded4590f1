"""Calibration, the stacking meta-learner, fold metrics, and the fusion runner.

Calibration maps a model's raw P(up) to a calibrated one. It is fitted at each fold's cutoff
``C_k`` on OUT-OF-FOLD predictions only: the raw predictions that folds ``j < k`` made for
their own bars, restricted to bars whose label was known at ``C_k`` (label time
``open_time + (h + 1) * I <= C_k``). With fewer than ``ensemble.min_calibration_rows`` such
rows (always so in fold 0) the map is the identity. ``isotonic``: scikit-learn
``IsotonicRegression``'s fit, computed by the numba PAVA in :mod:`engine.ml.isotonic_nb`
(clipped to [1e-4, 1 - 1e-4]); ``platt``: logistic regression on the
raw log-odds. The ``stacked`` meta-learner is a logistic regression on the calibrated
out-of-fold log-odds, fitted at each cutoff on the same rows (an abstaining model enters as
p = 1/2); before enough rows exist it is the mean of log-odds.

The per-bar fusion itself is the numba step kernel in :mod:`engine.ml.fusion_nb`;
:class:`FusionRunner` wraps it for batch (a whole segment) and live (one bar) use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.metrics import roc_auc
from engine.ml.fusion_nb import (
    BAYESIAN,
    GATE_REASONS,
    STACKED,
    WEIGHTED,
    FusionParams,
    fuse_batch_nb,
    fuse_step_nb,
    new_state,
)
from engine.ml.isotonic_nb import pava_nb
from engine.strategy.ml_config import EnsembleConfig, LabelsConfig

_CLIP = 1e-4


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


@dataclass(frozen=True)
class Calibrator:
    """A fitted probability map (``kind`` 'identity', 'isotonic' or 'platt')."""

    kind: str
    x: np.ndarray | None = None  # isotonic knots
    y: np.ndarray | None = None
    a: float = 1.0  # platt slope and intercept on the log-odds
    c: float = 0.0
    n: int = 0

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        out = np.full(p.shape, np.nan)
        ok = np.isfinite(p)
        if self.kind == "identity":
            out[ok] = p[ok]
        elif self.kind == "isotonic":
            assert self.x is not None and self.y is not None
            out[ok] = np.clip(np.interp(p[ok], self.x, self.y), _CLIP, 1 - _CLIP)
        else:
            z = self.a * _logit(p[ok]) + self.c
            out[ok] = 1.0 / (1.0 + np.exp(-z))
        return out


def fit_calibrator(
    method: str, p: np.ndarray, y: np.ndarray, *, min_rows: int, presorted: bool = False
) -> Calibrator:
    """Fit a calibrator on out-of-fold ``p`` and labels ``y`` (NaNs ignored).

    ``presorted``: ``p`` is already in ascending order (NaNs anywhere), so the isotonic fit
    skips its sort; the knots are the same as from unsorted input.
    """
    ok = np.isfinite(p) & np.isfinite(y)
    n = int(ok.sum())
    if method == "none" or n < min_rows or np.unique(y[ok]).shape[0] < 2:
        return Calibrator("identity", n=n)
    pp, yy = p[ok], y[ok]
    if method == "isotonic":
        # equal p are pooled with the sum of their 0/1 labels (exact in any order), so the
        # faster unstable sort gives the same knots as a stable one
        order = slice(None) if presorted else np.argsort(pp)
        kx, ky = pava_nb(
            np.ascontiguousarray(pp[order]), np.ascontiguousarray(yy[order], dtype=np.float64)
        )
        return Calibrator("isotonic", x=kx, y=np.clip(ky, _CLIP, 1 - _CLIP), n=n)
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=200)
    lr.fit(_logit(pp)[:, None], yy.astype(np.int64))
    return Calibrator("platt", a=float(lr.coef_[0, 0]), c=float(lr.intercept_[0]), n=n)


def fit_stacker(probs: np.ndarray, y: np.ndarray, *, min_rows: int) -> np.ndarray:
    """Meta-learner coefficients ``[c_0, c_1..c_M]`` on calibrated out-of-fold probs.

    Rows need a finite label and at least one finite model probability; abstentions enter as
    p = 1/2. With too few rows: ``[0, 1/M, ..., 1/M]`` (the mean of log-odds).
    """
    m = probs.shape[1]
    ok = np.isfinite(y) & np.isfinite(probs).any(axis=1)
    if int(ok.sum()) < min_rows or np.unique(y[ok]).shape[0] < 2:
        return np.concatenate([[0.0], np.full(m, 1.0 / m)])
    from sklearn.linear_model import LogisticRegression

    z = _logit(np.where(np.isfinite(probs[ok]), probs[ok], 0.5))
    lr = LogisticRegression(C=1.0, solver="lbfgs", max_iter=500)
    lr.fit(z, y[ok].astype(np.int64))
    return np.concatenate([lr.intercept_, lr.coef_[0]]).astype(np.float64)


# ----------------------------------------------------------------------------- metrics


def ece(p: np.ndarray, y: np.ndarray, *, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins of p."""
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    tot = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            tot += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(tot / p.shape[0])


def calibration_curve(p: np.ndarray, y: np.ndarray, *, bins: int = 10) -> list[dict[str, float]]:
    """Reliability diagram rows: bin, mean predicted p, observed frequency, count."""
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            rows.append(
                {
                    "bin": b,
                    "mean_p": float(p[sel].mean()),
                    "freq_up": float(y[sel].mean()),
                    "count": int(sel.sum()),
                }
            )
    return rows


def score(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUC, log loss, Brier score and ECE of probabilities vs labels (finite pairs only)."""
    ok = np.isfinite(p) & np.isfinite(y)
    n = int(ok.sum())
    nan = float("nan")
    if n == 0:
        return {"n": 0, "auc": nan, "log_loss": nan, "brier": nan, "ece": nan, "hit_rate": nan}
    pp, yy = p[ok], y[ok]
    q = np.clip(pp, 1e-12, 1 - 1e-12)
    a = roc_auc(yy, pp)  # rank formula; oracle sklearn's roc_auc_score
    auc = nan if a is None else float(a)
    return {
        "n": n,
        "auc": auc,
        "log_loss": float(-np.mean(yy * np.log(q) + (1 - yy) * np.log(1 - q))),
        "brier": float(np.mean((pp - yy) ** 2)),
        "ece": ece(pp, yy),
        "hit_rate": float(np.mean((pp > 0.5) == (yy > 0.5))),
    }


# ------------------------------------------------------------------------- fusion runner

OUT_FLOAT = (
    "p",
    "agreement",
    "disagreement",
    "entropy",
    "uncertainty",
    "payoff_ratio",
    "expected_value",
)


def fusion_params(ens: EnsembleConfig, labels: LabelsConfig) -> FusionParams:
    method = {"bayesian": BAYESIAN, "weighted": WEIGHTED, "stacked": STACKED}[ens.fusion]
    decay = 1.0 if ens.reliability_halflife is None else 0.5 ** (1.0 / ens.reliability_halflife)
    return FusionParams(
        method=method,
        horizon=labels.horizon,
        tau=(labels.cost_bps + labels.flat_band_bps) / 1e4,
        cost=labels.cost_bps / 1e4,
        drop_flat=labels.drop_flat,
        log_returns=labels.returns == "log",
        prior_a=float(ens.reliability_prior[0]),
        prior_b=float(ens.reliability_prior[1]),
        decay=float(decay),
        max_uncertainty=float(ens.gate.max_uncertainty),
        min_agreement=float(ens.gate.min_agreement),
        min_edge=float(ens.gate.min_edge),
    )


class FusionRunner:
    """Holds the fusion kernel's state for one symbol: ``run`` a segment or ``step`` one bar.

    Both go through :func:`engine.ml.fusion_nb.fuse_step_nb`; a segment is the fold of
    steps, so batch and live agree bar for bar.
    """

    def __init__(self, model_names: list[str], ens: EnsembleConfig, labels: LabelsConfig) -> None:
        self.model_names = list(model_names)
        self.params = fusion_params(ens, labels)
        m = len(model_names)
        w = ens.weights or {}
        self.fixed_w = np.array([float(w.get(n, 0.0 if ens.weights else 1.0)) for n in model_names])
        self.state = new_state(
            m, horizon=labels.horizon, lookback=ens.payoff_lookback, prior=ens.reliability_prior
        )

    def run(
        self, closes: np.ndarray, probs: np.ndarray, coefs: np.ndarray
    ) -> dict[str, np.ndarray]:
        n, m = probs.shape
        out_f = np.empty((n, 7))
        out_i = np.empty((n, 2), dtype=np.int64)
        w_out = np.empty((n, m))
        fuse_batch_nb(
            self.state,
            self.params,
            np.ascontiguousarray(closes, dtype=np.float64),
            np.ascontiguousarray(probs, dtype=np.float64),
            self.fixed_w,
            np.ascontiguousarray(coefs, dtype=np.float64),
            out_f,
            out_i,
            w_out,
        )
        res: dict[str, np.ndarray] = {k: out_f[:, j] for j, k in enumerate(OUT_FLOAT)}
        res["direction"] = out_i[:, 0].astype(np.int8)
        res["gate_code"] = out_i[:, 1].astype(np.int8)
        res["weights"] = w_out
        return res

    def step(self, close: float, probs: np.ndarray, coef: np.ndarray) -> dict[str, Any]:
        w_out = np.empty(len(self.model_names))
        r = fuse_step_nb(
            self.state,
            self.params,
            float(close),
            np.ascontiguousarray(probs, dtype=np.float64),
            self.fixed_w,
            np.ascontiguousarray(coef, dtype=np.float64),
            w_out,
        )
        out: dict[str, Any] = {k: float(r[j]) for j, k in enumerate(OUT_FLOAT)}
        out["direction"] = int(r[7])
        out["gate_code"] = int(r[8])
        out["gate_reason"] = GATE_REASONS[int(r[8])]
        out["weights"] = w_out
        return out
