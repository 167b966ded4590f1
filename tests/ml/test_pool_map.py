"""The bayesian pool's map (issue 14): ``sigmoid(lb + a * x / sqrt(1 + v * x^2))`` fitted at a
cutoff on out-of-fold bars (:func:`engine.ml.ensemble.fit_pool_map`), and the fusion kernel's
use of it (:func:`engine.ml.fusion_nb.pool_map_nb`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from engine.ml.ensemble import IDENTITY_MAP, POOL_A_MAX, POOL_V_MAX, fit_pool_map
from engine.ml.fusion_nb import pool_map_nb


def _sample(a, v, n, seed, scale=0.4, base=0.51):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, scale, n)
    lb = np.full(n, np.log(base / (1 - base))) + rng.normal(0, 0.01, n)
    z = lb + a * x / np.sqrt(1 + v * x * x)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return x, lb, y


def _nll(x, lb, y, a, v):
    z = lb + a * x / np.sqrt(1 + v * x * x)
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def _scipy_fit(x, lb, y):
    """The oracle: scipy's bounded quasi-Newton minimum of the same log loss."""
    res = minimize(
        lambda th: _nll(x, lb, y, th[0], th[1]),
        [1.0, 0.0],
        bounds=[(0.0, POOL_A_MAX), (0.0, POOL_V_MAX)],
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 500},
    )
    return res.x


@pytest.mark.parametrize(("a", "v"), [(1.5, 4.0), (0.6, 0.0), (1.0, 0.0), (2.0, 12.0)])
def test_the_fit_is_the_maximum_likelihood_map(a, v):
    x, lb, y = _sample(a, v, 200_000, seed=int(a * 10 + v))
    got = fit_pool_map(x, lb, y, min_rows=1_000)
    ref = _scipy_fit(x, lb, y)
    # no worse than scipy's optimum, and at the same point
    assert _nll(x, lb, y, *got) <= _nll(x, lb, y, *ref) + 1e-6
    np.testing.assert_allclose(got, ref, atol=2e-3 * (1 + ref[1]))
    # from another start (the previous cutoff's map) to the same optimum
    warm = fit_pool_map(x, lb, y, min_rows=1_000, start=(2.5, 20.0))
    np.testing.assert_allclose(warm, got, atol=1e-4 * (1 + got[1]))
    # and near the map the labels were drawn from
    assert abs(got[0] - a) < 0.15 * a + 0.05
    assert abs(got[1] - v) < 0.5 * v + 0.5


def test_the_map_is_the_identity_until_enough_bars_forecast_something():
    x, lb, y = _sample(1.8, 6.0, 30_000, seed=3)
    assert fit_pool_map(x, lb, y, min_rows=30_001) == IDENTITY_MAP
    assert fit_pool_map(x, lb, y, min_rows=None) == IDENTITY_MAP
    assert fit_pool_map(x, lb, y, min_rows=30_000) != IDENTITY_MAP
    # bars where the pool was the base rate (x == 0) or a label is unknown do not count
    x2 = np.r_[x[:5_000], np.zeros(25_000)]
    lb2, y2 = lb, y
    assert fit_pool_map(x2, lb2, y2, min_rows=5_001) == IDENTITY_MAP
    y3 = y.copy()
    y3[::2] = np.nan
    assert fit_pool_map(x, lb, y3, min_rows=15_001) == IDENTITY_MAP
    # one class: nothing to fit
    assert fit_pool_map(x, lb, np.ones_like(y), min_rows=10) == IDENTITY_MAP


def test_the_kernels_map_is_the_formula_and_the_identity_exactly():
    rng = np.random.default_rng(0)
    for x in rng.normal(0, 2, 200):
        assert pool_map_nb(x, 1.0, 0.0) == x
        assert pool_map_nb(x, float("nan"), 3.0) == x
        got = pool_map_nb(x, 1.7, 5.0)
        assert got == pytest.approx(1.7 * x / np.sqrt(1 + 5.0 * x * x), rel=1e-15)
        assert abs(got) < 1.7 / np.sqrt(5.0)  # bounded at a / sqrt(v)
