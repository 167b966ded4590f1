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
from engine.ml.calib_nb import platt_nb, pool_map_fit_nb, shrink_nb
from engine.ml.fusion_nb import (
    BAYESIAN,
    GATE_REASONS,
    STACKED,
    STACKED_LGBM,
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
    """A fitted probability map (``kind`` 'identity', 'isotonic' or 'platt'), shrunk toward
    the base rate: ``logit q = logit base + lam * (logit c(p) - logit base)``.

    ``lam`` in [0, 1] is how much of the map the out-of-fold evidence supports (0: the member
    forecasts the base rate, 1: the map as fitted); ``base`` NaN means no shrinking
    (``calibration: none``).
    """

    kind: str
    x: np.ndarray | None = None  # isotonic knots
    y: np.ndarray | None = None
    a: float = 1.0  # platt slope and intercept on the log-odds
    c: float = 0.0
    n: int = 0
    base: float = float("nan")
    lam: float = 1.0

    def mapped(self, p: np.ndarray) -> np.ndarray:
        """The map before shrinking."""
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

    def __call__(self, p: np.ndarray) -> np.ndarray:
        out = self.mapped(p)
        if not np.isfinite(self.base):
            return out
        return shrink(out, self.base, self.lam)


def shrink(q: np.ndarray, base: float, lam: float) -> np.ndarray:
    """``sigmoid(logit base + lam * (logit q - logit base))`` (NaN stays NaN)."""
    lb = float(_logit(np.array([base]))[0])
    z = lb + lam * (_logit(q) - lb)
    out = 1.0 / (1.0 + np.exp(-z))
    return np.where(np.isfinite(q), out, np.nan)


def fit_shrink(q: np.ndarray, y: np.ndarray, base: float, *, iters: int = 30) -> float:
    """The ``lam`` in [0, 1] maximising the log-likelihood of ``shrink(q, base, lam)`` on
    held-out rows (Newton's method on a one-parameter logistic model with an offset)."""
    lb = float(_logit(np.array([base]))[0])
    x = np.ascontiguousarray(_logit(q) - lb)
    return float(shrink_nb(x, np.ascontiguousarray(y, dtype=np.float64), lb, iters))


#: the pool map's bounds: slope a in [0, POOL_A_MAX], saturation v in [0, POOL_V_MAX]
POOL_A_MAX, POOL_V_MAX = 4.0, 1e4
IDENTITY_MAP = (1.0, 0.0)


def fit_pool_map(
    x: np.ndarray,
    lb: np.ndarray,
    y: np.ndarray,
    *,
    min_rows: int | None,
    start: tuple[float, float] = IDENTITY_MAP,
    iters: int = 100,
) -> tuple[float, float]:
    """The bayesian pool's map ``(a, v)`` (:func:`engine.ml.fusion_nb.pool_map_nb`) at a
    cutoff: the maximum-likelihood fit of ``sigmoid(lb + a * x / sqrt(1 + v * x^2))`` on
    out-of-fold bars, ``x`` the pool's log-odds over the base rate (``pool_x``) and ``lb``
    the logit of the base rate each bar was fused with. Only bars where the pool forecast
    something other than the base rate (``x != 0``) count; with fewer than ``min_rows`` of
    them (or ``min_rows`` None, or one class) the map is the identity ``(1, 0)``. ``start``:
    where the fit starts (the previous cutoff's map: the rows differ by one fold)."""
    ok = np.isfinite(x) & np.isfinite(lb) & np.isfinite(y) & (x != 0)
    if min_rows is None or int(ok.sum()) < min_rows or not _two_classes(y[ok]):
        return IDENTITY_MAP
    a, v = pool_map_fit_nb(
        np.ascontiguousarray(x[ok], dtype=np.float64),
        np.ascontiguousarray(lb[ok], dtype=np.float64),
        np.ascontiguousarray(y[ok], dtype=np.float64),
        float(start[0]),
        float(start[1]),
        POOL_A_MAX,
        POOL_V_MAX,
        iters,
    )
    return float(a), float(v)


def _fit_map(method: str, pp: np.ndarray, yy: np.ndarray, *, presorted: bool) -> Calibrator:
    if method == "isotonic":
        # equal p are pooled with the sum of their 0/1 labels (exact in any order), so the
        # faster unstable sort gives the same knots as a stable one
        order = slice(None) if presorted else np.argsort(pp)
        kx, ky = pava_nb(
            np.ascontiguousarray(pp[order]), np.ascontiguousarray(yy[order], dtype=np.float64)
        )
        return Calibrator("isotonic", x=kx, y=np.clip(ky, _CLIP, 1 - _CLIP), n=pp.shape[0])
    a, c = _platt(_logit(pp), yy)
    return Calibrator("platt", a=a, c=c, n=pp.shape[0])


def _platt(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood logistic regression of y on one input (slope, intercept), by
    Newton's method from the base rate (what scikit-learn's unpenalized fit converges to)."""
    yy = np.ascontiguousarray(y, dtype=np.float64)
    m = float(np.clip(yy.mean(), 1e-6, 1 - 1e-6))
    return platt_nb(np.ascontiguousarray(x), yy, 0.0, float(np.log(m / (1 - m))), 50)


def _two_classes(y: np.ndarray) -> bool:
    return bool(y.size) and float(y.min()) != float(y.max())


def fit_calibrator(
    method: str,
    p: np.ndarray,
    y: np.ndarray,
    *,
    min_rows: int,
    presorted: bool = False,
    base: float = float("nan"),
    newer: np.ndarray | None = None,
    sort: np.ndarray | None = None,
) -> Calibrator:
    """Fit a calibrator on out-of-fold ``p`` and labels ``y`` (NaNs ignored), shrunk toward
    ``base`` by as much as held-out evidence supports.

    ``newer``: a boolean mask over the rows, the newer half of them in time. The map is fitted
    on the older rows, ``lam`` (:func:`fit_shrink`) on how well it forecasts the newer ones
    (taken in the order given: time order, so batch and live sum alike); the calibrator is
    then the map fitted on all rows, shrunk by that ``lam``. With fewer than ``min_rows`` rows
    (or one class) the calibrator forecasts ``base`` (``lam = 0``); with ``base`` NaN, nothing
    is shrunk. ``presorted``: ``p`` is already in ascending order (NaNs anywhere), so the
    isotonic fit skips its sort; ``sort``: a permutation of the rows that puts ``p`` in
    ascending order (the same for the map fits; the knots are the same as from unsorted
    input).
    """
    ok = np.isfinite(p) & np.isfinite(y)
    n = int(ok.sum())
    if method == "none":
        return Calibrator("identity", n=n)
    if n < min_rows or not _two_classes(y[ok]):
        return Calibrator("identity", n=n, base=base, lam=0.0 if np.isfinite(base) else 1.0)
    if sort is not None:
        ps, ys, oks = p[sort], y[sort], ok[sort]
        presorted = True
    else:
        ps, ys, oks = p, y, ok
    full = _fit_map(method, ps[oks], ys[oks], presorted=presorted)
    if not np.isfinite(base) or newer is None:
        return full
    old_ok = ok & ~newer
    new_ok = ok & newer
    lam = 0.0
    if old_ok.sum() >= min_rows // 2 and new_ok.sum() >= min_rows // 2 and _two_classes(y[old_ok]):
        olds = old_ok[sort] if sort is not None else old_ok
        half = _fit_map(method, ps[olds], ys[olds], presorted=presorted)
        lam = fit_shrink(half.mapped(p[new_ok]), y[new_ok], base)
    return Calibrator(full.kind, x=full.x, y=full.y, a=full.a, c=full.c, n=n, base=base, lam=lam)


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
    a = roc_auc(yy, pp)  # Mann-Whitney count; oracle sklearn's roc_auc_score
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
    "expected_edge_bps",
    "base_weight",
    "pool_p",
    "pool_x",
)


def fusion_params(ens: EnsembleConfig, labels: LabelsConfig) -> FusionParams:
    method = {
        "bayesian": BAYESIAN,
        "weighted": WEIGHTED,
        "stacked": STACKED,
        "stacked_lgbm": STACKED_LGBM,
    }[ens.fusion]
    decay = 1.0 if ens.reliability_halflife is None else 0.5 ** (1.0 / ens.reliability_halflife)
    return FusionParams(
        method=method,
        horizon=labels.horizon,
        tau=(labels.cost_bps + labels.flat_band_bps) / 1e4,
        cost=labels.cost_bps / 1e4,
        drop_flat=labels.drop_flat,
        log_returns=labels.returns == "log",
        decay=float(decay),
        max_uncertainty=float(ens.gate.max_uncertainty),
        min_agreement=float(ens.gate.min_agreement),
        min_edge=float(ens.gate.min_edge),
        trade_cost=float(ens.trade_cost_bps if ens.trade_cost_bps is not None else labels.cost_bps)
        / 1e4,
        min_edge_bps=float(ens.gate.min_edge_bps),
        min_skill_n=float(ens.min_skill_labels),
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
        self.state = new_state(m, horizon=labels.horizon, lookback=ens.payoff_lookback)

    def run(self, closes: np.ndarray, probs: np.ndarray, aux: np.ndarray) -> dict[str, np.ndarray]:
        """A segment: ``aux`` (n, :func:`~engine.ml.fusion_nb.aux_width`) per bar
        ``[base, meta, a, v, c_0, c_1..c_M]``."""
        n, m = probs.shape
        out_f = np.empty((n, len(OUT_FLOAT)))
        out_i = np.empty((n, 2), dtype=np.int64)
        w_out = np.empty((n, m))
        fuse_batch_nb(
            self.state,
            self.params,
            np.ascontiguousarray(closes, dtype=np.float64),
            np.ascontiguousarray(probs, dtype=np.float64),
            self.fixed_w,
            np.ascontiguousarray(aux, dtype=np.float64),
            out_f,
            out_i,
            w_out,
        )
        res: dict[str, np.ndarray] = {k: out_f[:, j] for j, k in enumerate(OUT_FLOAT)}
        res["direction"] = out_i[:, 0].astype(np.int8)
        res["gate_code"] = out_i[:, 1].astype(np.int8)
        res["weights"] = w_out
        return res

    def step(self, close: float, probs: np.ndarray, aux: np.ndarray) -> dict[str, Any]:
        w_out = np.empty(len(self.model_names))
        r = fuse_step_nb(
            self.state,
            self.params,
            float(close),
            np.ascontiguousarray(probs, dtype=np.float64),
            self.fixed_w,
            np.ascontiguousarray(aux, dtype=np.float64),
            w_out,
        )
        k = len(OUT_FLOAT)
        out: dict[str, Any] = {name: float(r[j]) for j, name in enumerate(OUT_FLOAT)}
        out["direction"] = int(r[k])
        out["gate_code"] = int(r[k + 1])
        out["gate_reason"] = GATE_REASONS[int(r[k + 1])]
        out["weights"] = w_out
        return out
