"""Benchmark: the exchange simulator under load, beside its targets.

1. Sustained signed order round-trips per second through unmodified ``ccxt.async_support``
   (market orders, each a signed POST /fapi/v1/order answered with its fill), p50/p99 latency.
   Target: >= 500 round-trips/s.
2. Kline frames per second delivered to 10 websocket subscribers, p50/p99 delivery lag behind
   the market clock. Target: >= 10,000 frames/s in total.

The simulator runs as its own process (``engine sim-exchange``), the clients in this one, as
in real use. Correctness is checked before anything is timed: the orders' fills add up to the
position the server reports, and every subscriber sees every bar's x:true exactly once, in
order, with the stored OHLCV.

    python bench/sim_exchange.py [--seconds 8] [--workers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "binance-usdm"
KEY = "benchKey0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789ab"
SECRET = "benchSecret0123456789abcdefABCDEF0123456789abcdefABCDEF012345678"
TARGET_RT = 500.0
TARGET_FRAMES = 10_000.0


def make_store() -> Path:
    from engine.data import import_paths

    store = Path(tempfile.mkdtemp(prefix="bench-sim-store-"))
    files = [DATA / "klines" / f"{s}-5m.csv.gz" for s in ("BTCUSDT", "ETHUSDT")]
    import_paths([*files, DATA / "fundingRate"], store=store)
    return store


def start_server(store: Path, *, speed: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable, "-m", "engine", "sim-exchange", "--symbols", "BTCUSDT,ETHUSDT", "--interval", "5m",
        "--start", "2023-06-01", "--speed", str(speed), "--port", "0", "--store", str(store),
        "--api-key", KEY, "--api-secret", SECRET, "--balance", "100000000",
        "--orders-10s", "1000000", "--orders-1m", "1000000", "--weight-limit", "1000000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    text = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("server exited: " + (proc.stderr.read() if proc.stderr else ""))
        text += line
        if line.startswith("replay"):
            break
    m = re.search(r"REST\s+(http://[\d.]+:\d+)/fapi", text)
    assert m, text
    return proc, m.group(1)


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bench_orders(url: str, *, seconds: float, workers: int) -> dict[str, float]:
    from engine.binance.venue import make_ccxt

    ex = make_ccxt(url, KEY, SECRET, async_=True)
    try:
        await ex.load_markets()
        sym = "BTC/USDT:USDT"
        # correctness first: a few orders, then the position must be their sum
        qty = 0.0
        for side, q in (("buy", 0.01), ("buy", 0.02), ("sell", 0.005)):
            o = await ex.create_order(sym, "market", side, q)
            assert o["status"] == "closed" and o["filled"] == q
            qty += q if side == "buy" else -q
        (pos,) = await ex.fetch_positions([sym])
        assert abs(pos["contracts"] - abs(qty)) < 1e-12, (pos, qty)

        lat: list[float] = []
        count = 0
        stop = time.monotonic() + seconds

        async def worker(n: int) -> None:
            nonlocal count
            side = "buy" if n % 2 else "sell"
            while time.monotonic() < stop:
                t = time.perf_counter()
                o = await ex.create_order(sym, "market", side, 0.005)
                lat.append(time.perf_counter() - t)
                assert o["filled"] == 0.005
                count += 1
                side = "sell" if side == "buy" else "buy"

        t0 = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(workers)))
        elapsed = time.monotonic() - t0
        orders = await ex.fetch_orders(sym, limit=1000)
        assert all(o["status"] == "closed" for o in orders)
    finally:
        await ex.close()
    a = np.array(lat) * 1000
    return {"rate": count / elapsed, "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": count}


async def bench_frames(url: str, ws_url: str, *, seconds: float, subscribers: int, store: Path, speed: float) -> dict[str, float]:
    import aiohttp

    from engine.data import load_candles

    bars = {s: load_candles(s, "5m", start="2023-06-01", store=store) for s in ("BTCUSDT", "ETHUSDT")}
    cols = ["open_time", "open", "high", "low", "close", "volume"]
    stored = {s: {int(row[0]): tuple(row[1:]) for row in df.select(cols).iter_rows()} for s, df in bars.items()}
    counts = [0] * subscribers
    lags: list[float] = []
    closed: list[dict[str, list[int]]] = [{"BTCUSDT": [], "ETHUSDT": []} for _ in range(subscribers)]
    async with aiohttp.ClientSession() as http:
        ta = time.time()
        async with http.get(url + "/sim/state") as r:
            st = await r.json()
        w0 = (ta + time.time()) / 2  # wall time at which the server read its market clock
        m0 = st["marketTime"]

        async def sub(i: int) -> None:
            async with http.ws_connect(f"{ws_url}/market/stream?streams=btcusdt@kline_5m/ethusdt@kline_5m", max_msg_size=0) as ws:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        msg = await ws.receive(timeout=max(0.01, end - time.monotonic()))
                    except TimeoutError:
                        break
                    now = time.time()
                    d = orjson.loads(msg.data)["data"]
                    counts[i] += 1
                    k = d["k"]
                    if k["x"]:
                        closed[i][d["s"]].append(k["t"])
                        o, h, lo, c, v = stored[d["s"]][k["t"]]
                        assert (float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])) == (o, h, lo, c, v)
                        if i == 0:
                            lags.append(now - (w0 + (d["E"] - m0) / speed / 1000))

        t0 = time.monotonic()
        await asyncio.gather(*(sub(i) for i in range(subscribers)))
        elapsed = time.monotonic() - t0
    for c in closed:  # every subscriber: one x:true per bar, in order, no gaps
        for opens in c.values():
            assert opens and all(b - a == 300_000 for a, b in zip(opens, opens[1:], strict=False)), "missing or repeated bar"
    lag = np.array(lags) * 1000 if lags else np.array([np.nan])
    return {"rate": sum(counts) / elapsed, "p50": float(np.nanpercentile(lag, 50)), "p99": float(np.nanpercentile(lag, 99)), "n": sum(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--speed", type=float, default=75_000.0, help="market speed of the frames run (bars/s = speed/300)")
    args = ap.parse_args()
    store = make_store()
    proc, url = start_server(store, speed=0)
    try:
        rt = asyncio.run(bench_orders(url, seconds=args.seconds, workers=args.workers))
    finally:
        stop_server(proc)
    proc, url = start_server(store, speed=args.speed)
    try:
        fr = asyncio.run(bench_frames(url, url.replace("http://", "ws://"), seconds=args.seconds, subscribers=10, store=store, speed=args.speed))
    finally:
        stop_server(proc)
    print(f"{'measure':<44}{'value':>12}{'target':>10}{'ratio':>8}")
    print(f"{'signed order round-trips/s (ccxt async)':<44}{rt['rate']:>12.0f}{TARGET_RT:>10.0f}{rt['rate'] / TARGET_RT:>8.2f}")
    print(f"{'  latency p50 / p99 (ms)':<44}{rt['p50']:>6.1f} /{rt['p99']:>5.1f}")
    print(f"{'kline frames/s to 10 subscribers':<44}{fr['rate']:>12.0f}{TARGET_FRAMES:>10.0f}{fr['rate'] / TARGET_FRAMES:>8.2f}")
    print(f"{'  delivery lag p50 / p99 (ms)':<44}{fr['p50']:>6.1f} /{fr['p99']:>5.1f}")
    print(f"(orders: {rt['n']:.0f} in {args.seconds:g}s with {args.workers} workers; frames: {fr['n']:.0f})")


if __name__ == "__main__":
    main()
