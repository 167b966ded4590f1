"""engine.metrics against hand computations, pandas/sklearn oracles and edge cases."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from engine.errors import RunError
from engine.metrics import (
    METRIC_KEYS,
    YEAR_MS,
    calibration_curve,
    classification_metrics,
    compute_metrics,
    roc_auc,
)

DAY = 86_400_000


def _trades(
    pnl: list[float], entries: list[int] | None = None, exits: list[int | None] | None = None
):
    data: dict[str, list] = {"pnl": pnl}
    if entries is not None:
        data["entry_time"] = entries
        data["exit_time"] = exits
    return pl.DataFrame(
        data, schema_overrides={"exit_time": pl.Int64} if entries is not None else None
    )


def test_hand_computed_daily_case() -> None:
    eq = [100.0, 110.0, 99.0, 120.0]
    m = compute_metrics(
        times_ms=[0, DAY, 2 * DAY, 3 * DAY],
        equity=eq,
        trades=_trades([10.0, -5.0, 0.0, 20.0, -15.0]),
        bar_interval_ms=DAY,
        funding_total=-1.25,
        fees_total=3.5,
        liquidations=1,
    )
    r1, r2, r3 = 0.1, 99 / 110 - 1, 120 / 99 - 1  # -0.1 and 0.2121...
    mean = (r1 + r2 + r3) / 3
    sd = math.sqrt(((r1 - mean) ** 2 + (r2 - mean) ** 2 + (r3 - mean) ** 2) / 2)
    assert m["total_return"] == pytest.approx(0.2, abs=1e-15)
    assert m["cagr"] == pytest.approx(1.2 ** (365 / 3) - 1, rel=1e-12)
    assert m["sharpe"] == pytest.approx(mean / sd * math.sqrt(365), rel=1e-12)
    assert m["sortino"] == pytest.approx(mean / math.sqrt(r2**2 / 3) * math.sqrt(365), rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(1 - 99 / 110, rel=1e-12)
    assert m["win_rate"] == 0.4
    assert m["profit_factor"] == 1.5
    assert (m["trades"], m["fees"], m["funding"], m["liquidations"]) == (5, 3.5, -1.25, 1)
    assert (m["final_equity"], m["initial_equity"], m["bars"]) == (120.0, 100.0, 4)
    assert list(m) == list(METRIC_KEYS)


def test_against_pandas_on_a_random_walk() -> None:
    rng = np.random.default_rng(7)
    eq = 1000 * np.cumprod(1 + rng.normal(0.0002, 0.004, 5000))
    bar = 300_000
    m = compute_metrics(times_ms=np.arange(5000) * bar, equity=eq, trades=None, bar_interval_ms=bar)
    s = pd.Series(eq)
    r = s.pct_change().dropna()
    periods = YEAR_MS / bar
    assert m["sharpe"] == pytest.approx(r.mean() / r.std() * np.sqrt(periods), rel=1e-10)
    assert m["max_drawdown"] == pytest.approx((1 - s / s.cummax()).max(), rel=1e-12)
    downside = np.sqrt((r.clip(upper=0) ** 2).mean())
    assert m["sortino"] == pytest.approx(r.mean() / downside * np.sqrt(periods), rel=1e-10)
    years = 4999 * bar / YEAR_MS
    assert m["cagr"] == pytest.approx((eq[-1] / eq[0]) ** (1 / years) - 1, rel=1e-9)


def test_exposure_from_trades_and_from_array() -> None:
    times = np.arange(10) * 1000
    trades = _trades([1.0, -1.0, 2.0], entries=[2000, 4000, 9000], exits=[5000, 7000, None])
    m = compute_metrics(
        times_ms=times, equity=np.full(10, 50.0), trades=trades, bar_interval_ms=1000
    )
    assert m["exposure"] == pytest.approx(0.6)  # bars 2,3,4,5,6 and 9 (still open)
    ex = np.array([0, 0, 5.0, -3.0, 0, 0, 0, 0, 0, 1.0])
    m = compute_metrics(
        times_ms=times, equity=np.full(10, 50.0), trades=trades, bar_interval_ms=1000, exposure=ex
    )
    assert m["exposure"] == pytest.approx(0.3)


def test_edge_cases_are_finite_and_zero() -> None:
    flat = compute_metrics(
        times_ms=np.arange(100) * DAY, equity=np.full(100, 10.0), trades=None, bar_interval_ms=DAY
    )
    assert flat["sharpe"] == 0.0 and flat["sortino"] == 0.0 and flat["max_drawdown"] == 0.0
    assert flat["total_return"] == 0.0 and flat["cagr"] == 0.0
    assert flat["trades"] == 0 and flat["win_rate"] == 0.0 and flat["profit_factor"] == 0.0
    assert flat["exposure"] == 0.0
    empty_trades = pl.DataFrame({"pnl": []}, schema={"pnl": pl.Float64})
    one = compute_metrics(times_ms=[0], equity=[5.0], trades=empty_trades, bar_interval_ms=DAY)
    assert one["sharpe"] == 0.0 and one["cagr"] == 0.0 and one["bars"] == 1
    ups = compute_metrics(
        times_ms=[0, DAY, 2 * DAY],
        equity=[1.0, 2.0, 3.0],
        trades=_trades([1.0, 1.0]),
        bar_interval_ms=DAY,
    )
    assert ups["sortino"] == 0.0 and ups["profit_factor"] == 0.0 and ups["win_rate"] == 1.0
    ruin = compute_metrics(
        times_ms=[0, DAY, 2 * DAY, 3 * DAY],
        equity=[1.0, 0.5, 0.0, 0.0],
        trades=None,
        bar_interval_ms=DAY,
    )
    assert ruin["cagr"] == -1.0 and ruin["total_return"] == -1.0 and ruin["max_drawdown"] == 1.0
    # a huge short-span gain is capped, not inf
    boom = compute_metrics(
        times_ms=[0, 60_000], equity=[1.0, 1e6], trades=None, bar_interval_ms=60_000
    )
    for m in (flat, one, ups, ruin, boom):
        assert all(math.isfinite(v) for v in m.values())
        orjson.dumps(m)  # JSON-serialisable (orjson refuses nothing here; NaN would be null)
        assert b"null" not in orjson.dumps(m)


def test_bad_inputs_raise_run_error() -> None:
    with pytest.raises(RunError, match="one length"):
        compute_metrics(times_ms=[0, 1], equity=[1.0], trades=None, bar_interval_ms=1)
    with pytest.raises(RunError, match="not finite at index 1"):
        compute_metrics(times_ms=[0, 1], equity=[1.0, float("nan")], trades=None, bar_interval_ms=1)
    with pytest.raises(RunError, match="strictly increasing"):
        compute_metrics(times_ms=[0, 0], equity=[1.0, 1.0], trades=None, bar_interval_ms=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e9, allow_nan=False), min_size=1, max_size=60))
def test_property_always_finite_and_bounded(values: list[float]) -> None:
    m = compute_metrics(
        times_ms=np.arange(len(values)) * 60_000, equity=values, trades=None, bar_interval_ms=60_000
    )
    assert all(math.isfinite(v) for v in m.values())
    assert 0.0 <= m["max_drawdown"] <= 1.0
    assert m["total_return"] >= -1.0


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 2000).round(3)  # rounding makes ties
    y = (rng.uniform(size=2000) < p).astype(int)
    got = classification_metrics(y, p, bins=10)
    assert got["n"] == 2000 and got["base_rate"] == pytest.approx(y.mean())
    assert got["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)
    assert got["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    frac, mean_pred = sk_calibration_curve(y, p, n_bins=10, strategy="uniform")
    curve = calibration_curve(y, p, bins=10)
    np.testing.assert_allclose([b["fraction_positive"] for b in curve], frac, rtol=1e-12)
    np.testing.assert_allclose([b["mean_predicted"] for b in curve], mean_pred, rtol=1e-12)
    ece = sum(b["count"] * abs(b["mean_predicted"] - b["fraction_positive"]) for b in curve) / 2000
    assert got["calibration_error"] == pytest.approx(ece)
    assert got["calibration_error"] < 0.05  # p is calibrated by construction


def test_classification_edge_cases() -> None:
    assert roc_auc([1, 1], [0.2, 0.9]) is None
    assert roc_auc([0, 1], [0.3, 0.7]) == 1.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert classification_metrics([], [])["n"] == 0
    # a boundary value lands in the bin sklearn puts it in: (lo, hi]
    assert calibration_curve([1, 0], [0.1, 0.0], bins=10) == [
        {"lo": 0.0, "hi": 0.1, "mean_predicted": 0.05, "fraction_positive": 0.5, "count": 2}
    ]


def test_labels_must_be_binary() -> None:
    with pytest.raises(RunError, match="labels must be 0 or 1"):
        classification_metrics([0, 1, -1], [0.2, 0.7, 0.4])
