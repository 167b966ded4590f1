from __future__ import annotations

import numpy as np
import pandas as pd

from engine.ml.labels import classify, forward_returns, label_known_at, make_labels
from engine.strategy.ml_config import LabelsConfig


def test_forward_returns_match_pandas_shift(btc_5m):
    close = btc_5m["close"].to_numpy()[:3000]
    h = 12
    oracle = np.log(pd.Series(close).shift(-h) / pd.Series(close)).to_numpy()
    got = forward_returns(close, horizon=h)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(oracle))
    np.testing.assert_allclose(got[:-h], oracle[:-h], rtol=0, atol=1e-15)
    simple = forward_returns(close, horizon=h, kind="simple")
    np.testing.assert_allclose(
        simple[:-h], (pd.Series(close).shift(-h) / pd.Series(close) - 1).to_numpy()[:-h], atol=1e-15
    )


def test_classes_net_of_costs_and_band():
    r = np.array([0.002, 0.0005, -0.0005, -0.002, 0.0011, np.nan])
    cfg = LabelsConfig(horizon=1, cost_bps=10)  # tau = 0.001
    np.testing.assert_array_equal(classify(r, cfg), [1, np.nan, np.nan, 0, 1, np.nan])
    band = LabelsConfig(horizon=1, cost_bps=10, flat_band_bps=5)  # tau = 0.0015
    np.testing.assert_array_equal(classify(r, band), [1, np.nan, np.nan, 0, np.nan, np.nan])
    keep = LabelsConfig(horizon=1, cost_bps=10, drop_flat=False)
    np.testing.assert_array_equal(classify(r, keep), [1, 1, 0, 0, 1, np.nan])


def test_label_uses_closes_t_to_t_plus_h_and_is_known_at_close_of_t_plus_h():
    close = np.array([100.0, 101, 99, 103, 98, 104])
    r, y = make_labels(close, LabelsConfig(horizon=2, cost_bps=0))
    assert r[0] == np.log(99 / 100) and y[0] == 0
    assert r[1] == np.log(103 / 101) and y[1] == 1
    assert np.isnan(r[4:]).all()
    ot = np.arange(6, dtype=np.int64) * 300_000
    # bar 0's label needs bar 2's close, which happens at open_time[2] + 5m
    np.testing.assert_array_equal(
        label_known_at(ot, horizon=2, interval_ms=300_000), ot + 3 * 300_000
    )
