"""Feature names: parsing, the catalogue, and errors that say how to fix them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import talib

from engine.errors import ConfigError
from engine.features import check_names, compute, default_names, parse_name

from .helpers import random_walk


def test_default_catalogue_has_the_required_names() -> None:
    names = default_names("5m")
    required = [
        "rsi_14", "rsi_28", "volume", "volume_sma_20", "volume_ratio", "ema_9", "ema_20", "ema_50",
        "ema_200", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
        "bb_width", "bb_pct", "atr_14", "atr_pct_14", "obv", "adx_14", "plus_di_14", "minus_di_14",
        "body_ratio", "upper_shadow", "lower_shadow", "momentum_10", "volume_momentum_10",
        "log_return_1", "funding_rate", "minutes_to_funding",
    ]  # fmt: skip
    for name in required:
        assert name in names
        assert f"{name}_1h" in names or name in ("funding_rate", "minutes_to_funding")
        assert f"{name}_15m" in names or name in ("funding_rate", "minutes_to_funding")
    assert len(names) == 31 + 2 * 29
    assert len(set(names)) == len(names)
    assert default_names("1h") == names[:31]
    assert "rsi_14_1h" in default_names("15m") and "rsi_14_15m" not in default_names("15m")


@pytest.mark.parametrize(
    ("name", "kind_params"),
    [("ema_34", (34,)), ("rsi_7", (7,)), ("atr_21", (21,)), ("sma_100", (100,)), ("bb_upper_50", (50,)),
     ("rsi_14_1h", (14,)), ("macd_hist_8_21_5", (8, 21, 5)), ("volume_ratio", (20,))],
)  # fmt: skip
def test_parametrised_names_parse(name: str, kind_params: tuple[int, ...]) -> None:
    spec = parse_name(name, interval="5m")
    assert spec.params[: len(kind_params)] == kind_params
    assert spec.tf == ("1h" if name.endswith("_1h") else None)


def test_parametrised_names_compute() -> None:
    df = random_walk(600, seed=4)
    c = df["close"].to_numpy()
    got = compute(df, ["ema_34", "rsi_7", "sma_100", "bb_upper_50", "atr_21"], interval="5m")
    np.testing.assert_allclose(got["ema_34"].to_numpy(), talib.EMA(c, 34), rtol=1e-12)
    np.testing.assert_allclose(got["sma_100"].to_numpy(), talib.SMA(c, 100), rtol=1e-12)
    np.testing.assert_allclose(
        got["bb_upper_50"].to_numpy(), talib.BBANDS(c, 50, 2, 2, 0)[0], rtol=1e-12
    )


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("rsl_14", "did you mean 'rsi_14'"),
        ("ema_1", "between 2 and 100000"),
        ("ema", "needs a period"),
        ("obv_14", "takes no period"),
        ("rsi_14_1m", "not a multiple of the base interval 5m"),
        ("rsi_14_5m", "is the base interval"),
        ("rsi_14_2m", "unknown timeframe"),
        ("funding_rate_1h", "no higher-timeframe variant"),
        ("bb_uper_50", "did you mean 'bb_upper_50'"),
        ("macd_signal_12_26", "fast_slow_signal"),
    ],
)
def test_bad_names_raise_config_error_with_a_fix(bad: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_names(["ema_9", bad], where="nodes.features.names", interval="5m")
    text = str(info.value)
    assert "nodes.features.names[1]" in text
    assert repr(bad) in text
    assert fragment in text


def test_duplicates_and_non_lists_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"listed twice"):
        check_names(["rsi_14", "rsi_14"])
    with pytest.raises(ConfigError, match=r"expected a list"):
        check_names("rsi_14")  # type: ignore[arg-type]


def test_compute_keeps_requested_columns_and_order() -> None:
    df = random_walk(100, seed=1)
    names = ["obv", "bb_upper", "bb_upper_20", "funding_rate", "ema_3_1h"]
    got = compute(df, names, interval="5m")
    assert got.columns == ["open_time", *names]
    assert all(got[n].dtype == pl.Float64 for n in names)
    np.testing.assert_array_equal(got["bb_upper"].to_numpy(), got["bb_upper_20"].to_numpy())
    assert got["funding_rate"].is_nan().all()  # no funding given
