"""Hand-built schedules: cutoffs, purge, embargo, window, stride and prefix invariance."""

from __future__ import annotations

import numpy as np

from engine.ml.walkforward import make_schedule, train_mask
from engine.strategy.ml_config import TrainingConfig

MIN = 60_000  # 1m bars keep the arithmetic readable


def sched(last, **tr):
    cfg = TrainingConfig(**{"train_window": 20, "retrain_every": 10, "warmup": 30, **tr})
    return make_schedule(
        run_start=0, last_open_time=last * MIN, interval_ms=MIN, training=cfg, horizon=3
    )


def test_cutoffs_anchored_to_start_and_prediction_ranges():
    s = sched(59)
    assert [f.cutoff // MIN for f in s.folds] == [30, 40, 50]
    assert [f.next_cutoff // MIN for f in s.folds] == [40, 50, 60]
    ot = np.arange(60, dtype=np.int64) * MIN
    assert np.flatnonzero(s.folds[0].predicts(ot)).tolist() == list(range(30, 40))
    # a fold exists once it has a bar to predict
    assert len(sched(49).folds) == 2 and len(sched(50).folds) == 3


def test_purge_drops_rows_whose_label_reaches_past_the_cutoff():
    s = sched(59)
    ot = np.arange(60, dtype=np.int64) * MIN
    f = s.folds[0]  # cutoff 30, window [10, ...)
    rows = np.flatnonzero(train_mask(ot, f, s)).tolist()
    # label of bar t is known at the close of bar t+3, i.e. at (t+4) min: needs t+4 <= 30
    assert rows == list(range(10, 27))
    assert 26 + 3 + 1 == 30  # the last row's label becomes known exactly at the cutoff


def test_embargo_adds_a_gap_before_the_cutoff():
    s = sched(59, embargo=6)
    ot = np.arange(60, dtype=np.int64) * MIN
    rows = np.flatnonzero(train_mask(ot, s.folds[0], s)).tolist()
    # bar t must have closed by cutoff - embargo: t + 1 <= 24
    assert rows == list(range(10, 24))
    s2 = sched(59, embargo="2m")
    assert np.flatnonzero(train_mask(ot, s2.folds[0], s2)).tolist() == list(range(10, 27))


def test_stride_is_anchored_to_the_run_start():
    s = sched(59)
    ot = np.arange(60, dtype=np.int64) * MIN
    rows = np.flatnonzero(train_mask(ot, s.folds[1], s, row_stride=4)).tolist()
    assert rows == [20, 24, 28, 32, 36]


def test_prefix_runs_have_the_same_folds():
    full = sched(200)
    for last in (35, 77, 130):
        short = sched(last)
        assert short.folds == full.folds[: len(short.folds)]
