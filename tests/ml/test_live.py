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


def test_two_symbols_share_each_cutoffs_pool_map_live_as_in_the_batch(small, small_eth, tmp_path):
    """The pool map is fitted over every symbol's out-of-fold bars: the batch run over both
    symbols and live mode (warmed up on both together, then rolling four folds itself, each
    symbol's roll asking the shared maps) give the same maps and the same decisions."""
    from engine.ml.pipeline import run_ensemble

    data = {"BTCUSDT": small, "ETHUSDT": small_eth}
    cfg = small_config(ensemble={"pool_map_min_rows": 300})
    batch = run_ensemble(
        cfg, {s: c for s, (c, _) in data.items()}, {s: f for s, (_, f) in data.items()},
        results_dir=tmp_path,
    )
    warm = 1500
    live = LiveEnsemble.from_histories(
        cfg,
        {s: c.head(warm) for s, (c, _) in data.items()},
        {s: f.head(warm) for s, (_, f) in data.items()},
        results_dir=tmp_path / "live",
    )
    names = [c for c in small[1].columns if c != "open_time"]
    for t in range(warm, 4000):
        for s, (c, f) in data.items():
            row = f.row(t, named=True)
            out = live[s].on_bar(
                int(c["open_time"][t]), float(c["close"][t]), {n: row[n] for n in names}
            )
            b = batch.symbols[s]
            assert out["p"] == b.p[t] and out["direction"] == b.direction[t], (s, t)
            assert out["pool_x"] == b.pool_x[t] and out["gate_code"] == b.gate_code[t], (s, t)
    maps = {s: batch.pipelines[s].pool_maps for s in data}
    assert maps["BTCUSDT"] == maps["ETHUSDT"]  # one map per cutoff for the run
    fitted = [k for k, m in maps["BTCUSDT"].items() if m != (1.0, 0.0)]
    assert len(fitted) >= 3, maps["BTCUSDT"]  # the map is fitted, not the identity
    for s in data:
        assert len(live[s].pipe.sched.folds) == 5
        assert live[s].pipe.pool_maps == maps[s]  # the live rolls fitted the same maps
