"""``engine lookahead``: clean graphs pass (exit 0); a planted lookahead is caught (exit 1).

Two plants: a feature that reads the next bar (the features frame's ``ema_9`` shifted one
bar forward, as a buggy indicator would compute it), and the label leaking into a model's
inputs (the ML stage's feature matrix given the forward return its labels are made of).
Both are planted by wrapping the engine's own function inside the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.lookahead import differ, pick_cuts
from tests.lookahead.conftest import EMA, lookahead

SPAN = ["--start", "2023-03-01", "--end", "2023-03-06"]


def _columns(report: dict) -> set[tuple[str, str, str]]:
    return {(d["kind"], d["symbol"], d["column"]) for d in report["differing_columns"]}


def test_clean_rule_graph_passes(usdm_store: Path, tmp_path: Path) -> None:
    code, r = lookahead(
        str(EMA), "--cuts", "4", "--seed", "3", *SPAN, store=usdm_store, results=tmp_path
    )
    assert code == 0 and r["ok"] and r["differences"] == []
    assert len(r["cuts"]) == 4 and r["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert r["columns"] == {"feature": 4, "prediction": 0, "decision": 11}
    assert all(c["compared"] == 15 * (c["bar"] + 1) for c in r["cuts"])  # 15 columns, all bars
    assert sorted({c["bar"] for c in r["cuts"]}) == [c["bar"] for c in r["cuts"]]


def test_feature_reading_the_next_bar_is_caught(
    usdm_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.decisions.decide as decide_mod

    honest = decide_mod.compute_features

    def next_bar_ema(graph, candles, funding):  # type: ignore[no-untyped-def]
        return honest(graph, candles, funding).with_columns(pl.col("ema_9").shift(-1))

    monkeypatch.setattr(decide_mod, "compute_features", next_bar_ema)
    code, r = lookahead(
        str(EMA), "--cuts", "3", "--seed", "3", *SPAN, store=usdm_store, results=tmp_path
    )
    assert code == 1 and not r["ok"]
    found = _columns(r)
    assert {("feature", s, "ema_9") for s in ("BTCUSDT", "ETHUSDT")} <= found
    assert ("feature", "BTCUSDT", "ema_50") not in found
    feats = [d for d in r["differences"] if d["kind"] == "feature"]
    # every cut catches it on exactly its last bar, where the prefix cannot see the next one
    assert len(feats) == 6 and all(d["bars"] == 1 for d in feats)
    assert all(d["first_time"] == d["cut_time"] and d["prefix"] is None for d in feats)
    assert all(d["full"] is not None for d in feats)
    # one cut given by time reruns a finding alone
    code, r = lookahead(
        str(EMA),
        "--cuts",
        "0",
        "--at",
        "2023-03-03T12:00",
        *SPAN,
        store=usdm_store,
        results=tmp_path,
    )
    assert code == 1 and [c["time"] for c in r["cuts"]] == [1677844800000]
    assert {("feature", "BTCUSDT", "ema_9"), ("feature", "ETHUSDT", "ema_9")} <= _columns(r)
    # the table says the same
    from typer.testing import CliRunner

    from engine.cli import app

    args = ["lookahead", str(EMA), "--cuts", "0", "--at", "2023-03-03T12:00", *SPAN]
    proc = CliRunner().invoke(app, [*args, "--store", str(usdm_store), "--results", str(tmp_path)])
    assert proc.exit_code == 1
    text = " ".join(proc.stdout.split())
    assert "feature BTCUSDT ema_9" in text and "output columns differ" in text


def test_bad_cut_is_a_usage_error(usdm_store: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    args = ["lookahead", str(EMA), "--cuts", "0", "--at", "2023-03-03T12:01", *SPAN]
    proc = CliRunner().invoke(app, [*args, "--store", str(usdm_store), "--results", str(tmp_path)])
    assert proc.exit_code == 2 and "--at: no bar of the run opens at" in proc.stderr


def test_clean_walk_forward_ensemble_passes(
    ml_strategy: Path, usdm_store: Path, tmp_path: Path
) -> None:
    code, r = lookahead(
        str(ml_strategy), "--cuts", "2", "--seed", "1", store=usdm_store, results=tmp_path
    )
    assert code == 0 and r["ok"], r["differing_columns"]
    assert r["columns"]["prediction"] >= 2 * 4 + 5  # raw, calibrated, weight, version per member
    day = 288
    assert r["first_live_bar"] == 4 * day  # the first cutoff: warm-up 4 days
    for c in r["cuts"]:
        assert c["bar"] > r["first_live_bar"]
        assert (c["bar"] - 4 * day) % (2 * day) not in (0, 2 * day - 1)  # mid-fold


def test_label_leaking_into_a_model_is_caught(
    ml_strategy: Path, usdm_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.ml.inputs as inputs

    honest = inputs.symbol_data

    def leaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        sd = honest(*args, **kwargs)
        for name, x in sd.X.items():
            if x.shape[1]:
                x = x.copy()
                x[:, 0] = sd.fwd  # the forward return the labels are made of
                sd.X[name] = x
        return sd

    monkeypatch.setattr(inputs, "symbol_data", leaky)
    code, r = lookahead(
        str(ml_strategy), "--cuts", "2", "--seed", "1", store=usdm_store, results=tmp_path
    )
    assert code == 1 and not r["ok"]
    found = _columns(r)
    assert not any(kind == "feature" for kind, _, _ in found)  # the features are honest
    members = {("prediction", "BTCUSDT", f"raw[{m}]") for m in ("lightgbm", "mlp")}
    assert members | {("prediction", "BTCUSDT", "gate_code")} <= found
    raw = [d for d in r["differences"] if d["column"] == "raw[lightgbm]"]
    # caught on each cut's last 6 bars (the horizon), whose forward return the prefix does
    # not know yet: there the prefix's model abstains, the whole run's predicts
    assert len(raw) == 2 and all(d["bars"] == 6 for d in raw)
    assert all(d["cut_time"] - d["first_time"] == 5 * 300_000 for d in raw)
    assert all(d["prefix"] is None and d["full"] is not None for d in raw)


def test_equality_and_cuts() -> None:
    nan = np.nan
    assert not differ(np.array([nan, -0.0, 1.0]), np.array([nan, 0.0, 1.0])).any()
    assert differ(np.array([1.0]), np.array([1.0 + 1e-16 * 2])).all()
    assert differ(np.array([1, 0], dtype=np.int8), np.array([1, 1], dtype=np.int8)).tolist() == [
        False,
        True,
    ]
    cuts = pick_cuts(1000, 100, 5, seed=9)
    assert len(cuts) == 5 and all(100 < k < 999 for k in cuts) and cuts == sorted(cuts)
    assert pick_cuts(1000, 100, 5, seed=9) == cuts != pick_cuts(1000, 100, 5, seed=10)


def test_edge_cuts_pass_on_a_clean_ensemble(
    ml_strategy: Path, usdm_store: Path, tmp_path: Path
) -> None:
    """Cuts at edges: funding times, 15m closes and each fold's cutoff plus the label horizon."""
    code, r = lookahead(
        str(ml_strategy),
        "--cuts",
        "0",
        "--edges",
        "6",
        "--seed",
        "2",
        store=usdm_store,
        results=tmp_path,
    )
    assert code == 0 and r["ok"], r["differing_columns"]
    start, day, bar = 1677628800000, 86_400_000, 300_000
    cutoffs = [start + (4 + 2 * k) * day for k in range(4)]
    kinds = sorted(c["kind"] for c in r["cuts"])
    assert kinds == [f"edge: {k}" for k in ("15m close", "fold cutoff", "funding") for _ in "ab"]
    for c in r["cuts"]:
        t = c["time"]
        if c["kind"] == "edge: 15m close":
            assert (t + bar) % 900_000 == 0
        elif c["kind"] == "edge: funding":
            assert (t + bar) % (8 * 3_600_000) == 0
        else:
            assert any(0 <= t - x <= 6 * bar for x in cutoffs)


def test_a_run_ending_just_before_a_funding_time(usdm_store: Path, tmp_path: Path) -> None:
    """A run ending on the bar before a funding time reads, at its last bar, the rate settled
    at that bar's close, as a longer run does (engine lookahead found this: the market loaded
    funding only up to the last bar's open, engine.decisions.market._funding)."""
    from tests.lookahead.conftest import ML_CONFIG

    path = tmp_path / "with_funding_rate.yaml"
    path.write_text(ML_CONFIG.replace("rsi_14_15m]", "rsi_14_15m, funding_rate]"))
    code, r = lookahead(
        str(path), "--cuts", "0", "--at", "2023-03-06T07:55", store=usdm_store, results=tmp_path
    )
    assert code == 0, r["differing_columns"]
    assert not _columns(r)


def test_training_on_unmatured_labels_is_caught_at_a_fold_edge(
    ml_strategy: Path, usdm_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold schedule without purge and embargo trains on rows whose labels mature after
    its cutoff: a run ending within the label horizon after the cutoff cannot know them yet,
    so it fits another model (another version) and predicts otherwise than the whole run. A
    cut in the middle of a fold does not see it: the edges are where it shows."""
    import dataclasses

    import engine.ml.pipeline as pipeline

    honest = pipeline.make_schedule

    def no_purge(**kw):  # type: ignore[no-untyped-def]
        return dataclasses.replace(honest(**kw), horizon=0, embargo=0)

    monkeypatch.setattr(pipeline, "make_schedule", no_purge)
    code, r = lookahead(
        str(ml_strategy),
        "--cuts",
        "0",
        "--at",
        "2023-03-09T00:10",
        "--at",
        "2023-03-10T00:00",
        store=usdm_store,
        results=tmp_path,
    )
    assert code == 1 and [c["kind"] for c in r["cuts"]] == ["given", "given"]
    found = _columns(r)
    assert ("prediction", "BTCUSDT", "version[lightgbm]") in found
    assert ("prediction", "BTCUSDT", "raw[lightgbm]") in found
    assert not any(kind == "feature" for kind, _, _ in found)
    # caught at the cut 2 bars after the cutoff of 2023-03-09 (the rows 2302..2303 before it
    # have up/down labels maturing after the cut), not at the mid-fold cut
    assert r["cuts"][0]["differences"] > 0 and r["cuts"][1]["differences"] == 0
