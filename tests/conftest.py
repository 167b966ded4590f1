"""Shared fixtures: where the real Binance data lies (../shared/data beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data"))
USDM = SHARED_DATA / "binance-usdm"
VISION_MIRROR = SHARED_DATA / "binance-vision-mirror"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"real data not found at {SHARED_DATA}; set ENGINE_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def usdm_dir(shared_data: Path) -> Path:
    return USDM


@pytest.fixture(scope="session")
def vision_mirror(shared_data: Path) -> Path:
    return VISION_MIRROR
