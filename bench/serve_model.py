"""Benchmark: the ``engine serve-model`` round trip for one 30-feature row, beside the
in-process prediction of the same model.

    ENGINE_LOCAL_DATA=../shared/data/binance-usdm python bench/serve_model.py [--store DIR]
        [--model FOLDER] [-n 1000] [--warm 200]

The model is a LightGBM with strategies/ensemble.yaml's parameters fitted on its 30 features
over the first 60 days of BTCUSDT (or ``--model``: any version folder under results/models/
whose features the store can compute). It is served by ``engine serve-model`` in its own
process on 127.0.0.1, and asked for the rows of the next 30 days one at a time, ``-n`` calls
after ``--warm`` warm-up calls, through:

* an aiohttp client (one kept-alive connection; the JSON body the ``remote`` node sends),
* the engine's ``remote`` node itself (``http.client``; what live mode uses),
* the in-process ``predict_proba`` of the same saved model (the peer),

every answer checked equal to the in-process batch prediction before anything is timed.
Printed: p50/p99 of each, their ratio, the server's own handler time (its
``prediction_latency_seconds`` histogram from /metrics) and the HTTP floor (``GET /health``
on the same connection).

:func:`measure` is the reusable part (bench/ensemble.py calls it with its own fold model).
"""

from __future__ import annotations

import argparse
import asyncio
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
import orjson

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="data store (default $ENGINE_DATA or ./data)")
    ap.add_argument("--model", default=None, help="a version folder to serve (default: fit one)")
    ap.add_argument("-n", type=int, default=1000, help="timed one-row calls per client")
    ap.add_argument("--warm", type=int, default=200, help="untimed calls first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, X, open_time = _model_and_rows(args.store, args.model, Path(tmp), args.n)
        result = measure(folder, X, open_time, n=args.n, warm=args.warm)
    report(result)


def _model_and_rows(
    store: str | None, model: str | None, tmp: Path, n: int
) -> tuple[Path, np.ndarray, np.ndarray]:
    """The version folder to serve and the rows to ask for: (folder, X, open_time), X in the
    model's feature order, the rows after its training span with every feature known."""
    from engine.decisions.decide import compute_features
    from engine.decisions.market import load_graph_market
    from engine.ml.models import new_model
    from engine.ml.models.base import TrainSet, write_json
    from engine.strategy import load_strategy

    graph = load_strategy(
        ROOT / "strategies" / "ensemble.yaml", symbols=["BTCUSDT"], end="2023-03-31T23:55"
    )
    market = load_graph_market(graph, store=store)
    feats = compute_features(graph, market.candles["BTCUSDT"], market.funding.get("BTCUSDT"))
    node = next(m for m in graph.config.models if m.kind == "lightgbm")
    if model is not None:
        folder = Path(model)
        names = json.loads((folder / "meta.json").read_text())["features"]
    else:
        names = [c for c in feats.columns if c != "open_time"]
    X = feats.select(names).to_numpy()
    open_time = feats["open_time"].to_numpy()
    close = market.candles["BTCUSDT"]["close"].to_numpy()
    split = int(np.searchsorted(open_time, open_time[0] + 60 * 86_400_000))
    if model is None:
        h = graph.config.labels.horizon
        y = np.full(close.shape[0], np.nan)
        y[:-h] = (close[h:] > close[:-h]).astype(float)
        ok = np.isfinite(X[:split]).all(axis=1) & np.isfinite(y[:split])
        train = TrainSet(X[:split][ok], y[:split][ok], tuple(names))
        folder = tmp / "lightgbm-bench"
        folder.mkdir()
        new_model("lightgbm", node.params).fit(train, seed=7, threads=1).save(folder)
        write_json(
            folder / "meta.json",
            {
                "kind": "lightgbm",
                "params": node.params,
                "features": names,
                "version": folder.name,
                "seed": 7,
                "interval_ms": 300_000,
            },
        )
    rows = split + np.flatnonzero(np.isfinite(X[split:]).all(axis=1))
    return folder, X[rows], open_time[rows]


def measure(
    folder: Path, X: np.ndarray, open_time: np.ndarray, *, n: int = 1000, warm: int = 200
) -> dict[str, Any]:
    """Serve the version ``folder`` with ``engine serve-model`` (its own process) and time
    one-row predictions of the first ``n`` rows of ``X`` with every feature known (features
    in the model's order) by an aiohttp client, the engine's remote node and the model in
    process; ms per call (arrays), plus the server's mean handler time.

    >>> r = measure(Path("results/models/lightgbm-..."), X, open_time)  # doctest: +SKIP
    >>> report(r)  # doctest: +SKIP
    """
    from engine.ml.models import load_model
    from engine.ml.models.base import Segment
    from engine.ml.models.external import RemoteModel

    meta = json.loads((folder / "meta.json").read_text())
    names = list(meta["features"])
    model = load_model(meta["kind"], folder, meta["params"], threads=1)
    known = np.isfinite(X).all(axis=1)  # rows with a missing feature are not sent
    X, open_time = X[known], open_time[known]
    n = min(n, X.shape[0])
    want = model.predict_proba(Segment(open_time[:n], np.ones(n), X[:n]))  # the batch answer
    segs = [Segment(open_time[i : i + 1], np.ones(1), X[i : i + 1]) for i in range(n)]
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
        url = m.group(0)
        bodies = [
            orjson.dumps(
                {
                    "features": names,
                    "rows": X[i : i + 1],
                    "open_time": open_time[i : i + 1],
                    "close": [1.0],
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            for i in range(n)
        ]
        aio, health, server_s = asyncio.run(_aiohttp_calls(url, bodies, want, warm))
        node = RemoteModel(url, timeout_s=10, feature_names=names)
        remote = _timed(node.predict_proba, segs, want, warm)
        assert node.events == []
        local = _timed(model.predict_proba, segs, want, warm)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    return {
        "n": n,
        "features": X.shape[1],
        "kind": meta["kind"],
        "aiohttp": aio,
        "remote_node": remote,
        "in_process": local,
        "health": health,
        "server_ms": server_s * 1000.0,
    }


async def _aiohttp_calls(
    url: str, bodies: list[bytes], want: np.ndarray, warm: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """ms per ``POST /predict`` (and per ``GET /health``) on one kept-alive aiohttp
    connection; the server's mean handler time (s) over the timed calls, from /metrics."""
    import aiohttp

    headers = {"Content-Type": "application/json"}
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(url, connector=conn) as session:

        async def predict(body: bytes) -> float:
            async with session.post("/predict", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                return float(orjson.loads(await r.read())["probabilities"][0])

        for i in range(warm):
            await predict(bodies[i % len(bodies)])
        before = await _server_seconds(session)
        ms, got = np.empty(len(bodies)), np.empty(len(bodies))
        for i, body in enumerate(bodies):
            t = time.perf_counter()
            got[i] = await predict(body)
            ms[i] = (time.perf_counter() - t) * 1000.0
        after = await _server_seconds(session)
        np.testing.assert_array_equal(got, want)
        health = np.empty(len(bodies))
        for i in range(len(bodies)):
            t = time.perf_counter()
            async with session.get("/health") as r:
                await r.read()
            health[i] = (time.perf_counter() - t) * 1000.0
    return ms, health, (after[0] - before[0]) / max(after[1] - before[1], 1)


async def _server_seconds(session: Any) -> tuple[float, float]:
    """(sum, count) of the server's prediction_latency_seconds histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get("/metrics") as r:
        text = await r.text()
    out = {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name in ("prediction_latency_seconds_sum", "prediction_latency_seconds_count")
    }
    return out["prediction_latency_seconds_sum"], out["prediction_latency_seconds_count"]


def _timed(fn: Any, segs: list[Any], want: np.ndarray, warm: int) -> np.ndarray:
    """ms per one-row call of ``fn`` after ``warm`` untimed calls; answers checked."""
    for i in range(warm):
        fn(segs[i % len(segs)])
    ms, got = np.empty(len(segs)), np.empty(len(segs))
    for i, seg in enumerate(segs):
        t = time.perf_counter()
        got[i] = fn(seg)[0]
        ms[i] = (time.perf_counter() - t) * 1000.0
    np.testing.assert_array_equal(got, want)
    return ms


def report(r: dict[str, Any]) -> None:
    """Print p50/p99 of each path and the remote/in-process ratio."""

    def pct(ms: np.ndarray) -> str:
        return f"p50 {np.percentile(ms, 50):7.3f} ms  p99 {np.percentile(ms, 99):7.3f} ms"

    p50 = {k: float(np.percentile(r[k], 50)) for k in ("aiohttp", "remote_node", "in_process")}
    print(
        f"serve-model round trip, one {r['features']}-feature row, {r['kind']} "
        f"({r['n']:,} calls each, warm; answers equal to the in-process batch prediction)"
    )
    print(f"  aiohttp client -> engine serve-model: {pct(r['aiohttp'])}")
    print(f"  remote node (http.client, live's):    {pct(r['remote_node'])}")
    print(f"  in process (predict_proba):           {pct(r['in_process'])}")
    print(f"  HTTP floor (GET /health, aiohttp):    {pct(r['health'])}")
    print(f"  server's own handler time (mean):     {r['server_ms']:7.3f} ms")
    print(
        f"  ratio p50 serve-model / in process: aiohttp {p50['aiohttp'] / p50['in_process']:.1f}x, "
        f"remote node {p50['remote_node'] / p50['in_process']:.1f}x"
    )


if __name__ == "__main__":
    main()
