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
import json
import re
import select
import signal
import subprocess
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
        serve = _serve_round_trip(graph, market, features, res2, tmp, args.round_trips)
    _report(market, res1, res2, sim, timings, naive_s, rows)
    _report_serve(serve)


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


def _serve_round_trip(
    graph: Any, market: Any, features: dict[str, Any], res: Any, tmp: str, n: int
) -> dict[str, Any]:
    """One-row predictions in process and through ``engine serve-model`` (its own process)
    and the remote node, checked equal, each timed per call (ms)."""
    from engine.ml.models.external import RemoteModel

    folder, model, X, open_time = _lightgbm_fold(graph, market, features, res, tmp)
    rows = np.flatnonzero(np.isfinite(X).all(axis=1))[-n:]
    segs = [Segment(open_time[i : i + 1], np.ones(1), X[i : i + 1]) for i in rows]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve-model", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        m = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline() if ready else "")
        assert m, "engine serve-model did not start"
        names = json.loads((folder / "meta.json").read_text())["features"]
        node = RemoteModel(m.group(0), timeout_s=10, feature_names=names)
        want = model.predict_proba(Segment(open_time[rows], np.ones(rows.size), X[rows]))
        np.testing.assert_array_equal(node.predict_proba(segs[0]), want[:1])  # correctness first
        for seg in segs[:200]:  # warm: the connection, both sides' caches
            node.predict_proba(seg)
            model.predict_proba(seg)
        remote, local = _time_calls(node, segs, want), _time_calls(model, segs, want)
        assert node.events == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    return {"n": len(segs), "features": X.shape[1], "remote": remote, "local": local}


def _time_calls(model: Any, segs: list[Segment], want: np.ndarray) -> np.ndarray:
    """Milliseconds per one-row ``predict_proba``; every answer checked against ``want``."""
    ms = np.empty(len(segs))
    got = np.empty(len(segs))
    for i, seg in enumerate(segs):
        t = time.perf_counter()
        got[i] = model.predict_proba(seg)[0]
        ms[i] = (time.perf_counter() - t) * 1000.0
    np.testing.assert_array_equal(got, want)
    return ms


def _report_serve(serve: dict[str, Any]) -> None:
    def pct(ms: np.ndarray) -> str:
        return f"p50 {np.percentile(ms, 50):7.3f} ms  p99 {np.percentile(ms, 99):7.3f} ms"

    print(
        f"  serve-model round trip, one {serve['features']}-feature row ({serve['n']:,} calls, "
        "remote node -> engine serve-model on 127.0.0.1 -> LightGBM -> back)"
    )
    print(f"    remote:     {pct(serve['remote'])}")
    print(f"    in process: {pct(serve['local'])}")


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
