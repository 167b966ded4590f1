"""Isotonic regression (pool adjacent violators) as a numba kernel, for calibration.

Imports only numpy and engine.kernels. Oracle: ``sklearn.isotonic.IsotonicRegression`` (increasing,
``out_of_bounds='clip'``): the fitted values at the training points agree to 1e-12
(tests/ml/test_calibration.py).
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel


@kernel(allocates=True)
def pava_nb(x_sorted: np.ndarray, y_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(x, value)`` of the increasing isotonic fit of y on sorted x (unit weights).

    Equal x values are pooled first (their mean y), then adjacent violators are merged.
    Each block contributes its first and last x with the block's value, so ``np.interp``
    over the knots reproduces the step function with linear ramps between blocks, as
    scikit-learn's ``predict`` does.
    """
    n = x_sorted.shape[0]
    # pool equal x
    ux = np.empty(n)
    uy = np.empty(n)
    uw = np.empty(n)
    m = 0
    i = 0
    while i < n:
        j = i
        s = 0.0
        while j < n and x_sorted[j] == x_sorted[i]:
            s += y_sorted[j]
            j += 1
        ux[m] = x_sorted[i]
        uy[m] = s / (j - i)
        uw[m] = j - i
        m += 1
        i = j
    # PAVA with a block stack
    bv = np.empty(m)
    bw = np.empty(m)
    bs = np.empty(m, dtype=np.int64)  # block start (index into ux)
    be = np.empty(m, dtype=np.int64)  # block end (inclusive)
    k = 0
    for t in range(m):
        bv[k] = uy[t]
        bw[k] = uw[t]
        bs[k] = t
        be[k] = t
        k += 1
        while k > 1 and bv[k - 2] >= bv[k - 1]:
            w = bw[k - 2] + bw[k - 1]
            bv[k - 2] = (bv[k - 2] * bw[k - 2] + bv[k - 1] * bw[k - 1]) / w
            bw[k - 2] = w
            be[k - 2] = be[k - 1]
            k -= 1
    kx = np.empty(2 * k)
    ky = np.empty(2 * k)
    c = 0
    for b in range(k):
        kx[c] = ux[bs[b]]
        ky[c] = bv[b]
        c += 1
        if be[b] != bs[b]:
            kx[c] = ux[be[b]]
            ky[c] = bv[b]
            c += 1
    return kx[:c], ky[:c]
