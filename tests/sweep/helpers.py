"""Constants shared by the sweep tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMA = REPO / "strategies" / "ema_cross.yaml"
SPAN = {"start": "2024-03-01", "end": "2024-03-03"}
GRID = ["fast=5,9,12", "slow=26,50,100"]
