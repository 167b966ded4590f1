"""engine.kernels.simd: the eight vector lanes are numpy's eight pairwise accumulators."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from engine.kernels.simd import (
    TERM_DEV2,
    TERM_DOWN2,
    TERM_VALUE,
    lane_range_nb,
    lane_sums8_nb,
    return_sums8_nb,
)


@numba.njit(cache=False)
def _lanes(a, lo, m, kind, mean):  # type: ignore[no-untyped-def]
    return lane_sums8_nb(a, lo, m, kind, mean)


def _term(v: float, kind: int, mean: float) -> float:
    if kind == TERM_DOWN2:
        d = v if not 0.0 < v else 0.0  # numba's min(v, 0.0): v unless 0.0 < v (NaN kept)
        return d * d
    if kind == TERM_DEV2:
        return (v - mean) * (v - mean)
    return v


def _oracle(a: np.ndarray, lo: int, m: int, kind: int, mean: float) -> list[float]:
    """Accumulator k: its terms added left to right in Python floats (IEEE doubles)."""
    out = []
    for k in range(8):
        acc = _term(float(a[lo + k]), kind, mean)
        for i in range(lo + 8 + k, lo + m, 8):
            acc = acc + _term(float(a[i]), kind, mean)
        out.append(acc)
    return out


def _same(x: list[float], y: list[float]) -> bool:
    return all(
        (math.isnan(p) and math.isnan(q)) or (p == q and math.copysign(1, p) == math.copysign(1, q))
        for p, q in zip(x, y, strict=True)
    )


@pytest.mark.parametrize("kind", [TERM_VALUE, TERM_DOWN2, TERM_DEV2])
def test_lanes_are_the_eight_accumulators(kind: int) -> None:
    rng = np.random.default_rng(kind)
    a = rng.normal(0, 1e-3, 400) * rng.choice([1.0, 1e300, 1e-300], 400)
    a[rng.random(400) < 0.3] = 0.0
    a[[3, 50, 77]] = -0.0
    for lo in range(0, 24):
        for m in range(8, 137, 8):
            got = list(_lanes(a, lo, m, kind, 1e-4))
            assert _same(got, _oracle(a, lo, m, kind, 1e-4)), (lo, m)


@pytest.mark.parametrize("kind", [TERM_VALUE, TERM_DOWN2, TERM_DEV2])
def test_nan_and_infinities_go_where_numba_puts_them(kind: int) -> None:
    a = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, -5e-324, 1.0, -1.0] * 4)
    for lo, m in ((0, 8), (0, 32), (4, 24), (1, 16)):
        got = list(_lanes(a, lo, m, kind, 0.5))
        assert _same(got, _oracle(a, lo, m, kind, 0.5)), (lo, m)


def test_only_c_contiguous_float64_vectors() -> None:
    with pytest.raises(numba.TypingError):
        _lanes(np.zeros(16)[::2], 0, 8, TERM_VALUE, 0.0)
    with pytest.raises(numba.TypingError):
        _lanes(np.zeros(16, dtype=np.float32), 0, 8, TERM_VALUE, 0.0)


@numba.njit(cache=False)
def _range(a, lo, m):  # type: ignore[no-untyped-def]
    return lane_range_nb(a, lo, m)


def test_range_lanes_skip_nan() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 300)
    a[rng.random(300) < 0.2] = np.nan
    a[:8] = np.nan  # lanes that start on NaN
    a[[40, 41]] = [np.inf, -np.inf]
    for lo in range(0, 12):
        for m in range(4, 200, 4):
            got = _range(a, lo, m)
            for k in range(4):
                lane = [float(v) for v in a[lo + k : lo + m : 4] if v == v]
                assert got[k] == max(lane, default=-math.inf), (lo, m, k)
                assert got[4 + k] == min(lane, default=math.inf), (lo, m, k)


@numba.njit(cache=False)
def _returns(a, lo, m):  # type: ignore[no-untyped-def]
    return return_sums8_nb(a, lo, m)


def test_returns_written_over_their_values_and_summed_by_lane() -> None:
    """Returns of ``a[lo : lo + m + 1]`` over ``a[lo : lo + m]`` (0 after a value <= 0 or
    NaN), the values past them untouched, and the sums and downside sums of each lane."""
    rng = np.random.default_rng(9)
    base = 100 * np.cumprod(1 + rng.normal(0, 0.01, 200))
    base[[5, 6, 30, 31, 90]] = [0.0, -3.0, np.nan, 50.0, np.inf]
    for lo in range(0, 12):
        for m in range(8, 161, 8):
            a = base.copy()
            got = _returns(a, lo, m)
            want_r = [
                float(base[i + 1]) / float(base[i]) - 1.0 if base[i] > 0.0 else 0.0
                for i in range(lo, lo + m)
            ]
            assert _same(list(a[lo : lo + m]), want_r), (lo, m)
            assert np.array_equal(a[:lo], base[:lo]) and np.array_equal(
                a[lo + m :], base[lo + m :], equal_nan=True
            )
            r = np.array(want_r)
            assert _same(list(got[:8]), _oracle(r, 0, m, TERM_VALUE, 0.0)), (lo, m)
            assert _same(list(got[8:]), _oracle(r, 0, m, TERM_DOWN2, 0.0)), (lo, m)
