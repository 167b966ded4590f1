"""Shared pieces for the simulator tests: handmade bar series and the shipped specs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from engine.sim import SimConfig, load_specs, simulate

NAN = float("nan")


def bars(rows: Sequence[tuple[float, float, float, float]]) -> tuple[np.ndarray, ...]:
    """(open, high, low, close) rows of one symbol -> four [n, 1] arrays."""
    a = np.array(rows, dtype=float)
    return tuple(a[:, i : i + 1].copy() for i in range(4))


def col(values: Sequence[float]) -> np.ndarray:
    return np.array(values, dtype=float).reshape(-1, 1)


@pytest.fixture(scope="session")
def btc() -> list:
    return load_specs(["BTCUSDT"])


@pytest.fixture(scope="session")
def run_btc(btc: list) -> Callable[..., object]:
    """simulate() on one BTCUSDT column of handmade bars."""

    def run(rows, direction, *, funding=None, config=None, **kw):  # type: ignore[no-untyped-def]
        o, h, lo, c = bars(rows)
        fr = None if funding is None else col(funding)
        return simulate(
            o,
            h,
            lo,
            c,
            funding_rate=fr,
            direction=col(direction),
            specs=btc,
            config=config or SimConfig(),
            **kw,
        )

    return run
