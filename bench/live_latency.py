"""Benchmark: live mode's decision latency, beside a live loop that recomputes its features.

Engine: ``engine live`` (in this process) against the local exchange simulator
(``engine sim-exchange`` in its own process, as a venue is) on 127.0.0.1, replaying real BTCUSDT and ETHUSDT 5m bars one closed bar at a time (the
simulator's clock is moved bar by bar, as the live tests do; its request limits raised, as
the live tests do: the replay runs hundreds of times faster than real time, and the
client's request budget, sized from the venue's per-minute limits, would otherwise make
bars wait for it, which at real 5m bars, a few requests each, never happens). The latency is the live
process's own ``decision_latency_seconds`` histogram, read from its ``/metrics`` with
prometheus_client's parser: from the moment the last symbol's closed kline of a bar is
received to the moment the bar's first order request is written to the run log (a bar that
needs no order: its decision written). It includes the account read from the venue (sent
first, so its round trip overlaps the features and models), the features (one step of the
FeatureStream), the rules or the four-model ensemble, the simulator's decide phase, the
``decided`` checkpoint (fsynced) and the durable SQLite writes of the decision rows and the
order intent (the predictions are written after the orders). A bar at a monthly retrain
waits for what is left of a fold fit started at the previous close (in a replay, all of it). p50/p99 are read from the 0.25 ms
buckets the way PromQL's ``histogram_quantile`` does (linear inside a bucket).

Baseline: the way freqtrade refreshes indicators live: at each closed bar the whole
indicator window (``--window`` bars, freqtrade's ``startup_candle_count`` plus the dataframe
it keeps) is recomputed with the same feature code (``engine.features.compute``), then the
rules (or, for the ensemble, the same fitted live ensemble) decide on the last row. It is
timed in this process over the same bars, without any I/O: a lower bound of that approach.

Targets (issue 11): p99 under 5 ms with the ensemble.

Run: ``python bench/live_latency.py [--bars 300] [--window 1000] [--strategy ema_cross|ensemble|both]``
(imports /work/shared/data into a temporary store first; ``--store DIR`` reuses one).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from engine.data import import_paths, load_candles
from engine.features import compute
from engine.live import LiveOptions, run_live, warmup_needed
from engine.strategy import load_strategy
from engine.timeutil import fmt_ms, parse_time

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "binance-usdm"
KEY = "benchKey0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789ab"
SECRET = "benchSecret0123456789abcdefABCDEF0123456789abcdefABCDEF01234567"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
BAR = 300_000
FIRST_LIVE = "2024-03-01"
WARM = 20  # bars after which the steady-state figures are read (first orders, caches, JIT)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative ``(le, count)`` buckets."""
    total = buckets[-1][1]
    rank = q * total
    lo, prev = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((rank - prev) / (count - prev) if count > prev else 1.0)
        lo, prev = le, count
    return lo


def scrape_buckets(port: int) -> list[tuple[float, float]]:
    """The cumulative ``(le, count)`` buckets of ``decision_latency_seconds`` now."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for fam in text_string_to_metric_families(text):
        if fam.name == "decision_latency_seconds":
            return sorted((float(s.labels["le"]), s.value) for s in fam.samples
                          if s.name.endswith("_bucket"))
    raise RuntimeError("no decision_latency_seconds in /metrics")


def quantiles(buckets: list[tuple[float, float]],
              before: list[tuple[float, float]] | None = None) -> tuple[float, float, int]:
    """p50, p99 and count of the samples in ``buckets`` (less those already in ``before``)."""
    if before is not None:
        buckets = [(le, c - c0) for (le, c), (_, c0) in zip(buckets, before, strict=True)]
    return (histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets),
            int(buckets[-1][1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_venue(store: Path, start: int, end: int, *,
                unlimited: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """``engine sim-exchange`` in its own process (a venue does not share this process's GIL),
    frozen clock at ``start``; returns the process and its base URL once it answers.
    ``unlimited``: request limits out of the way (a replay faster than real time would
    otherwise spend most of its time waiting for the client's request budget, which sizes
    itself from the venue's per-minute limits)."""
    port = free_port()
    env = {**os.environ, "BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET}
    limits = (["--weight-limit", str(10**9), "--orders-10s", str(10**9), "--orders-1m",
               str(10**9)] if unlimited else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "sim-exchange", "--symbols", ",".join(SYMBOLS),
         "--start", str(start), "--end", str(end), "--speed", "0", "--port", str(port),
         "--slippage-bps", "1", "--store", str(store), *limits],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine sim-exchange exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            urllib.request.urlopen(f"{url}/fapi/v1/ping", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("engine sim-exchange did not answer in 120 s")


def live_replay(path: Path, store: Path, results: Path, bars: int, *, first_live: str = FIRST_LIVE,
                run: dict[str, Any] | None = None, unlimited: bool = False,
                ) -> tuple[tuple[float, float, int], tuple[float, float, int], float]:
    """Run live mode for ``bars`` bars from ``first_live``; returns ((p50, p99, samples) over
    every bar, the same after the first WARM bars, seconds); ``run`` gets the live result
    (``run["result"]``: its run id, status, bars); ``unlimited``: see :func:`start_venue`."""
    graph = load_strategy(path, symbols=list(SYMBOLS))
    start = parse_time(first_live)
    proc, url = start_venue(store, start, start + (bars + 10) * BAR, unlimited=unlimited)
    port = free_port()
    done: queue.Queue[int] = queue.Queue()
    ready = threading.Event()
    out: dict[str, Any] = {}
    opts = LiveOptions(url=url, ws_url=url.replace("http", "ws"), key=KEY, secret=SECRET,
                       results=results, max_bars=bars, metrics_port=port)

    def target() -> None:
        try:
            out["res"] = run_live(graph, opts, on_bar=done.put, on_ready=ready.set)
        except BaseException as err:  # noqa: BLE001 - reported below
            out["err"] = err
            ready.set()

    th = threading.Thread(target=target, daemon=True)
    th.start()
    try:
        if not ready.wait(900) or "err" in out:
            raise RuntimeError(f"live mode did not start: {out.get('err')}")
        t0 = time.perf_counter()
        venue = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
        for k in range(bars):
            # the request out, its answer read once the bar is done: this driver thread (no
            # part of a live process) then takes no turn of the GIL while the bar is timed
            venue.request("POST", f"/sim/advance?ms={BAR}")
            done.get(timeout=120)
            venue.getresponse().read()
            if k == WARM - 1:
                warm = scrape_buckets(port)
            if k == bars - 2:
                end = scrape_buckets(port)
        seconds = time.perf_counter() - t0
        venue.close()
        th.join(60)
    finally:
        proc.terminate()
        proc.wait(30)
    if "err" in out:
        raise out["err"]
    if run is not None:
        run["result"] = out["res"]
    return quantiles(end), quantiles(end, warm), seconds


def baseline(path: Path, store: Path, window: int, bars: int, results: Path) -> tuple[float, float]:
    """Per bar: recompute the features over the last ``window`` bars, decide on the last row."""
    from engine.decisions.decide import decide_symbol, rule_columns
    from engine.ml.live import LiveEnsemble

    graph = load_strategy(path, symbols=list(SYMBOLS))
    start = parse_time(FIRST_LIVE)
    names = list(graph.feature_columns)
    ml = graph.config.ml()
    warm = warmup_needed(graph)
    samples = []
    for sym in SYMBOLS:
        c = load_candles(sym, "5m", start=start - (max(warm, window) + 10) * BAR,
                         end=start + bars * BAR, store=store)
        t = c["open_time"].to_numpy()
        first = int(np.searchsorted(t, start))
        ens = None
        if ml is not None:
            hist = c.slice(first - warm, warm)
            ens = LiveEnsemble.from_history(ml, hist, compute(hist, names, interval="5m"), symbol=sym,
                                            run_start=int(hist["open_time"][0]), results_dir=results)
        for i in range(first, first + bars):
            win = c.slice(i - window + 1, window)
            t0 = time.perf_counter()
            feats = compute(win, names, interval="5m")
            if ens is None:
                decide_symbol(graph, rule_columns(win, feats))
            else:
                row = feats.row(feats.height - 1, named=True)
                ens.on_bar(int(row["open_time"]), float(win["close"][-1]), row)
            samples.append(time.perf_counter() - t0)
    a = np.array(samples)
    return float(np.quantile(a, 0.5)), float(np.quantile(a, 0.99))


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=300)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--strategy", choices=("ema_cross", "ensemble", "both"), default="both")
    ap.add_argument("--store")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(args.store) if args.store else Path(tmp) / "store"
        if not args.store:
            import_paths([SHARED], store=store)
        names = ("ema_cross", "ensemble") if args.strategy == "both" else (args.strategy,)
        report = {}
        for name in names:
            path = REPO / "strategies" / f"{name}.yaml"
            results = Path(tmp) / f"results-{name}"
            (p50, p99, n), (w50, w99, wn), secs = live_replay(path, store, results, args.bars,
                                                              unlimited=True)
            b50, b99 = baseline(path, store, args.window, args.bars, results)
            report[name] = {"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "samples": n,
                            "warm_p50_ms": w50 * 1e3, "warm_p99_ms": w99 * 1e3,
                            "warm_samples": wn,
                            "baseline_p50_ms": b50 * 1e3, "baseline_p99_ms": b99 * 1e3}
            print(f"{name}: {n} bars from {FIRST_LIVE} ({fmt_ms(parse_time(FIRST_LIVE))}), "
                  f"replayed in {secs:.1f} s")
            print(f"  engine live, kline received -> order request written: p50 {ms(p50)}, "
                  f"p99 {ms(p99)}; after the first {WARM} bars: p50 {ms(w50)}, p99 {ms(w99)}")
            print(f"  baseline (features recomputed over {args.window} bars each bar and the "
                  f"decision, no account read, no log, no order): p50 {ms(b50)}, p99 {ms(b99)}")
        if "ensemble" in report:
            r = report["ensemble"]
            for what, key in (("every bar", "p99_ms"), (f"after {WARM} bars", "warm_p99_ms")):
                ok = r[key] < 5.0
                print(f"target: ensemble p99 < 5 ms ({what}): {'met' if ok else 'NOT met'} "
                      f"({r[key]:.2f} ms)")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
