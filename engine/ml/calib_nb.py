"""One-input logistic fits by Newton's method as numba kernels, for calibration.

Imports only numpy and engine.kernels. :func:`platt_nb` is Platt scaling (the maximum-likelihood
slope and intercept of y on x; oracle: scikit-learn's unpenalized ``LogisticRegression``), and
:func:`shrink_nb` the one-parameter fit of ``sigmoid(lb + lam * x)`` with ``lam`` in [0, 1]
(how far a calibrator moves away from the base rate, :func:`engine.ml.ensemble.fit_shrink`).
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import kernel


@kernel
def _sig(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@kernel
def platt_nb(x: np.ndarray, y: np.ndarray, a0: float, c0: float, iters: int) -> tuple[float, float]:
    """Slope and intercept of the logistic regression of y (0/1) on x, from (a0, c0)."""
    a = a0
    c = c0
    n = x.shape[0]
    for _ in range(iters):
        ga = 0.0
        gc = 0.0
        haa = 0.0
        hac = 0.0
        hcc = 0.0
        for i in range(n):
            s = _sig(a * x[i] + c)
            r = y[i] - s
            w = s * (1.0 - s)
            ga += r * x[i]
            gc += r
            haa += w * x[i] * x[i]
            hac += w * x[i]
            hcc += w
        det = haa * hcc - hac * hac
        if not det > 1e-300:
            break
        da = (hcc * ga - hac * gc) / det
        dc = (haa * gc - hac * ga) / det
        a += da
        c += dc
        if abs(da) < 1e-10 and abs(dc) < 1e-10:
            break
    return a, c


@kernel
def shrink_nb(
    x: np.ndarray,
    y: np.ndarray,
    lb: float,
    iters: int,
    offset: np.ndarray | None = None,
    hi: float = 1.0,
) -> float:
    """``lam`` in [0, hi] maximising the log-likelihood of ``sigmoid(lb + offset + lam * x)``
    (``offset`` per row, optional)."""
    lam = 0.0
    n = x.shape[0]
    for _ in range(iters):
        g = 0.0
        h = 0.0
        for i in range(n):
            o = lb if offset is None else lb + offset[i]
            s = _sig(o + lam * x[i])
            g += (y[i] - s) * x[i]
            h += s * (1.0 - s) * x[i] * x[i]
        if not h > 1e-12:
            break
        step = g / h
        new = min(max(lam + step, 0.0), hi)
        done = abs(new - lam) < 1e-9
        lam = new
        if done:
            break
    return lam
