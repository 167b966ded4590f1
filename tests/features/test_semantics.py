"""What the features mean: HTF visibility, funding, candle shapes, input validation."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from engine.errors import ConfigError, DataError
from engine.features import FeatureStream, compute, parse_name

from .helpers import random_walk

HOUR = 3_600_000


def test_htf_value_visible_only_at_the_close_of_its_hour(btc5m: pl.DataFrame) -> None:
    """At the 10:55 bar rsi_14_1h is the 10:00 hour's value; at 10:50 it is still 09:00's."""
    df = btc5m.head(2_000)
    got = compute(df, ["rsi_14_1h", "volume_1h"], interval="5m")
    t = df["open_time"].to_numpy()
    vol = df["volume"].to_numpy()
    day = 1_672_531_200_000 + 2 * 24 * HOUR  # 2023-01-03 00:00
    at = {m: int(np.flatnonzero(t == day + 10 * HOUR + m * 60_000)[0]) for m in (0, 50, 55)}
    hour10 = vol[at[0] : at[55] + 1].sum()
    hour9 = vol[at[0] - 12 : at[0]].sum()
    v1h = got["volume_1h"].to_numpy()
    assert v1h[at[55]] == pytest.approx(hour10, rel=1e-12)
    assert v1h[at[50]] == pytest.approx(hour9, rel=1e-12)
    r = got["rsi_14_1h"].to_numpy()
    assert r[at[50]] == r[at[0]] and r[at[55]] != r[at[50]]


def test_leading_partial_htf_bar_is_skipped() -> None:
    """Data starting at xx:20 builds its first 1h bar from the next full hour."""
    start = 1_672_531_200_000 + 20 * 60_000
    df = random_walk(60, seed=2, start_ms=start)
    got = compute(df, ["volume_1h"], interval="5m")["volume_1h"].to_numpy()
    # Row 0 is 00:20; row 8 opens 01:00 and row 19 (01:55) closes that first full hour.
    assert np.isnan(got[:19]).all()
    assert got[19] == pytest.approx(df["volume"][8:20].sum(), rel=1e-12)


def test_gap_completes_the_hour_late() -> None:
    """If the bar closing an hour is missing, the hour completes at the next bar present."""
    df = random_walk(36, seed=3)  # 00:00 .. 02:55
    df = df.filter(~pl.int_range(pl.len()).is_in([10, 11]))  # drop 00:50, 00:55
    v = compute(df, ["volume_1h"], interval="5m")["volume_1h"].to_numpy()
    assert np.isnan(v[:10]).all()
    assert v[10] == pytest.approx(df["volume"][:10].sum(), rel=1e-12)  # at 01:00, late


def test_funding_rate_and_minutes_to_funding(
    btc5m: pl.DataFrame, btc_funding: pl.DataFrame
) -> None:
    df = btc5m.slice(90, 200)  # from 07:30 on 2023-01-01
    got = compute(df, ["funding_rate", "minutes_to_funding"], funding=btc_funding, interval="5m")
    t = df["open_time"].to_numpy()
    ft = btc_funding["funding_time"].to_numpy()
    fr = btc_funding["funding_rate"].to_numpy()
    for i in range(len(t)):
        close = t[i] + 300_000
        j = np.searchsorted(ft, close, side="right") - 1
        assert got["funding_rate"][i] == fr[j]
        nxt = (close // (8 * HOUR) + 1) * 8 * HOUR
        assert got["minutes_to_funding"][i] == (nxt - close) / 60_000
    # The 07:55 bar closes at 08:00: it sees the 08:00 event and is 480 min from the next.
    i = int(np.flatnonzero(t == 1_672_531_200_000 + 7 * HOUR + 55 * 60_000)[0])
    assert got["minutes_to_funding"][i] == 480.0
    assert got["funding_rate"][i] == fr[np.flatnonzero(ft == 1_672_531_200_000 + 8 * HOUR)[0]]
    assert got["minutes_to_funding"][i - 1] == 5.0


def test_candle_shapes_and_log_return() -> None:
    df = pl.DataFrame({"open_time": [0, 300_000, 600_000], "open": [10.0, 12.0, 5.0],
                       "high": [14.0, 12.0, 5.0], "low": [9.0, 8.0, 5.0], "close": [12.0, 9.0, 5.0],
                       "volume": [1.0, 2.0, 0.0]})  # fmt: skip
    got = compute(
        df, ["body_ratio", "upper_shadow", "lower_shadow", "log_return_1", "volume_ratio_2"]
    )
    assert got["body_ratio"].to_list() == [0.4, 0.75, 0.0]
    assert got["upper_shadow"].to_list() == [0.4, 0.0, 0.0]
    assert got["lower_shadow"].to_list() == [0.2, 0.25, 0.0]
    lr = got["log_return_1"].to_list()
    assert (
        math.isnan(lr[0])
        and lr[1] == pytest.approx(math.log(9 / 12))
        and lr[2] == pytest.approx(math.log(5 / 9))
    )
    vr = got["volume_ratio_2"].to_list()
    assert math.isnan(vr[0]) and vr[1] == pytest.approx(2 / 1.5) and vr[2] == 0.0


def test_declared_warmup_is_the_first_value() -> None:
    df = random_walk(500, seed=8)
    names = ["rsi_14", "ema_20", "macd", "bb_pct", "atr_14", "adx_14", "plus_di_14", "momentum_10",
             "log_return_1", "obv", "volume_ratio", "sma_7"]  # fmt: skip
    got = compute(df, names, interval="5m")
    for name in names:
        col = got[name].to_numpy()
        first = int(np.argmax(~np.isnan(col)))
        assert first == parse_name(name).warmup, name
        assert not np.isnan(col[first:]).any(), name


def test_bad_candles_are_rejected() -> None:
    df = random_walk(10, seed=1)
    with pytest.raises(DataError, match="missing column"):
        compute(df.drop("volume"))
    with pytest.raises(DataError, match="strictly increasing"):
        compute(pl.concat([df, df.tail(1)]), interval="5m")
    with pytest.raises(DataError, match="not a multiple"):
        compute(df.with_columns(pl.col("open_time") + 1), interval="5m")
    with pytest.raises(ConfigError, match="cannot infer"):
        compute(df.head(1))
    assert compute(df.head(1), ["ema_3"], interval="5m").height == 1


def test_stream_rejects_out_of_order_bars() -> None:
    fs = FeatureStream(["ema_3"], interval="5m")
    bar = {"open_time": 600_000, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    fs.update(bar)
    with pytest.raises(DataError, match="does not follow"):
        fs.update(bar)
    with pytest.raises(DataError, match="not a multiple"):
        fs.update({**bar, "open_time": 900_001})
