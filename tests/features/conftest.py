"""Fixtures for the feature tests: real BTCUSDT 5m candles and funding, read from the shared data."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

HOUR_MS = 3_600_000


@pytest.fixture(scope="session")
def btc5m(usdm_dir: Path) -> pl.DataFrame:
    """All 143,900 real BTCUSDT 5m bars (open_time ms + Float64 OHLCV)."""
    return pl.read_csv(
        usdm_dir / "klines" / "BTCUSDT-5m.csv.gz", schema_overrides={"open_time": pl.Int64}
    )


@pytest.fixture(scope="session")
def btc_funding(usdm_dir: Path) -> pl.DataFrame:
    """Real BTCUSDT funding events, calc_time's ms jitter rounded to the funding hour."""
    raw = pl.read_csv(usdm_dir / "fundingRate" / "BTCUSDT-fundingRate.csv.gz")
    return raw.select(
        funding_time=((pl.col("calc_time") + HOUR_MS // 2) // HOUR_MS * HOUR_MS).cast(pl.Int64),
        funding_rate=pl.col("last_funding_rate").cast(pl.Float64),
    )
