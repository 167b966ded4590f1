"""Live/backtest parity over a long replay: ``engine live`` against the exchange simulator,
bar by bar, then ``engine parity RUN --json``.

The venue is ``engine sim-exchange`` in its own process (frozen clock, moved one 5m bar at a
time, as tests/parity does; its request limits raised as tests/parity does, since the replay
runs thousands of times faster than real time) over the real BTCUSDT and ETHUSDT bars of the
store; live mode
runs the shipped strategy file unchanged (the ensemble: its 60-day warm-up fitted from REST
klines, monthly folds refitted while live) for ``--days`` days from ``--start``; then
``engine parity`` reruns the backtest over exactly those bars and compares every decision,
size and fill. Prints the parity JSON and the wall time; exits with parity's code (0: no
mismatch).

Run: ``python bench/parity_replay.py [--strategy ensemble] [--days 30] [--start 2024-03-01]``
(imports the shared data into a temporary store first; ``--store DIR`` reuses one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_latency import BAR, REPO, SHARED, live_replay  # noqa: E402 - beside this file

from engine.data import import_paths  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default="ensemble", help="a file in strategies/ (no .yaml)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--start", default="2024-03-01", help="the first live bar")
    ap.add_argument("--store")
    args = ap.parse_args()
    bars = args.days * 86_400_000 // BAR
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(args.store) if args.store else Path(tmp) / "store"
        if not args.store:
            import_paths([SHARED], store=store)
        results = Path(tmp) / "results"
        run: dict = {}
        t0 = time.perf_counter()
        _, _, secs = live_replay(REPO / "strategies" / f"{args.strategy}.yaml", store, results,
                                 bars, first_live=args.start, run=run, unlimited=True)
        res = run["result"]
        t1 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "engine", "parity", res.run_id, "--json",
                            "--results", str(results), "--store", str(store)],
                           capture_output=True, text=True, cwd=REPO, env=dict(os.environ))
        t2 = time.perf_counter()
    print(f"{args.strategy}: {res.bars} live bars from {args.start} (status {res.status}); "
          f"replay {secs:.0f} s (with warm-up {t1 - t0:.0f} s), engine parity {t2 - t1:.0f} s, "
          f"exit {p.returncode}")
    if p.returncode not in (0, 1):
        print(p.stderr[-3000:], file=sys.stderr)
    doc = json.loads(p.stdout) if p.stdout.strip() else {}
    print(json.dumps(doc))
    sys.exit(p.returncode)


if __name__ == "__main__":
    main()
