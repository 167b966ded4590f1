"""Benchmark: what the live dashboard's push loop costs the live process, with one page open.

Engine: ``engine live`` (``LiveRunner``, in this process, as ``run_live`` runs it) trading
strategies/ema_cross.yaml against ``engine sim-exchange`` (its own process) over real
BTCUSDT and ETHUSDT 5m bars, the dashboard on 127.0.0.1 with one page open in headless
Chromium (its own processes: Playwright's driver runs in a child Python process, so none of
the page's work is counted here). The clock is moved one bar every 250 ms, so every push
tick (250 ms) has a new bar's rows to read and send: 4 pushes a second, each with candles,
equity, decisions, orders and the values that changed.

Measured:

* the push loop's own CPU: ``DashServer.cpu_s`` (deltas, JSON, sends, on the live loop's
  thread) plus ``LiveDash.cpu_s`` (each tick's reads of the account, health and budget on
  the loop, and the run-log row reads in their worker thread), ``time.thread_time`` around
  exactly that work, over the wall time of the bars: the share of one core;
* beside it, the same run with the dashboard off (the peer): the whole process's CPU time
  per wall second with and without the dashboard (a cross-check; it includes the decisions,
  which dominate, and the noise of a shared machine).

Target (issue 12): the push loop under 2% of one core at 4 pushes a second with one page.

Run: ``python bench/dashboard.py [--bars 80]`` (imports /work/shared/data into a temporary
store first; ``--store DIR`` reuses one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_latency import BAR, FIRST_LIVE, KEY, REPO, SECRET, SHARED, SYMBOLS, start_venue  # noqa: E402

from engine.data import import_paths  # noqa: E402
from engine.live import LiveOptions  # noqa: E402
from engine.strategy import load_strategy  # noqa: E402
from engine.timeutil import parse_time  # noqa: E402

INTERVAL_S = 0.25


def page(url: str) -> None:
    """Child mode: keep one Chromium page on ``url`` until stdin closes; print its count of
    messages received."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        p = b.new_context(bypass_csp=True).new_page()
        p.goto(url)
        p.wait_for_function("window.dash && dash.connected", timeout=30_000)
        print("connected", flush=True)
        sys.stdin.read()
        print(json.dumps({"messages": p.evaluate("dash.messages"),
                          "equity_points": p.evaluate("dash.equityPoints")}), flush=True)
        b.close()


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def run(store: Path, results: Path, bars: int, *, dashboard: bool) -> dict[str, Any]:
    from engine.live.runner import LiveRunner

    graph = load_strategy(REPO / "strategies" / "ema_cross.yaml", symbols=list(SYMBOLS))
    start = parse_time(FIRST_LIVE)
    venue, url = start_venue(store, start, start + (bars + 10) * BAR)
    opts = LiveOptions(url=url, ws_url=url.replace("http", "ws"), key=KEY, secret=SECRET,
                       results=results, max_bars=bars, dashboard_port=0 if dashboard else None)
    done: queue.Queue[int] = queue.Queue()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        async def main() -> Any:
            box["runner"] = LiveRunner(graph, opts, on_bar=done.put, on_ready=ready.set,
                                       on_start=lambda s: box.setdefault("url", s.dashboard_url))
            return await box["runner"].run()

        try:
            box["res"] = asyncio.run(main())
        except BaseException as err:  # noqa: BLE001 - reported below
            box["err"] = err
            ready.set()

    th = threading.Thread(target=target, daemon=True)
    th.start()
    child = None
    try:
        if not ready.wait(600) or "err" in box:
            raise RuntimeError(f"live mode did not start: {box.get('err')}")
        if dashboard:
            child = subprocess.Popen([sys.executable, __file__, "--page", box["url"] + "/"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert child.stdin is not None and child.stdout is not None
            assert child.stdout.readline().strip() == "connected"
        runner = box["runner"]
        srv, dash = runner.dash_server, runner.dash
        c0, w0 = cpu(), time.perf_counter()
        s0 = (srv.cpu_s + dash.cpu_s, srv.pushes) if dashboard else (0.0, 0)
        next_at = time.perf_counter()
        for _ in range(bars - 1):
            next_at += INTERVAL_S
            urllib.request.urlopen(urllib.request.Request(f"{url}/sim/advance?ms={BAR}",
                                                          method="POST"), timeout=10).read()
            done.get(timeout=60)
            time.sleep(max(0.0, next_at - time.perf_counter()))
        wall, used = time.perf_counter() - w0, cpu() - c0
        out: dict[str, Any] = {"wall_s": wall, "process_cpu_share": used / wall}
        if dashboard:
            out["push_cpu_share"] = (srv.cpu_s + dash.cpu_s - s0[0]) / wall
            out["pushes_per_s"] = (srv.pushes - s0[1]) / wall
            assert child is not None and child.stdin is not None and child.stdout is not None
            child.stdin.close()
            out["page"] = json.loads(child.stdout.readline())
        urllib.request.urlopen(urllib.request.Request(f"{url}/sim/advance?ms={BAR}",
                                                      method="POST"), timeout=10).read()
        th.join(60)
    finally:
        if child is not None:
            child.kill()
            child.wait(10)
        venue.terminate()
        venue.wait(30)
    if "err" in box:
        raise box["err"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bars", type=int, default=80)
    ap.add_argument("--store")
    ap.add_argument("--page", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.page:
        page(args.page)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(args.store) if args.store else Path(tmp) / "store"
        if not args.store:
            import_paths([SHARED], store=store)
        on = run(store, Path(tmp) / "results-on", args.bars, dashboard=True)
        off = run(store, Path(tmp) / "results-off", args.bars, dashboard=False)
        share = on["push_cpu_share"]
        print(f"ema_cross live, {args.bars} bars, one bar every {INTERVAL_S * 1000:.0f} ms, one "
              f"Chromium page ({on['page']['messages']} messages received)")
        print(f"  push loop: {share * 100:.2f}% of one core at {on['pushes_per_s']:.2f} pushes/s "
              f"(target < 2%: {'met' if share < 0.02 else 'NOT met'})")
        print(f"  whole live process: {on['process_cpu_share'] * 100:.1f}% of a core with the "
              f"dashboard, {off['process_cpu_share'] * 100:.1f}% without (peer); ratio "
              f"{on['process_cpu_share'] / off['process_cpu_share']:.3f}")
        print(json.dumps({"dashboard_on": on, "dashboard_off": off}))


if __name__ == "__main__":
    main()
