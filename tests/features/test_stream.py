"""Streaming equals batch, bar for bar, and batch is prefix-invariant (the lookahead test)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.features import FeatureStream, compute, default_names, warmup_bars
from engine.features.batch import candle_arrays, compute_columns, compute_columns_fold, funding_asof
from engine.features.catalogue import build_plan

from .helpers import assert_same, random_walk

BASE = [
    "rsi_3", "ema_3", "sma_4", "volume", "volume_sma_3", "volume_ratio_3",
    "macd_3_5_2", "macd_signal_3_5_2", "macd_hist_3_5_2",
    "bb_upper_4", "bb_middle_4", "bb_lower_4", "bb_width_4", "bb_pct_4",
    "atr_3", "atr_pct_3", "obv", "adx_3", "plus_di_3", "minus_di_3",
    "body_ratio", "upper_shadow", "lower_shadow", "momentum_2", "volume_momentum_2", "log_return_1",
]  # fmt: skip
SMALL = (
    BASE
    + ["funding_rate", "minutes_to_funding"]
    + [f"{n}_15m" for n in BASE]
    + [f"{n}_1h" for n in BASE]
)
HOUR = 3_600_000


def make_bars(n: int, seed: int, offset: int, nan_frac: float, gap_frac: float) -> pl.DataFrame:
    """Random walk of n 5m bars starting `offset` bars after an hour, with NaN bars and gaps."""
    df = random_walk(n, seed=seed, start_ms=1_700_000_000_000 // HOUR * HOUR + offset * 300_000)
    rng = np.random.default_rng(seed + 1)
    cols = {}
    for j, col in enumerate(("open", "high", "low", "close", "volume")):
        x = df[col].to_numpy().copy()
        x[rng.random(n) < nan_frac / 5 * (j + 1) / 3] = np.nan
        cols[col] = x
    df = df.with_columns(**{k: pl.Series(v) for k, v in cols.items()})
    keep = rng.random(n) >= gap_frac
    keep[0] = True
    return df.filter(pl.Series(keep))


def make_funding(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    t0 = int(df["open_time"][0]) // (8 * HOUR) * 8 * HOUR - 8 * HOUR
    times = np.arange(t0, int(df["open_time"][-1]) + 16 * HOUR, 8 * HOUR, dtype=np.int64)
    rates = np.random.default_rng(seed).normal(0, 1e-4, times.shape[0])
    return pl.DataFrame({"funding_time": times[1:], "funding_rate": rates[1:]})


def stream_all(
    df: pl.DataFrame, names: list[str], funding: pl.DataFrame | None
) -> dict[str, np.ndarray]:
    fs = FeatureStream(names, interval="5m", funding=funding)
    rows = [fs.update(bar) for bar in df.iter_rows(named=True)]
    return {n: np.array([r[n] for r in rows]) for n in names}


def check_paths_agree(df: pl.DataFrame, names: list[str], funding: pl.DataFrame | None) -> None:
    batch = compute(df, names, funding=funding, interval="5m")
    streamed = stream_all(df, names, funding)
    interval, (t, o, h, lo, c, v) = candle_arrays(df, interval="5m")
    plan = build_plan(names, interval=interval)
    fr = funding_asof(funding, t, 300_000)
    folded = compute_columns_fold(plan, t, o, h, lo, c, v, fr)
    ops = compute_columns(plan, t, o, h, lo, c, v, fr)
    for j, name in enumerate(names):
        assert_same(streamed[name], batch[name].to_numpy(), f"stream vs compute: {name}")
        assert_same(folded[j], ops[j], f"fold vs specialised batch: {name}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 400),
    seed=st.integers(0, 10_000),
    offset=st.integers(0, 23),
    nan_frac=st.sampled_from([0.0, 0.02, 0.1]),
    gap_frac=st.sampled_from([0.0, 0.01, 0.1]),
    with_funding=st.booleans(),
)
def test_stream_equals_batch(
    n: int, seed: int, offset: int, nan_frac: float, gap_frac: float, with_funding: bool
) -> None:
    df = make_bars(n, seed, offset, nan_frac, gap_frac)
    funding = make_funding(df, seed) if with_funding else None
    check_paths_agree(df, SMALL, funding)


def test_stream_equals_batch_whole_catalogue(
    btc5m: pl.DataFrame, btc_funding: pl.DataFrame
) -> None:
    """The default catalogue on 3,000 real bars starting mid-hour, with NaN bars and a gap."""
    df = btc5m.slice(1_007, 3_000)
    close = df["close"].to_numpy().copy()
    close[[100, 101, 1_500, 2_222]] = np.nan
    df = df.with_columns(close=pl.Series(close)).filter(
        ~pl.col("open_time").is_between(int(df["open_time"][700]), int(df["open_time"][730]))
    )
    check_paths_agree(df, default_names("5m"), btc_funding)


def test_nan_bar_gives_nan_row_and_keeps_state() -> None:
    """A NaN bar is skipped: its row is NaN and the next bar continues as if it were absent."""
    df = random_walk(300, seed=5)
    names = ["ema_5", "rsi_5", "obv", "atr_5", "momentum_3"]
    with_nan = df.with_columns(
        high=pl.when(pl.int_range(pl.len()) == 150).then(None).otherwise(pl.col("high"))
    )
    got = compute(with_nan, names, interval="5m")
    without = compute(df.filter(pl.int_range(pl.len()) != 150), names, interval="5m")
    for name in names:
        col = got[name].to_numpy()
        assert math.isnan(col[150])
        assert_same(np.delete(col, 150), without[name].to_numpy(), name)


FULL_K = 6_000


@pytest.fixture(scope="module")
def prefix_case(
    btc5m: pl.DataFrame, btc_funding: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    df = btc5m.slice(2_005, FULL_K)  # starts mid-hour
    close = df["close"].to_numpy().copy()
    close[[40, 2_000, 2_001]] = np.nan
    df = df.with_columns(close=pl.Series(close))
    return df, compute(df, funding=btc_funding, interval="5m")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(k=st.integers(1, FULL_K))
def test_prefix_invariance(
    prefix_case: tuple[pl.DataFrame, pl.DataFrame], btc_funding: pl.DataFrame, k: int
) -> None:
    """compute(candles.head(k)) == compute(candles).head(k), exactly, every column."""
    df, full = prefix_case
    head = compute(df.head(k), funding=btc_funding, interval="5m")
    assert head.columns == full.columns
    for name in full.columns:
        assert_same(head[name].to_numpy(), full[name].head(k).to_numpy(), f"k={k} {name}")


def test_stream_state_is_fixed_size_and_warmup_is_declared() -> None:
    """The state vector never grows with history, and ``warm`` turns true exactly at the bar
    :func:`warmup_bars` declares (here ema_200_1h: 200 hours of 12 bars)."""
    need = warmup_bars(None, interval="5m")
    assert need == 200 * 12 - 1
    df = random_walk(need + 50, seed=3)  # starts 2023-01-01 00:00
    fs = FeatureStream(None, interval="5m")
    rows = list(df.iter_rows(named=True))
    size = fs._st.shape[0]
    for i, bar in enumerate(rows):
        values = fs.update(bar)
        assert fs.warm == (i >= need), i
        assert fs._st.shape[0] == size
    assert fs.count == need + 50
    assert not any(math.isnan(v) for k, v in values.items() if k != "funding_rate")
