"""Strategy files and the CLI runner of the lookahead tests (short spans, tiny models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EMA = REPO / "strategies/ema_cross.yaml"

#: strategies/ensemble.yaml's graph on 12 days of BTCUSDT with two tiny models: four folds
#: (cutoffs on days 4, 6, 8, 10), so random cuts land in the middle of folds. Funding is on
#: (the simulator pays it) but not a feature: see test_a_run_ending_just_before_a_funding_time.
ML_CONFIG = """\
name: lookahead_small
description: a small walk-forward ensemble for the lookahead tests.
data:
  symbols: [BTCUSDT]
  interval: 5m
  start: 2023-03-01
  end: 2023-03-12T23:55
  market: usdm
  funding: true
  higher_timeframes: [15m]
features: [rsi_14, bb_pct, atr_pct_14, log_return_1, volume_ratio, rsi_14_15m]
labels: {horizon: 6, cost_bps: 10, flat_band_bps: 0, drop_flat: true}
training:
  train_window: 3d
  retrain_every: 2d
  embargo: 1h
  warmup: 4d
  row_stride: 2
  min_train_rows: 200
  seed: 7
  threads: 1
  workers: 1
models:
  - {kind: lightgbm, name: lightgbm, params: {n_estimators: 15, num_leaves: 7, min_data_in_leaf: 30}}
  - {kind: mlp, name: mlp, params: {hidden_layer_sizes: [8], max_iter: 15}}
ensemble:
  calibration: isotonic
  fusion: bayesian
  payoff_lookback: 288
  min_calibration_rows: 100
  reliability_halflife: 576
  gate: {max_uncertainty: 0.9999, min_agreement: 0.5, min_edge: 0.0}
risk:
  sizing: kelly
  kelly_fraction: 0.25
  max_position_pct: 50
  max_leverage: 2
  max_exposure_pct: 100
execution:
  order_type: market
  leverage: 2
  margin_mode: cross
  taker_fee: 0.0005
  maker_fee: 0.0002
  slippage_bps: 1
  initial_cash: 10000
"""


@pytest.fixture(scope="session")
def ml_strategy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lookahead_strategy") / "lookahead_small.yaml"
    path.write_text(ML_CONFIG)
    return path


def lookahead(*args: str, store: Path, results: Path) -> tuple[int, dict[str, Any]]:
    """``engine lookahead ARGS --json`` in this process (so a test's planted lookahead is
    seen): the exit code and the JSON report."""
    from typer.testing import CliRunner

    from engine.cli import app

    proc = CliRunner().invoke(
        app,
        ["lookahead", *args, "--json", "--store", str(store), "--results", str(results)],
    )
    if proc.exception is not None and not isinstance(proc.exception, SystemExit):
        raise proc.exception
    return proc.exit_code, json.loads(proc.stdout)
