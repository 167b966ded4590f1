"""run_ensemble end to end on real bars: determinism, reuse, prefix invariance, OOF-only calibration."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ml.pipeline import run_ensemble
from tests.ml.conftest import small_config

DECISION_KEYS = (
    "p",
    "agreement",
    "uncertainty",
    "payoff_ratio",
    "expected_value",
    "direction",
    "gate_code",
)


def run(cfg, candles, feats, tmp, **kw):
    return run_ensemble(cfg, {"BTCUSDT": candles}, {"BTCUSDT": feats}, results_dir=tmp, **kw)


@pytest.fixture(scope="module")
def full(small, tmp_path_factory):
    candles, feats = small
    d = tmp_path_factory.mktemp("full")
    return run(small_config(), candles, feats, d), d


def test_outputs_and_versions(full):
    res, d = full
    r = res.symbols["BTCUSDT"]
    sched = res.schedule["BTCUSDT"]
    assert len(sched.folds) == 5  # cutoffs at day 4, 6, 8, 10, 12 of ~13.9 days
    assert res.n_fitted == 10 and res.n_reused == 0
    first = sched.folds[0].cutoff
    before = r.open_time < first
    assert np.isnan(r.raw[before]).all() and (r.direction[before] == 0).all()
    assert np.isfinite(r.raw[~before]).mean() > 0.95
    assert set(np.unique(r.direction)) <= {-1, 0, 1} and (r.direction != 0).any()
    v = r.model_version("lightgbm")
    assert v[before].tolist() == [None] * int(before.sum())
    assert len(set(v[~before])) == 5 and all(
        (d / "models" / x / "model.txt").is_file() for x in set(v[~before])
    )
    m = res.metrics
    assert (
        set(m["model"]) == {"lightgbm", "mlp", "ensemble"} and m.filter(m["fold"] == -1).height == 3
    )
    pooled = m.filter((m["fold"] == -1) & (m["model"] == "lightgbm")).row(0, named=True)
    assert 0.3 < pooled["auc"] < 0.7 and pooled["n"] > 1000 and 0 <= pooled["ece"] < 0.2
    dec = r.decisions_frame()
    assert dec.height == r.open_time.shape[0] and "gate_reason" in dec.columns


def test_rerun_reuses_models_and_a_fresh_training_is_identical(full, small, tmp_path):
    res, d = full
    candles, feats = small
    again = run(small_config(), candles, feats, d)
    assert again.n_fitted == 0 and again.n_reused == 10
    fresh = run(small_config(), candles, feats, tmp_path)
    assert fresh.n_fitted == 10
    a, b, c = res.symbols["BTCUSDT"], again.symbols["BTCUSDT"], fresh.symbols["BTCUSDT"]
    for other in (b, c):
        np.testing.assert_array_equal(other.raw, a.raw)
        np.testing.assert_array_equal(other.probs, a.probs)
        for k in DECISION_KEYS:
            np.testing.assert_array_equal(getattr(other, k), getattr(a, k), err_msg=k)
    assert c.versions == a.versions


def test_prefix_invariance(full, small, tmp_path):
    """A run that ends at an earlier bar gives the same decisions for its bars."""
    res, _ = full
    candles, feats = small
    a = res.symbols["BTCUSDT"]
    rng = np.random.default_rng(11)
    for end in sorted(rng.integers(1300, 3900, 2)):
        short = run(
            small_config(), candles.head(int(end)), feats.head(int(end)), tmp_path / str(end)
        )
        s = short.symbols["BTCUSDT"]
        np.testing.assert_array_equal(s.raw, a.raw[:end])
        for k in DECISION_KEYS:
            np.testing.assert_array_equal(
                getattr(s, k), getattr(a, k)[:end], err_msg=f"{k} end={end}"
            )
        assert [f.cutoff for f in short.schedule["BTCUSDT"].folds] == [
            f.cutoff
            for f in res.schedule["BTCUSDT"].folds
            if f.cutoff <= candles["open_time"][int(end) - 1]
        ]


def test_calibration_uses_out_of_fold_rows_known_at_the_cutoff(full):
    """Changing everything from a fold's cutoff on leaves that fold's calibrators unchanged."""
    res, _ = full
    r = res.symbols["BTCUSDT"]
    from engine.ml.symbol_pipeline import SymbolPipeline

    sched = res.schedule["BTCUSDT"]
    fold = sched.folds[3]

    def calibrate(raw, y):
        p = SymbolPipeline.__new__(SymbolPipeline)  # only what calibrate reads
        p.sd = type("SD", (), {"open_time": r.open_time, "interval_ms": 300_000, "y": y})()
        p.ml = small_config()
        p.names = r.model_names
        p.calibrators, p.coefs, p.bases, p.metas, p.pool_maps = {}, {}, {}, {}, {}
        for f in sched.folds[: fold.index + 1]:  # earlier folds' base rates, then this fold
            SymbolPipeline.calibrate(p, f, raw, r.probs, r.fold)
        return p

    fitted = calibrate(r.raw, r.labels)
    base = {k: c for k, c in fitted.calibrators.items() if k[0] == fold.index}
    raw2, y2, x2 = r.raw.copy(), r.labels.copy(), r.pool_x.copy()
    late = r.open_time + 7 * 300_000 > fold.cutoff  # labels not known at the cutoff
    raw2[late] = 0.99
    y2[late] = 1 - np.nan_to_num(y2[late])
    x2[late] = 3.0
    moved = calibrate(raw2, y2)
    other = moved.calibrators
    # the pool map's rows too: out-of-fold bars known at the cutoff only
    rows = fitted.pool_rows(fold, r.open_time, r.labels, r.fold, r.pool_x)
    assert rows[0].size > 100 and (rows[0] != 0).any()
    for a, b in zip(rows, moved.pool_rows(fold, r.open_time, y2, r.fold, x2), strict=True):
        np.testing.assert_array_equal(a, b)
    for key, cal in base.items():
        assert cal.kind == "isotonic" and cal.n > 100
        np.testing.assert_array_equal(cal.x, other[key].x)
        np.testing.assert_array_equal(cal.y, other[key].y)
        assert (cal.base, cal.lam) == (other[key].base, other[key].lam)
    assert base[(3, "lightgbm")].n < int((r.fold >= 0).sum())
    # fold 0 has no out-of-fold history: every member forecasts the base rate known at its
    # cutoff (the share of up-labels among the bars whose label is known there)
    p0 = r.fold == 0
    known = r.open_time + 7 * 300_000 <= sched.folds[0].cutoff
    rate = np.nanmean(r.labels[known])
    np.testing.assert_allclose(r.probs[p0], rate, rtol=1e-9)


def test_stacked_and_weighted_fusion_run(full, small, tmp_path):
    res, d = full
    candles, feats = small
    for ens in (
        {"fusion": "stacked"},
        {"fusion": "weighted", "weights": {"lightgbm": 2.0, "mlp": 1.0}, "calibration": "platt"},
    ):
        out = run(small_config(ensemble=ens), candles, feats, d)
        assert out.n_fitted == 0  # the ensemble section does not change the model versions
        r = out.symbols["BTCUSDT"]
        assert np.isfinite(r.p).all() and (r.direction != 0).any()


def test_remote_model_that_cannot_be_reached_abstains_with_an_event(small, tmp_path):
    candles, feats = small
    cfg = small_config(
        models=[
            {"kind": "lightgbm", "params": {"n_estimators": 10, "min_data_in_leaf": 20}},
            {
                "kind": "remote",
                "url": "http://127.0.0.1:9",
                "timeout_s": 0.3,
                "features": ["rsi_14", "bb_pct"],
            },
        ]
    )
    r = run(cfg, candles.head(1800), feats.head(1800), tmp_path)
    s = r.symbols["BTCUSDT"]
    assert np.isnan(s.raw[:, 1]).all() and np.isfinite(s.raw[s.fold >= 0, 0]).any()
    assert r.events and all(e["component"] == "ml.remote.remote" for e in r.events)


def test_bad_feature_name_is_a_config_error(small, tmp_path):
    from engine.errors import ConfigError

    candles, feats = small
    cfg = small_config(models=[{"kind": "lightgbm", "features": ["rsi_41"]}])
    with pytest.raises(ConfigError, match="did you mean 'rsi_14'"):
        run(cfg, candles, feats, tmp_path)
    assert not any((tmp_path / "models").iterdir())


def test_prefix_invariance_with_xgboost_and_prophet(small, tmp_path):
    candles, feats = small
    cfg = small_config(
        models=[
            {"kind": "xgboost", "params": {"n_estimators": 10, "max_depth": 3}},
            {"kind": "prophet", "params": {"window": "3d", "n_changepoints": 3}},
        ]
    )
    n, end = 2600, 2077
    a = run(cfg, candles.head(n), feats.head(n), tmp_path / "full").symbols["BTCUSDT"]
    s = run(cfg, candles.head(end), feats.head(end), tmp_path / "short").symbols["BTCUSDT"]
    assert np.isfinite(a.raw[a.fold >= 0]).mean() > 0.9
    np.testing.assert_array_equal(s.raw, a.raw[:end])
    for k in DECISION_KEYS:
        np.testing.assert_array_equal(getattr(s, k), getattr(a, k)[:end], err_msg=k)


def test_progress_goes_through_the_protocol_and_nothing_is_drawn(small, tmp_path, capfd):
    """Fits and predictions are reported as ``progress(task, done, total)``; the library
    prints nothing (only the CLI draws)."""
    candles, feats = small
    seen: list[tuple[str, int, int | None]] = []

    def progress(task: str, done: int, total: int | None) -> None:
        seen.append((task, done, total))

    res = run(small_config(), candles.head(2600), feats.head(2600), tmp_path, progress=progress)
    n = res.n_fitted
    assert n > 0
    assert [s for s in seen if s[0] == "training folds"] == [
        ("training folds", k, n) for k in range(n + 1)
    ]
    assert [s for s in seen if s[0] == "predicting"] == [("predicting", 0, 1), ("predicting", 1, 1)]
    assert capfd.readouterr() == ("", "")
    seen.clear()
    again = run(small_config(), candles.head(2600), feats.head(2600), tmp_path, progress=progress)
    assert again.n_fitted == 0 and [s[0] for s in seen] == ["predicting", "predicting"]
