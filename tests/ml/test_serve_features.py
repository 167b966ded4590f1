"""POST /predict with raw candles and funding events, for a model on strategies/ensemble.yaml's
30 features (5m, 15m and 1h indicators, funding rate, minutes to funding): the server's
FeatureStream (the engine's own) gives the probabilities of the batch features, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.decisions.decide import compute_features
from engine.decisions.market import load_graph_market
from engine.features import compute
from engine.ml.models import load_model
from engine.ml.models.base import Segment, TrainSet
from engine.ml.serve import ModelService, ServerThread
from engine.strategy import load_strategy

from .serve_helpers import call, candle_dicts, labels_of, make_version

ROOT = Path(__file__).resolve().parents[2]
TRAIN, WINDOW = 1200, 1000  # bars fitted on; bars then sent as candles


def test_candles_and_funding_give_the_batch_features_answers(usdm_store, tmp_path):
    graph = load_strategy(
        ROOT / "strategies" / "ensemble.yaml",
        symbols=["BTCUSDT"],
        start="2023-01-01",
        end="2023-01-08T12:00",
    )
    market = load_graph_market(graph, store=usdm_store)
    candles, funding = market.candles["BTCUSDT"], market.funding["BTCUSDT"]
    names = list(graph.feature_columns)
    assert len(names) == 30 and "funding_rate" in names and "adx_14_1h" in names
    X = compute_features(graph, candles, funding).select(names).to_numpy()
    y = labels_of(candles["close"].to_numpy(), 12)
    ok = np.isfinite(X[:TRAIN]).all(axis=1) & np.isfinite(y[:TRAIN])
    folder = make_version(
        tmp_path,
        "lightgbm",
        TrainSet(X[:TRAIN][ok], y[:TRAIN][ok]),
        features=names,
        version="lightgbm-30",
    )
    window = candles[TRAIN : TRAIN + WINDOW]
    # the batch features of the window alone (the server's stream starts at its first candle)
    feats = compute(window, names, funding=funding, interval="5m").select(names).to_numpy()
    local = load_model("lightgbm", folder, json.loads((folder / "meta.json").read_text())["params"])
    ot = window["open_time"].to_numpy()
    want = local.predict_proba(Segment(ot, window["close"].to_numpy(), feats))
    assert np.isfinite(want).sum() > WINDOW // 2  # warm for most of the window
    events = [
        {"funding_time": int(t), "funding_rate": float(r)}
        for t, r in funding.filter(funding["funding_time"] <= int(ot[-1])).iter_rows()
    ]
    with ServerThread(ModelService.from_path(folder)) as server:
        status, out = call(
            server.url + "/predict", {"candles": candle_dicts(window), "funding": events}
        )
    assert status == 200, out
    got = np.array(out["probabilities"], dtype=np.float64)
    np.testing.assert_array_equal(got, want)
