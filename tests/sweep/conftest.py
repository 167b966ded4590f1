"""Sweep fixtures: a 3x3 ema_cross sweep over a short real span, logged once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import EMA, GRID, SPAN


@pytest.fixture(scope="session")
def sweep_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep_results")


@pytest.fixture(scope="session")
def logged_sweep(usdm_store: Path, sweep_results: Path):  # type: ignore[no-untyped-def]
    """The 3x3 sweep in a 2-process pool, written to the run log."""
    from engine.sweep import run_sweep

    return run_sweep(EMA, GRID, store=usdm_store, results=sweep_results, workers=2, **SPAN)
