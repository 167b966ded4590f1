"""Live parity: warm up on history, then feed bars one at a time -> the batch decisions."""

from __future__ import annotations

import numpy as np

from engine.ml.live import LiveEnsemble
from tests.ml.conftest import small_config


def test_live_steps_reproduce_the_batch_across_fold_rollovers(small, tmp_path):
    from engine.ml.pipeline import run_ensemble

    candles, feats = small
    cfg = small_config()
    batch = run_ensemble(
        cfg, {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=tmp_path
    ).symbols["BTCUSDT"]
    warm = 1500  # before the 2nd cutoff (day 6 = bar 1728): live must roll over folds 1..4 itself
    live = LiveEnsemble.from_history(
        cfg, candles.head(warm), feats.head(warm), symbol="BTCUSDT", results_dir=tmp_path / "live"
    )
    names = [c for c in feats.columns if c != "open_time"]
    rows = feats.select(names).to_numpy()
    ot = candles["open_time"].to_numpy()
    close = candles["close"].to_numpy()
    for t in range(warm, 4000):
        out = live.on_bar(int(ot[t]), float(close[t]), dict(zip(names, rows[t], strict=True)))
        np.testing.assert_array_equal(out["raw"], batch.raw[t])
        np.testing.assert_array_equal(out["probs"], batch.probs[t])
        assert out["p"] == batch.p[t] and out["direction"] == batch.direction[t], t
        assert out["gate_code"] == batch.gate_code[t] and out["uncertainty"] == batch.uncertainty[t]
        assert out["model_versions"]["lightgbm"] == batch.model_version("lightgbm")[t]
    assert len(live.pipe.sched.folds) == 5
