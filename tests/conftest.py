"""Shared fixtures: where the real Binance data lies (../shared/data beside the checkout).

Tests never download: a load that finds the store short of data raises its DataError, as
with ``ENGINE_VISION_URL=off``, unless a test points ``ENGINE_VISION_URL`` at its own HTTP
server on 127.0.0.1 (tests/data). ``ENGINE_LOCAL_DATA`` from the caller's environment is
dropped too: a test that wants it sets it. Subprocesses (``engine ...``) inherit both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data"))
USDM = SHARED_DATA / "binance-usdm"
VISION_MIRROR = SHARED_DATA / "binance-vision-mirror"

os.environ["ENGINE_VISION_URL"] = "off"
os.environ.pop("ENGINE_LOCAL_DATA", None)


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


@pytest.fixture(scope="session")
def usdm_store(usdm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with all of binance-usdm imported (BTCUSDT, ETHUSDT: 1m, 5m, 15m, 1h, funding,
    mark price). Session-scoped: treat it as read-only; copy it to change it."""
    from engine.data import import_paths

    store = tmp_path_factory.mktemp("usdm_store")
    import_paths([usdm_dir], store=store)
    return store
