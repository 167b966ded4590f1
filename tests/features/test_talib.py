"""Every feature TA-Lib covers equals TA-Lib: max relative error < 1e-9.

Relative error is measured against the value itself, or against a millionth of the series'
largest magnitude where the value is near zero (MACD histogram, OBV, momentum).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import talib

from engine.features import compute

from .helpers import random_walk

TOL = 1e-9


def talib_reference(df: pl.DataFrame) -> dict[str, np.ndarray]:
    o, h, lo, c, v = (
        df[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close", "volume")
    )
    macd, sig, hist = talib.MACD(c, 12, 26, 9)
    up, mid, low = talib.BBANDS(c, 20, 2, 2, 0)
    up50, mid50, low50 = talib.BBANDS(c, 50, 2, 2, 0)
    return {
        "rsi_14": talib.RSI(c, 14), "rsi_28": talib.RSI(c, 28), "rsi_7": talib.RSI(c, 7),
        "ema_9": talib.EMA(c, 9), "ema_20": talib.EMA(c, 20), "ema_50": talib.EMA(c, 50),
        "ema_200": talib.EMA(c, 200), "ema_34": talib.EMA(c, 34),
        "sma_100": talib.SMA(c, 100), "volume_sma_20": talib.SMA(v, 20),
        "macd": macd, "macd_signal": sig, "macd_hist": hist,
        "macd_8_21_5": talib.MACD(c, 8, 21, 5)[0],
        "bb_upper": up, "bb_middle": mid, "bb_lower": low,
        "bb_upper_50": up50, "bb_middle_50": mid50, "bb_lower_50": low50,
        "atr_14": talib.ATR(h, lo, c, 14), "atr_21": talib.ATR(h, lo, c, 21),
        "atr_pct_14": talib.NATR(h, lo, c, 14),
        "obv": talib.OBV(c, v),
        "adx_14": talib.ADX(h, lo, c, 14), "plus_di_14": talib.PLUS_DI(h, lo, c, 14),
        "minus_di_14": talib.MINUS_DI(h, lo, c, 14), "adx_7": talib.ADX(h, lo, c, 7),
        "momentum_10": talib.MOM(c, 10), "volume_momentum_10": talib.MOM(v, 10),
    }  # fmt: skip


def max_rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    has = ~np.isnan(ref)
    assert has.any()
    assert not np.isnan(ours[has]).any(), "NaN where TA-Lib has a value"
    scale = np.max(np.abs(ref[has]))
    denom = np.maximum(np.abs(ref[has]), 1e-6 * scale)
    denom[denom == 0] = 1.0
    return float(np.max(np.abs(ours[has] - ref[has]) / denom))


def check_against_talib(df: pl.DataFrame) -> None:
    ref = talib_reference(df)
    got = compute(df, list(ref), interval="5m")
    for name, expected in ref.items():
        ours = got[name].to_numpy()
        err = max_rel_error(ours, expected)
        assert err < TOL, f"{name}: max relative error {err:.3g}"
        # Warm-up: NaN exactly where TA-Lib has no value yet.
        first = int(np.argmax(~np.isnan(expected)))
        assert np.isnan(ours[:first]).all(), f"{name}: value before TA-Lib's first ({first})"


def test_real_btcusdt_5m_equals_talib(btc5m: pl.DataFrame) -> None:
    check_against_talib(btc5m)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_walk_equals_talib(seed: int) -> None:
    check_against_talib(random_walk(20_000, seed=seed))


def test_flat_prices_equal_talib() -> None:
    """Constant stretches (zero ranges, zero variance, RSI 0/0) follow TA-Lib's conventions."""
    df = random_walk(8_000, seed=9)
    flat = df["close"].to_numpy().copy()
    flat[500:5500] = flat[500]  # long enough for Wilder sums to decay into denormals
    df = df.with_columns(
        close=pl.Series(flat), open=pl.Series(flat), high=pl.Series(flat), low=pl.Series(flat)
    )
    check_against_talib(df)


def test_higher_timeframe_equals_talib_on_resampled_bars(btc5m: pl.DataFrame) -> None:
    """rsi_14_1h etc. equal TA-Lib on 1h bars resampled (by polars) from the 5m bars, and each
    hour's value shows from the 5m bar closing that hour until the next hour closes."""
    df = btc5m.head(30_000)
    hourly = (
        df.with_columns(ts=pl.from_epoch("open_time", time_unit="ms"))
        .group_by_dynamic("ts", every="1h", closed="left", label="left")
        .agg(
            pl.col("open_time").first(),
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.len().alias("n"),
        )
    )
    assert (hourly["n"] == 12).all()
    c = hourly["close"].to_numpy()
    h = hourly["high"].to_numpy()
    lo = hourly["low"].to_numpy()
    v = hourly["volume"].to_numpy()
    refs = {
        "rsi_14_1h": talib.RSI(c, 14), "ema_20_1h": talib.EMA(c, 20), "atr_14_1h": talib.ATR(h, lo, c, 14),
        "adx_14_1h": talib.ADX(h, lo, c, 14), "obv_1h": talib.OBV(c, v), "bb_lower_1h": talib.BBANDS(c, 20, 2, 2, 0)[2],
        "macd_hist_1h": talib.MACD(c, 12, 26, 9)[2], "volume_1h": v,
    }  # fmt: skip
    got = compute(df, list(refs), interval="5m")
    closing = ((df["open_time"].to_numpy() + 300_000) % 3_600_000) == 0
    for name, ref in refs.items():
        ours = got[name].to_numpy()
        at_close = ours[closing]
        assert max_rel_error(at_close, ref) < TOL, name
        # Between closes the last completed hour's value holds.
        hour_idx = np.cumsum(closing) - 1  # index of the last completed hour at each 5m bar
        expect = np.where(hour_idx >= 0, ref[np.maximum(hour_idx, 0)], np.nan)
        assert max_rel_error(ours, expect) < TOL, name
