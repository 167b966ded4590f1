"""Helpers for the feature tests."""

from __future__ import annotations

import numpy as np
import polars as pl


def random_walk(
    n: int, *, seed: int, start_ms: int = 1_672_531_200_000, step_ms: int = 300_000
) -> pl.DataFrame:
    """A random-walk OHLCV frame (positive prices, some zero volumes)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    op = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(op, close) * (1 + np.abs(rng.normal(0, 0.002, n)))
    low = np.minimum(op, close) * (1 - np.abs(rng.normal(0, 0.002, n)))
    volume = rng.gamma(2.0, 50.0, n)
    volume[rng.random(n) < 0.02] = 0.0
    return pl.DataFrame({
        "open_time": start_ms + step_ms * np.arange(n, dtype=np.int64),
        "open": op, "high": high, "low": low, "close": close, "volume": volume,
    })  # fmt: skip


def assert_same(a: np.ndarray, b: np.ndarray, label: str) -> None:
    """Exact equality, NaN equal to NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise AssertionError(f"{label}: first difference at row {i}: {a[i]!r} != {b[i]!r}")
