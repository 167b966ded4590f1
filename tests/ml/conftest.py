"""Small real-data fixtures for the ML tests: a few thousand 5m BTCUSDT bars and features."""

from __future__ import annotations

from pathlib import Path

import pytest

FEATURES = ["rsi_14", "bb_pct", "atr_pct_14", "log_return_1", "volume_ratio", "adx_14"]


@pytest.fixture(scope="session")
def btc_5m(usdm_dir: Path):
    return _klines(usdm_dir, "BTCUSDT")


def _klines(usdm_dir: Path, symbol: str):  # type: ignore[no-untyped-def]
    import polars as pl

    return pl.read_csv(usdm_dir / "klines" / f"{symbol}-5m.csv.gz").with_columns(
        pl.col("open_time").cast(pl.Int64),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    )


@pytest.fixture(scope="session")
def small_eth(usdm_dir: Path):  # type: ignore[no-untyped-def]
    """ETHUSDT's (candles, features) over the same 4,000 bars as ``small``."""
    from engine.features import compute

    c = _klines(usdm_dir, "ETHUSDT").head(4000)
    return c, compute(c, FEATURES, interval="5m")


@pytest.fixture(scope="session")
def small(btc_5m):
    """(candles, features) of the first 4,000 5m bars (about 14 days)."""
    from engine.features import compute

    c = btc_5m.head(4000)
    return c, compute(c, FEATURES, interval="5m")


def small_config(models=None, **over):
    """A tiny ML config for tests: 3-day window, 2-day retrains, 6-bar horizon."""
    from engine.strategy.ml_config import MLSections

    cfg = {
        "labels": {"horizon": 6, "cost_bps": 2.0},
        "training": {
            "train_window": "3d",
            "retrain_every": "2d",
            "warmup": "4d",
            "embargo": 2,
            "min_train_rows": 200,
            "seed": 3,
        },
        "models": models
        or [
            {
                "kind": "lightgbm",
                "params": {"n_estimators": 15, "num_leaves": 7, "min_data_in_leaf": 20},
            },
            {"kind": "mlp", "params": {"hidden_layer_sizes": [8], "max_iter": 15}},
        ],
        "ensemble": {
            "payoff_lookback": 200,
            "min_calibration_rows": 100,
            "gate": {"max_uncertainty": 0.9999, "min_agreement": 0.5},
        },
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return MLSections(**cfg)
