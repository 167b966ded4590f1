"""Benchmark: a 10x10 ema_cross parameter sweep in the engine beside vectorbt's own sweep.

Grid: fast = 5, 10, ..., 50 x slow = 60, 70, ..., 150 (100 combinations) over BTCUSDT's
143,900 real 5m bars (2023-01-01 .. 2024-05-14 15:35).

The strategy is the long-only form of ema_cross that both tools express the same way (the
form ``tests/backtest/test_vectorbt_crosscheck.py`` proves equal to vectorbt bar by bar):
long while EMA(fast) > EMA(slow), flat otherwise; a decision at the close of bar t fills at
the open of t+1; taker fee 0.0005 on every fill, no slippage, no funding, leverage 1, half
the equity per entry, exchange filters off (no min notional to block an entry).

- Engine: ``run_sweep(..., log=False)``: data load, each distinct EMA once (20), then per
  combination rules + the futures simulator + metrics, in the default process pool (and
  once more with ``--workers 1`` in this process).
- vectorbt: TA-Lib EMAs for the 20 windows (the engine's EMA oracle is ``talib.EMA``),
  entry/exit signals for all 100 pairs shifted one bar, then one
  ``Portfolio.from_signals`` with a column per combination (``price=open``, same fee,
  ``size=0.5, size_type='percent'``: half the cash at each entry; when flat, cash is the
  whole value). Sizes differ slightly from the engine's (vectorbt sizes at the fill's open,
  the engine at the decision's close, floored to 1e-8) but every entry fills in both, so
  the trades are the same bars.

Correctness first: for every combination the engine's number of closed trades must equal
vectorbt's (its records of status Closed; an open position at the end is not a trade in
either) and the entry bars of the first combination must be identical. Then each side is
timed (best of 3, warm) and the ratio printed.

Run: ``python bench/sweep.py`` (imports /work/shared/data into a temporary store first;
``--store DIR`` reuses a store that already holds it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from engine.backtest import run_backtest
from engine.data import import_paths
from engine.strategy import load_strategy_text
from engine.sweep import run_sweep
from engine.sweep.executors import default_workers

REPO = Path(__file__).resolve().parents[1]
SHARED = (
    Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "binance-usdm"
)
FAST = list(range(5, 51, 5))
SLOW = list(range(60, 151, 10))
GRID = [f"fast={','.join(map(str, FAST))}", f"slow={','.join(map(str, SLOW))}"]
FEE = 0.0005
STRATEGY = """\
name: ema_long_sweep
params: {fast: 9, slow: 50}
data: {symbols: [BTCUSDT], interval: 5m, start: 2023-01-01, end: 2024-05-14T15:35, funding: false}
features: ["ema_{fast}", "ema_{slow}"]
signals: {long: "ema_{fast} > ema_{slow}"}
risk: {sizing: fixed, fraction: 0.5}
execution: {leverage: 1, margin_mode: isolated, taker_fee: 0.0005, slippage_bps: 0,
            exchange_filters: false, initial_cash: 10000}
"""


def best_of(fn, *, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """The best wall time of ``repeat`` calls, and the output of that call."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        o = fn()
        t = time.perf_counter() - t0
        if t < best:
            best, out = t, o
    return best, out


def vectorbt_sweep(open_: np.ndarray, close: np.ndarray):  # type: ignore[no-untyped-def]
    """vectorbt's parameter sweep: indicators, signals, one portfolio of 100 columns."""
    import pandas as pd
    import talib
    import vectorbt as vbt

    ema = {w: talib.EMA(close, timeperiod=w) for w in sorted(set(FAST) | set(SLOW))}
    cols = [(f, s) for f in FAST for s in SLOW]
    n = close.shape[0]
    long_ = np.empty((n, len(cols)), dtype=bool)
    for j, (f, s) in enumerate(cols):
        long_[:, j] = ema[f] > ema[s]  # NaN compares False: flat while warming up
    prev = np.vstack([np.zeros((1, len(cols)), dtype=bool), long_[:-1]])
    entries = np.vstack([np.zeros((1, len(cols)), dtype=bool), (long_ & ~prev)[:-1]])
    exits = np.vstack([np.zeros((1, len(cols)), dtype=bool), (~long_ & prev)[:-1]])
    index = pd.MultiIndex.from_tuples(cols, names=["fast", "slow"])
    pf = vbt.Portfolio.from_signals(
        close=pd.Series(close),
        entries=pd.DataFrame(entries, columns=index),
        exits=pd.DataFrame(exits, columns=index),
        price=pd.Series(open_),
        size=0.5,
        size_type="percent",
        fees=FEE,
        init_cash=10_000.0,
        direction="longonly",
        freq="5min",
    )
    rec = pf.trades.records
    closed = rec[rec["status"] == 1]
    counts = np.bincount(closed["col"], minlength=len(cols))
    first_entries = np.sort(closed[closed["col"] == 0]["entry_idx"])
    return counts, first_entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--store", help="a data store holding BTCUSDT 5m (default: import to a temp dir)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or import_store(Path(tmp))
        path = Path(tmp) / "ema_long_sweep.yaml"
        path.write_text(STRATEGY)
        # market arrays for vectorbt, from the engine's own load (same bars)
        m = run_backtest(load_strategy_text(STRATEGY), store=store, log=False).market
        print(
            f"BTCUSDT 5m: {m.n_bars:,} bars; grid {len(FAST)} x {len(SLOW)} = {len(FAST) * len(SLOW)}"
        )
        assert m.n_bars == 143_900, m.n_bars
        open_, close = m.open[:, 0], m.close[:, 0]
        workers = default_workers()
        check(path, store, open_, close, workers)
        timing(path, store, open_, close, workers, Path(tmp) / "results", args.repeat)


def import_store(tmp: Path) -> str:
    """Import the shared BTCUSDT/ETHUSDT data into a store in ``tmp``."""
    store = str(tmp / "store")
    t0 = time.perf_counter()
    import_paths([SHARED], store=store)
    print(f"imported {SHARED} in {time.perf_counter() - t0:.1f} s")
    return store


def check(path: Path, store: str, open_: np.ndarray, close: np.ndarray, workers: int) -> None:
    """Correctness first: the same closed trades as vectorbt in every combination, the first
    combination's entry bars identical, and a sweep child equal to a standalone backtest."""
    res = run_sweep(path, GRID, store=store, log=False, workers=workers)
    ours = np.array([r.metrics["trades"] for r in res.results])
    theirs, vbt_first = vectorbt_sweep(open_, close)
    if not np.array_equal(ours, theirs):
        bad = np.flatnonzero(ours != theirs)
        raise SystemExit(
            f"trade counts differ in {bad.size} combinations, e.g. "
            f"{res.results[bad[0]].params}: engine {ours[bad[0]]}, vectorbt {theirs[bad[0]]}"
        )
    first = load_strategy_text(STRATEGY, overrides=res.results[0].params)
    r0 = run_backtest(first, store=store, log=False)
    assert r0.metrics == res.results[0].metrics
    assert np.array_equal(np.sort(r0.sim.trades["entry_bar"]), vbt_first), "entry bars differ"
    print(
        f"check: same closed trades in all {ours.size} combinations "
        f"({ours.min():,} .. {ours.max():,}; {ours.sum():,} in all); first combination's entry "
        "bars identical; sweep child == standalone backtest"
    )


def timing(
    path: Path,
    store: str,
    open_: np.ndarray,
    close: np.ndarray,
    workers: int,
    results: Path,
    repeat: int,
) -> None:
    """Each side warm, best of ``repeat``; the logged sweep once."""
    t_pool, _ = best_of(
        lambda: run_sweep(path, GRID, store=store, log=False, workers=workers), repeat=repeat
    )
    t_one, one = best_of(
        lambda: run_sweep(path, GRID, store=store, log=False, workers=1), repeat=repeat
    )
    t_vbt, _ = best_of(lambda: vectorbt_sweep(open_, close), repeat=repeat)
    t_log, _ = best_of(
        lambda: run_sweep(path, GRID, store=store, results=results, workers=workers), repeat=1
    )
    n = len(FAST) * len(SLOW)
    tm = one.timings  # type: ignore[attr-defined]
    print(
        f"engine sweep, {workers} workers (process pool, spawn): {t_pool:.2f} s "
        f"({t_pool / n * 1000:.1f} ms per combination)"
    )
    print(
        f"engine sweep, 1 worker (this process):       {t_one:.2f} s "
        f"({t_one / n * 1000:.1f} ms per combination; load {tm['load']:.2f} s, "
        f"20 EMAs {tm['features']:.2f} s, combinations {tm['combos']:.2f} s)"
    )
    print(
        f"vectorbt from_signals, 100 columns:         {t_vbt:.2f} s "
        f"({t_vbt / n * 1000:.1f} ms per combination)"
    )
    print(f"engine sweep with the run log (parent + 100 children, equity + trades): {t_log:.2f} s")
    best = min(t_pool, t_one)
    print(f"ratio engine / vectorbt: {best / t_vbt:.2f}x (best engine setting)")


if __name__ == "__main__":
    main()
