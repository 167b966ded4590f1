"""Benchmark: strategies/ensemble.yaml end to end, training vs inference + simulation, beside
the naive live path (the same LightGBM model predicted row by row in a Python loop).

    ENGINE_LOCAL_DATA=../shared/data/binance-usdm python bench/ensemble.py [--store DIR] [--naive-rows N]

Targets (issue 5): walk-forward training with monthly retrains over the 16 months < 120 s;
inference + simulation for 2 symbols x 143,900 bars < 3 s. Correctness first: a second run
that reuses the saved models must give bit-identical decisions, and the row-by-row LightGBM
loop must reproduce the batch predictions exactly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="data store (default $ENGINE_DATA or ./data)")
    ap.add_argument(
        "--naive-rows", type=int, default=20_000, help="rows timed in the row-by-row loop"
    )
    args = ap.parse_args()

    from engine.decisions.decide import compute_features
    from engine.decisions.market import load_market
    from engine.backtest.runner import simulate_graph
    from engine.ml import decide
    from engine.ml.models.base import Segment
    from engine.strategy import load_strategy

    graph = load_strategy(ROOT / "strategies" / "ensemble.yaml")
    d = graph.config.data
    t = time.perf_counter()
    market = load_market(
        graph.symbols,
        d.interval,
        start=d.start,
        end=d.end,
        store=args.store,
        funding=d.funding,
        market=d.market,
    )
    features = {
        s: compute_features(graph, market.candles[s], market.funding.get(s)) for s in market.symbols
    }
    load_s = time.perf_counter() - t
    n_bars = market.n_bars

    with tempfile.TemporaryDirectory() as tmp:
        # 1. training: every fold of every model from scratch (models saved under tmp/models)
        t = time.perf_counter()
        dec1 = decide(graph, market, features, results_dir=tmp)
        first_s = time.perf_counter() - t
        res1 = dec1.ml
        train_s = res1.train_seconds
        # 2. inference + simulation: the same run again, models reused (warm process)
        t = time.perf_counter()
        dec2 = decide(graph, market, features, results_dir=tmp)
        infer_s = time.perf_counter() - t
        res2 = dec2.ml
        plan_s = res2.train_seconds  # nothing to fit: planning = model version checks
        rest_s = infer_s - plan_s - res2.predict_seconds
        assert res2.n_fitted == 0, "the second run should reuse every model"
        for name in ("state", "probability"):
            np.testing.assert_array_equal(getattr(dec1, name), getattr(dec2, name))
        simulate_graph(graph, market, dec2, features)  # warm: numba compiles the risk path once
        t = time.perf_counter()
        sim = simulate_graph(graph, market, dec2, features)
        sim_s = time.perf_counter() - t

        # 3. the naive live path: one LightGBM fold model, one row at a time
        from engine.ml.models import load_model

        sym = market.symbols[0]
        r = res2.symbols[sym]
        j = r.model_names.index("lightgbm")
        fold = len(r.versions["lightgbm"]) // 2
        version = r.versions["lightgbm"][fold]
        node = next(m for m in graph.config.models if m.name == "lightgbm")
        model = load_model("lightgbm", Path(tmp) / "models" / version, node.params, threads=1)
        X = (
            features[sym]
            .select(node.features or [c for c in features[sym].columns if c != "open_time"])
            .to_numpy()
        )
        rows = np.flatnonzero(np.isfinite(X).all(axis=1))[-args.naive_rows :]
        batch = model.booster.predict(X[rows], num_threads=1)
        t = time.perf_counter()
        loop = np.array([model.booster.predict(X[i : i + 1], num_threads=1)[0] for i in rows])
        naive_s = time.perf_counter() - t
        np.testing.assert_array_equal(loop, batch)
        seg = Segment(r.open_time[rows], np.ones(rows.size), X[rows])
        np.testing.assert_array_equal(model.predict_proba(seg), batch)
        del j

    naive_full = naive_s / rows.size * (2 * n_bars)
    bars = 2 * n_bars
    print(
        f"ensemble.yaml: {len(market.symbols)} symbols x {n_bars:,} 5m bars, "
        f"{res1.n_fitted} model fits over {len(res1.schedule[sym].folds)} monthly folds per symbol"
    )
    print(f"  load + features                 {load_s:8.2f} s")
    print(
        f"  walk-forward training           {train_s:8.2f} s   target < 120 s  ({train_s / 120:.2f}x of target)"
    )
    print(f"  first run, ML stage total       {first_s:8.2f} s   (training + planning + inference)")
    print(f"  inference (models reused)       {infer_s:8.2f} s")
    print(
        f"    of which versioning {plan_s:.2f} s, predict+calibrate+fuse {res2.predict_seconds:.2f} s, "
        f"inputs + fold metrics + log frames {rest_s:.2f} s"
    )
    print(f"  simulation (warm)               {sim_s:8.2f} s")
    tot = infer_s + sim_s
    print(
        f"  inference + simulation          {tot:8.2f} s   target < 3 s   ({tot / 3:.2f}x of target)"
    )
    print(
        f"  naive live loop, LightGBM only  {naive_s / rows.size * 1e6:8.1f} us/row over {rows.size:,} rows "
        f"-> {naive_full:.1f} s for {bars:,} bars (extrapolated)"
    )
    print(
        f"  ratio naive LightGBM loop / whole batch inference+simulation: {naive_full / tot:.1f}x"
    )
    print(f"  trades {int(sim.fills.size)} fills; final equity {float(sim.equity[-1]):.2f}")


if __name__ == "__main__":
    main()
