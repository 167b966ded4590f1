"""Fixtures: headless Chromium (Debian's, through Playwright), the live tests' simulator
market, and a small finished ensemble backtest (strategies/ensemble.yaml's graph, four weeks)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.live.conftest import market  # noqa: F401 - the live tests' simulator market

CHROMIUM = "/usr/bin/chromium"


def blank(png: bytes) -> bool:
    """True when a screenshot is (nearly) one colour: no chart was drawn."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20) or []
    counts = sorted((n for n, _ in colors), reverse=True)
    drawn = sum(counts[1:])  # pixels not of the background colour
    return len(colors) < 4 or drawn < 0.005 * img.width * img.height


async def browser(pw: Any) -> Any:
    return await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


def watch(page: Any) -> list[str]:
    """The page's console errors and uncaught exceptions, as they come."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


@pytest.fixture(scope="session")
def ensemble_run(
    usdm_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, Path]:
    """``engine backtest`` of strategies/ensemble.yaml's graph over four weeks, two tiny models
    (the ensemble e2e test's config): ``(results, run_id, store)``."""
    from tests.backtest.test_ensemble_e2e import CONFIG

    tmp = tmp_path_factory.mktemp("dash_ensemble")
    cfg = tmp / "ensemble_small.yaml"
    keep = "\n".join(
        ln for ln in CONFIG.splitlines() if "kind: prophet" not in ln and "kind: mlp" not in ln
    )
    cfg.write_text(keep + "\n")
    results = tmp / "results"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "backtest",
            str(cfg),
            "--json",
            "--store",
            str(usdm_store),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return results, json.loads(out.stdout.strip().splitlines()[-1])["run_id"], usdm_store
