"""Benchmark: strategies/ensemble.yaml end to end, training vs inference + simulation, beside
the naive live path (the same LightGBM model predicted row by row in a Python loop).

    ENGINE_LOCAL_DATA=../shared/data/binance-usdm python bench/ensemble.py [--store DIR] [--naive-rows N]

Targets (issue 5): walk-forward training with monthly retrains over the 16 months < 120 s;
inference + simulation for 2 symbols x 143,900 bars < 3 s. Correctness first: a second run
that reuses the saved models must give bit-identical decisions, and the row-by-row LightGBM
loop must reproduce the batch predictions exactly. ``--end`` shortens the span (a smoke run).

Model serving (issue 14): the same LightGBM fold model behind ``engine serve-model`` (its own
process, 127.0.0.1), asked for one 30-feature row at a time by the engine's ``remote`` node
(client -> server -> prediction -> client), round trip p50/p99 beside the in-process
``predict_proba`` of the same row; the answers are checked equal first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.backtest.runner import simulate_graph
from engine.decisions.decide import compute_features
from engine.decisions.market import load_graph_market
from engine.decisions.ml_slot import decide
from engine.ml.models import load_model
from engine.ml.models.base import Segment
from engine.strategy import load_strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_model import measure, report  # noqa: E402 - bench/serve_model.py beside this file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="data store (default $ENGINE_DATA or ./data)")
    ap.add_argument(
        "--naive-rows", type=int, default=20_000, help="rows timed in the row-by-row loop"
    )
    ap.add_argument("--end", default=None, help="last bar (default: the strategy's data.end)")
    ap.add_argument(
        "--fusion",
        default=None,
        help="ensemble.fusion override (stacked_lgbm: the meta-learner is fitted in the first "
        "run and reused in the timed one, like the members)",
    )
    ap.add_argument(
        "--round-trips", type=int, default=2000, help="one-row requests timed against serve-model"
    )
    args = ap.parse_args()

    over = {"ensemble.fusion": args.fusion} if args.fusion else {}
    graph = load_strategy(ROOT / "strategies" / "ensemble.yaml", end=args.end, overrides=over)
    t = time.perf_counter()
    market, features = _inputs(graph, args.store)
    timings = {"load": time.perf_counter() - t}
    with tempfile.TemporaryDirectory() as tmp:
        res1, res2, sim = _ml_and_simulation(graph, market, features, tmp, timings)
        naive_s, rows = _naive_loop(graph, market, features, res2, tmp, args.naive_rows)
        folder, _, X, open_time = _lightgbm_fold(graph, market, features, res2, tmp)
        serve = measure(folder, X, open_time, n=args.round_trips)
    _report(market, res1, res2, sim, timings, naive_s, rows)
    report(serve)  # bench/serve_model.py's: aiohttp client, the remote node, in process


def _inputs(graph: Any, store: str | None) -> tuple[Any, dict[str, Any]]:
    """The market of the strategy's data section and each symbol's features."""
    market = load_graph_market(graph, store=store)
    features = {
        s: compute_features(graph, market.candles[s], market.funding.get(s)) for s in market.symbols
    }
    return market, features


def _ml_and_simulation(
    graph: Any, market: Any, features: dict[str, Any], tmp: str, timings: dict[str, float]
) -> tuple[Any, Any, Any]:
    """Train every fold from scratch, run again with the models reused (checking the
    decisions are bit-identical), then simulate warm."""
    t = time.perf_counter()
    dec1 = decide(graph, market, features, results_dir=tmp)
    timings["first"] = time.perf_counter() - t
    t = time.perf_counter()
    dec2 = decide(graph, market, features, results_dir=tmp)
    timings["infer"] = time.perf_counter() - t
    assert dec2.ml.n_fitted == 0, "the second run should reuse every model"
    for name in ("state", "probability"):
        np.testing.assert_array_equal(getattr(dec1, name), getattr(dec2, name))
    simulate_graph(graph, market, dec2, features)  # warm: numba compiles the risk path once
    t = time.perf_counter()
    sim = simulate_graph(graph, market, dec2, features)
    timings["sim"] = time.perf_counter() - t
    return dec1.ml, dec2.ml, sim


def _lightgbm_fold(
    graph: Any, market: Any, features: dict[str, Any], res: Any, tmp: str
) -> tuple[Path, Any, np.ndarray, np.ndarray]:
    """A LightGBM fold model of the first symbol (its version folder, the loaded model), the
    symbol's feature matrix in the model's columns and its open times."""
    sym = market.symbols[0]
    r = res.symbols[sym]
    version = r.versions["lightgbm"][len(r.versions["lightgbm"]) // 2]
    node = next(m for m in graph.config.models if m.name == "lightgbm")
    folder = Path(tmp) / "models" / version
    model = load_model("lightgbm", folder, node.params, threads=1)
    cols = node.features or [c for c in features[sym].columns if c != "open_time"]
    return folder, model, features[sym].select(cols).to_numpy(), r.open_time


def _naive_loop(
    graph: Any, market: Any, features: dict[str, Any], res: Any, tmp: str, n_rows: int
) -> tuple[float, np.ndarray]:
    """One LightGBM fold model, one row at a time (the naive live path), checked equal to
    the batch prediction and to the engine's own predict_proba."""
    _, model, X, open_time = _lightgbm_fold(graph, market, features, res, tmp)
    rows = np.flatnonzero(np.isfinite(X).all(axis=1))[-n_rows:]
    batch = model.booster.predict(X[rows], num_threads=1)
    t = time.perf_counter()
    loop = np.array([model.booster.predict(X[i : i + 1], num_threads=1)[0] for i in rows])
    naive_s = time.perf_counter() - t
    np.testing.assert_array_equal(loop, batch)
    seg = Segment(open_time[rows], np.ones(rows.size), X[rows])
    np.testing.assert_array_equal(model.predict_proba(seg), batch)
    return naive_s, rows


def _report(
    market: Any,
    res1: Any,
    res2: Any,
    sim: Any,
    timings: dict[str, float],
    naive_s: float,
    rows: np.ndarray,
) -> None:
    n_bars = market.n_bars
    bars = 2 * n_bars
    naive_full = naive_s / rows.size * bars
    train_s, infer_s, sim_s = res1.train_seconds, timings["infer"], timings["sim"]
    plan_s = res2.train_seconds  # nothing to fit: planning = model version checks
    rest_s = infer_s - plan_s - res2.predict_seconds
    folds = len(res1.schedule[market.symbols[0]].folds)
    print(
        f"ensemble.yaml: {len(market.symbols)} symbols x {n_bars:,} 5m bars, "
        f"{res1.n_fitted} model fits over {folds} monthly folds per symbol"
    )
    print(f"  load + features                 {timings['load']:8.2f} s")
    print(
        f"  walk-forward training           {train_s:8.2f} s   target < 120 s  ({train_s / 120:.2f}x of target)"
    )
    print(
        f"  first run, ML stage total       {timings['first']:8.2f} s   (training + planning + inference)"
    )
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
