"""One-input logistic fits by Newton's method as numba kernels, for calibration.

Imports only numpy and engine.kernels. :func:`platt_nb` is Platt scaling (the maximum-likelihood
slope and intercept of y on x; oracle: scikit-learn's unpenalized ``LogisticRegression``),
:func:`shrink_nb` the one-parameter fit of ``sigmoid(lb + lam * x)`` with ``lam`` in [0, 1]
(how far a calibrator moves away from the base rate, :func:`engine.ml.ensemble.fit_shrink`),
and :func:`pool_map_fit_nb` the two-parameter fit of ``sigmoid(lb + g(x))`` with ``g`` the
fusion kernel's :func:`~engine.ml.fusion_nb.pool_map_nb` (:func:`engine.ml.ensemble.fit_pool_map`;
oracle: scipy's L-BFGS-B, tests/ml/test_pool_map.py).
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


@kernel
def _pool_pass_nb(x: np.ndarray, lb: np.ndarray, y: np.ndarray, a: float, v: float):  # noqa: ANN202
    """One pass over the rows at ``(a, v)``: the summed log loss of
    ``sigmoid(lb + a * x / sqrt(1 + v * x^2))`` against ``y`` (the map of
    :func:`~engine.ml.fusion_nb.pool_map_nb`, formed here as ``a * dz/da`` to share its square
    root), its gradient ``(ga, gv)``, the Fisher information ``(faa, fav, fvv)`` and the rest
    of the Hessian ``(rav, rvv)`` (the residuals times the map's second derivatives; ``raa``
    is 0)."""
    f = 0.0
    ga = 0.0
    gv = 0.0
    faa = 0.0
    fav = 0.0
    fvv = 0.0
    rav = 0.0
    rvv = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        x2 = xi * xi
        rs = 1.0 / math.sqrt(1.0 + v * x2)  # 1 / sqrt(q)
        ja = xi * rs  # dz/da
        zav = -0.5 * x2 * ja * rs * rs  # d2z/da dv
        jv = a * zav  # dz/dv
        z = lb[i] + a * ja
        e = math.exp(-abs(z))
        f += max(z, 0.0) + math.log1p(e) - y[i] * z
        p = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
        r = p - y[i]
        w = p * (1.0 - p)
        ga += r * ja
        gv += r * jv
        faa += w * ja * ja
        fav += w * ja * jv
        fvv += w * jv * jv
        rav += r * zav
        rvv += r * (-1.5 * x2 * rs * rs) * jv  # d2z/dv2 = 3/4 a x^5 / q^(5/2)
    return f, ga, gv, faa, fav, fvv, rav, rvv


@kernel
def pool_map_fit_nb(
    x: np.ndarray,
    lb: np.ndarray,
    y: np.ndarray,
    a0: float,
    v0: float,
    a_max: float,
    v_max: float,
    iters: int,
) -> tuple[float, float]:
    """The ``(a, v)`` in ``[0, a_max] x [0, v_max]`` maximising the log-likelihood of
    ``sigmoid(lb + a * x / sqrt(1 + v * x^2))``, from ``(a0, v0)``: Newton steps (the
    Fisher information where the Hessian is not positive definite), ``v`` held at a bound
    its gradient pushes against, each step halved until the log loss does not rise, until a
    step moves both by less than 1e-7 (relative to ``1 + v`` for ``v``). One pass over the
    rows per point tried."""
    a = min(max(a0, 0.0), a_max)
    v = min(max(v0, 0.0), v_max)
    f, ga, gv, faa, fav, fvv, rav, rvv = _pool_pass_nb(x, lb, y, a, v)
    for _ in range(iters):
        if not faa > 1e-300:
            break
        da = -ga / faa
        dv = 0.0
        if not ((v <= 0.0 and gv > 0.0) or (v >= v_max and gv < 0.0)):
            hav = fav + rav
            hvv = fvv + rvv
            det = faa * hvv - hav * hav
            if hvv > 0.0 and det > 1e-12 * faa * hvv:  # Newton
                da = -(hvv * ga - hav * gv) / det
                dv = -(faa * gv - hav * ga) / det
            else:  # Fisher scoring
                det = faa * fvv - fav * fav
                if det > 1e-12 * faa * fvv:
                    da = -(fvv * ga - fav * gv) / det
                    dv = -(faa * gv - fav * ga) / det
        step = 1.0
        moved = False
        na = a
        nv = v
        for _ in range(40):
            na = min(max(a + step * da, 0.0), a_max)
            nv = min(max(v + step * dv, 0.0), v_max)
            nf, nga, ngv, nfaa, nfav, nfvv, nrav, nrvv = _pool_pass_nb(x, lb, y, na, nv)
            if nf <= f:
                moved = True
                break
            step *= 0.5
        if not moved:
            break
        done = abs(na - a) < 1e-7 and abs(nv - v) < 1e-7 * (1.0 + v)
        a, v, f, ga, gv, faa, fav, fvv, rav, rvv = na, nv, nf, nga, ngv, nfaa, nfav, nfvv, nrav, nrvv
        if done:
            break
    return a, v
