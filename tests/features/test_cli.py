"""``engine features`` writes a Parquet file from a real store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from engine.cli.features_cmd import warmup_start
from engine.data import load_candles, load_funding
from engine.features import compute, default_names

from .helpers import assert_same


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "features", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_parquet_equal_to_compute(usdm_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "btc.parquet"
    res = run(
        "--symbol",
        "BTCUSDT",
        "--interval",
        "5m",
        "--start",
        "2024-01-10",
        "--end",
        "2024-01-12",
        "--store",
        str(usdm_store),
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    got = pl.read_parquet(out)
    assert got.columns == ["open_time", *default_names("5m")]
    assert got.height == 3 * 288
    # Warm from the first row: history before --start was loaded for the warm-up ...
    assert not got.drop("open_time").head(1).select(pl.all().is_nan().any()).row(0)[0]
    # ... and the values are those of compute() over the candles loaded from there.
    start = warmup_start(int(got["open_time"][0]), None, "5m")
    candles = load_candles("BTCUSDT", "5m", start=start, end="2024-01-12", store=usdm_store)
    full = compute(candles, funding=load_funding("BTCUSDT", store=usdm_store), interval="5m")
    full = full.filter(pl.col("open_time") >= got["open_time"][0])
    for name in got.columns:
        assert_same(got[name].to_numpy(), full[name].to_numpy(), name)


def test_cli_names_and_errors(usdm_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "few.parquet"
    res = run(
        "--symbol",
        "BTCUSDT",
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-01",
        "--names",
        "rsi_14,ema_20_1h",
        "--no-warmup",
        "--store",
        str(usdm_store),
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    got = pl.read_parquet(out)
    assert got.columns == ["open_time", "rsi_14", "ema_20_1h"]
    assert got.height == 288 and np.isnan(got["rsi_14"][0])

    bad = tmp_path / "bad.parquet"
    res = run(
        "--symbol", "BTCUSDT", "--names", "rsl_14", "--store", str(usdm_store), "--out", str(bad)
    )
    assert res.returncode == 2
    assert "did you mean 'rsi_14'" in res.stderr
    assert not bad.exists()
    res = run(
        "--symbol", "NOPEUSDT", "--names", "rsi_14", "--store", str(usdm_store), "--out", str(bad)
    )
    assert res.returncode == 1 and "NOPEUSDT" in res.stderr
    assert not bad.exists() and not list(tmp_path.glob(".bad*"))
