"""Benchmark: ema_cross in the engine beside backtesting.py, and the whole `engine backtest` command.

1. In process, warm: ema_cross (long while EMA9 > EMA50, short while below) over one
   symbol's 143,900 real 5m bars. Engine: features + signals + the futures simulator
   (data already in memory, no run log). backtesting.py: ``Backtest.run`` of the same
   always-in-market crossover (TA-Lib EMA, next-open fills), with its indicators computed
   inside the run as usual. Both are checked to make the same number of trades first.
2. The whole command ``engine backtest strategies/ema_cross.yaml --json`` for BTCUSDT and
   ETHUSDT as a subprocess (imports, data load, features, simulation, run log).

Targets (issue 4): under 50 ms in process; the whole command under 3 s.

Run: ``python bench/backtest.py`` (imports /work/shared/data into a temporary store first;
``--store DIR`` reuses a store that already holds the data).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (
    Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "binance-usdm"
)
STRATEGY = REPO / "strategies" / "ema_cross.yaml"
# One symbol, no exchange filters (equity falls far enough under fees for Binance's 100 USDT
# min notional to block late entries, which backtesting.py has no notion of).
# The in-process comparison runs over the whole 5m file (143,900 bars, to 2024-05-14 15:35),
# past the end of the funding data, so funding is off there.
OVERRIDES = ["execution.exchange_filters=false", "data.funding=false", "data.end=2024-05-14T15:35"]


def best_of(fn, *, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def engine_in_process(store: str) -> tuple[float, int, int]:
    from engine.backtest.runner import simulate_graph
    from engine.decisions.decide import decide
    from engine.decisions.market import load_market
    from engine.strategy import load_strategy

    graph = load_strategy(STRATEGY, symbols=["BTCUSDT"], overrides=OVERRIDES)
    d = graph.config.data
    market = load_market(
        graph.symbols, d.interval, start=d.start, end=d.end, store=store, funding=d.funding
    )

    def run():  # type: ignore[no-untyped-def]
        dec, feats = decide(graph, market)
        return simulate_graph(graph, market, dec, feats)

    res = run()  # warm-up: numba kernels load from cache or compile
    return best_of(run, repeat=7), len(res.trades) + int(res.account.qty[0] != 0), market.n_bars


def backtesting_py(store: str) -> tuple[float, int, int]:
    os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar
    import pandas as pd
    import talib
    from backtesting import Backtest, Strategy

    from engine.data import load_candles
    from engine.strategy import load_strategy

    graph = load_strategy(STRATEGY, symbols=["BTCUSDT"], overrides=OVERRIDES)
    d = graph.config.data
    fast, slow = int(graph.config.params["fast"]), int(graph.config.params["slow"])
    bars = load_candles("BTCUSDT", d.interval, start=d.start, end=d.end, store=store).to_pandas()
    df = pd.DataFrame(
        {
            "Open": bars["open"],
            "High": bars["high"],
            "Low": bars["low"],
            "Close": bars["close"],
            "Volume": bars["volume"],
        }
    )
    df.index = pd.to_datetime(bars["open_time"], unit="ms")

    class EmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(talib.EMA, self.data.Close, fast)
            self.slow = self.I(talib.EMA, self.data.Close, slow)

        def next(self) -> None:
            f, s = self.fast[-1], self.slow[-1]
            want = 1 if f > s else (-1 if f < s else 0)
            have = 1 if self.position.is_long else (-1 if self.position.is_short else 0)
            if want != have:
                self.position.close()
                if want > 0:
                    self.buy(size=0.4)
                elif want < 0:
                    self.sell(size=0.4)

    bt = Backtest(df, EmaCross, cash=100_000_000, commission=0.0005, finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
        seconds = best_of(bt.run, repeat=3)
    return seconds, int(stats["# Trades"]), len(df)


def whole_command(store: str) -> tuple[float, dict]:
    times = []
    doc: dict = {}
    with tempfile.TemporaryDirectory() as results:
        cmd = [
            sys.executable,
            "-m",
            "engine",
            "backtest",
            str(STRATEGY),
            "--json",
            "--store",
            store,
            "--results",
            results,
        ]
        subprocess.run(
            cmd, check=True, capture_output=True
        )  # warm the OS file cache and numba's cache
        for _ in range(5):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            doc = json.loads(proc.stdout)
    return statistics.median(times), doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", help="a store that already holds BTCUSDT/ETHUSDT 5m and funding")
    args = ap.parse_args()
    tmp = None
    store = args.store
    if store is None:
        from engine.data import import_paths

        tmp = tempfile.TemporaryDirectory()
        store = tmp.name
        files = [SHARED / "klines" / f"{s}-5m.csv.gz" for s in ("BTCUSDT", "ETHUSDT")]
        files += [
            SHARED / "fundingRate" / f"{s}-fundingRate.csv.gz" for s in ("BTCUSDT", "ETHUSDT")
        ]
        import_paths(files, store=store)

    eng_s, eng_trades, n = engine_in_process(store)
    bt_s, bt_trades, n_bt = backtesting_py(store)
    print(f"ema_cross, BTCUSDT 5m, {n:,} bars (backtesting.py: {n_bt:,})")
    print(f"  trades: engine {eng_trades}, backtesting.py {bt_trades}")
    if eng_trades != bt_trades or n != n_bt:
        sys.exit("correctness check failed: different trade counts or bar counts; not timing")
    print(
        f"  engine (features + signals + futures sim, warm, best of 7): {eng_s * 1e3:8.1f} ms   target < 50 ms"
    )
    print(f"  backtesting.py (Backtest.run, best of 3):                 {bt_s * 1e3:8.1f} ms")
    print(f"  ratio backtesting.py / engine: {bt_s / eng_s:.1f}x")
    med, doc = whole_command(store)
    m = doc["metrics"]
    print(
        f"whole command `engine backtest strategies/ema_cross.yaml --json` (BTCUSDT+ETHUSDT, {m['bars']:,} bars each,"
        f" {m['trades']} trades): median of 5 {med:.2f} s   target < 3 s"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
