"""Benchmark: the engine's fused parameter sweep beside vectorbt's, on real and long data.

Grid: the EMA crossover over windows 10, 20, ..., 200, every fast < slow pair (190
combinations), long-only: long while EMA(fast) > EMA(slow), flat otherwise; a decision at
the close of bar t fills at the open of t+1; taker fee 0.05 % on every fill, no slippage,
no funding, leverage 1, half the equity per entry, exchange filters off. Two datasets:

- ``5m``: BTCUSDT's 143,900 real 5m bars (2023-01-01 .. 2024-05-14 15:35, ../shared/data);
- ``1m``: 525,600 1m bars (one year) of a seeded random walk.

Sides (each in a process of its own so that its peak memory is its own, warmed once, then
``--repeat`` timed runs alternating with the other side's, the best of each side reported,
and every round's ratio: the machine's speed moves between minutes, so both sides sample
the same ones; the peak memory is the first timed run's, measured from its start (after a
garbage collection) with the process's resident memory then included; the largest run's and a
fresh process's first sweep, compiling or loading included, are printed beside it):

- engine: ``engine.sweep.sweep(strategy.yaml, grid={"fast": ..., "slow": ...},
  where=fast < slow)``, the public API: the graphs validated, the data loaded, each
  distinct EMA once (20), then the fused kernel (rules, the futures simulator's own bar
  step, metrics; one lane per core). The timed runs find the market the warm run loaded
  (``load_market`` keeps it while the store's files are unchanged; its ``load`` phase is
  then ~1 ms of stat calls), as vectorbt's side is handed its arrays in memory; the
  report also gives the engine's best time reading the store again in each run;
- vectorbt: TA-Lib EMAs for the 20 windows (the engine's EMA oracle), entries/exits for the
  190 pairs shifted one bar, one ``Portfolio.from_signals`` of 190 columns (``price=open``,
  ``size=0.5, size_type="percent"``, same fee), ``total_return()``.

Correctness first, in this process: (1) the engine's sweep equals its own single backtests
(every metric, ``==``) on sampled combinations; (2) vectorbt, given the engine's entry
quantities (``size_type="amount"`` at the engine's fill bars; the engine sizes at the
decision's close, vectorbt's percent sizing at the fill's open, so only the quantities are
handed over), gives every combination's total return within 1e-9 of the engine's sweep and
the same number of closed trades.

The limit: a trivial numba loop over the same bars x combinations (EMA compare, a long-only
position, the equity mark; no simulator, no metrics) on the same cores, the floor for a
fused sweep on this machine.

Run: ``python bench/sweep.py [--repeat 3] [--datasets 5m,1m]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (
    Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data")) / "binance-usdm"
)
WINDOWS = list(range(10, 201, 10))
FEE = 0.0005
SPANS = {"5m": ("2023-01-01", "2024-05-14T15:35"), "1m": ("2023-01-01", "2023-12-31T23:59")}
STRATEGY = """\
name: ema_long_sweep
params: {{fast: 10, slow: 20}}
data: {{symbols: [BTCUSDT], interval: {interval}, start: {start}, end: {end}, funding: false}}
features: ["ema_{{fast}}", "ema_{{slow}}"]
signals: {{long: "ema_{{fast}} > ema_{{slow}}"}}
risk: {{sizing: fixed, fraction: 0.5}}
execution: {{leverage: 1, margin_mode: isolated, taker_fee: {fee}, slippage_bps: 0,
            exchange_filters: false, initial_cash: 10000}}
"""
GRID = {"fast": WINDOWS[:-1], "slow": WINDOWS[1:]}
PAIRS = [(f, s) for f in WINDOWS for s in WINDOWS if f < s]


def fast_lt_slow(c: dict) -> bool:  # type: ignore[type-arg]
    return bool(c["fast"] < c["slow"])


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: its own; ``ru_maxrss`` would carry the
    parent's peak across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Start this process's peak over from its current resident memory (Linux: ``5`` into
    ``/proc/self/clear_refs``), so that :func:`peak_mb` measures what follows alone;
    False where that cannot be done (the peak then covers the process's life)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """The best wall time of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------------------ the sides


def engine_side(d: Path) -> tuple[Callable[[], Any], Callable[[Any], dict]]:  # type: ignore[type-arg]
    """The engine's public sweep (a timed run) and, after the rounds, what the report adds:
    the results, the phases, the trivial-loop floor and the CPU split."""
    from engine.sweep import sweep

    def run():  # type: ignore[no-untyped-def]
        return sweep(d / "strategy.yaml", grid=GRID, where=fast_lt_slow, store=d / "store")

    def reloaded() -> None:  # a run that reads the store again (no kept market)
        from engine.decisions.market import clear_market_cache

        clear_market_cache()
        run()

    def extras(df) -> dict:  # type: ignore[no-untyped-def,type-arg]
        return {
            "reloaded": best_time(reloaded, 3),
            "total_return": df["total_return"].to_list(),
            "trades": df["trades"].to_list(),
            "pairs": list(zip(df["fast"].to_list(), df["slow"].to_list(), strict=True)),
            "phases": _engine_phases(d),
            "floor": floor_loop(np.load(d / "open.npy"), np.load(d / "close.npy"), 3),
            "cpu": cpu_split(d),
        }

    return run, extras


def _engine_phases(d: Path) -> dict[str, float]:
    from engine.sweep import run_sweep
    from engine.sweep.api import grid_items
    from engine.sweep.grid import combinations, parse_grid

    items = grid_items(GRID)
    combos = [c for c in combinations(parse_grid(items)) if fast_lt_slow(c)]
    res = run_sweep(d / "strategy.yaml", items, combos=combos, store=d / "store", log=False)
    return {k: round(v, 4) for k, v in res.timings.items()}


def cpu_split(d: Path) -> dict[str, float]:
    """CPU time (``thread_time``, one thread: what the machine's other load does not
    inflate) per bar-combination: the fused kernel on one lane, and inside it the
    simulator's bar step alone (``simulate_nb`` folding the same bar step over the first
    combination's decisions, its state allocated beforehand)."""
    from engine.backtest import run_backtest
    from engine.sim.api import _new_records
    from engine.sim.bars import bar_blocks, next_funding_bars
    from engine.sim.fold import simulate_nb
    from engine.sim.loop import new_liq_memo
    from engine.sim.specs import spec_arrays
    from engine.sim.state import new_account, new_breaker, new_pending
    from engine.strategy import load_strategy
    from engine.strategy.execution import sim_config, symbol_specs
    from engine.sweep import fused
    from engine.sweep.api import grid_items
    from engine.sweep.combos import data_key
    from engine.sweep.grid import combinations, parse_grid
    from engine.sweep.runner import _prepare, build_graphs

    combos = [c for c in combinations(parse_grid(grid_items(GRID))) if fast_lt_slow(c)]
    combos, graphs = build_graphs(d / "strategy.yaml", parse_grid(grid_items(GRID)), combos=combos)
    shared, columns = _prepare(graphs, d / "store", None, False, False, {}, None)
    plan = fused.plan(graphs, shared.markets, columns, data_key)
    assert plan is not None
    grp = plan.groups[0]
    st, work = fused.lane_state(grp)
    n_bars = grp.market.open.shape[0]

    def kernel_ns(rows: np.ndarray) -> float:  # best of 3, CPU ns per bar-combination
        out, best = np.zeros((rows.size, fused.K.N_STATS)), float("inf")
        for _ in range(3):
            t0 = time.thread_time()
            fused.K.lane_nb(
                grp.market, grp.spec, grp.programs, rows, np.zeros(1, np.int64), st, work, out
            )
            best = min(best, time.thread_time() - t0)
        return best / (rows.size * n_bars) * 1e9

    kernel = kernel_ns(np.arange(len(graphs)))
    first = kernel_ns(np.zeros(1, dtype=np.int64))
    bt = run_backtest(
        load_strategy(d / "strategy.yaml", overrides=combos[0]), store=d / "store", log=False
    )
    m, n = bt.market, bt.market.n_bars
    recs = _new_records(n, 1, funding_bars=0)
    args = (np.full((n, 1), np.nan), np.empty((0, 1)), bt.decisions.direction, np.empty((0, 1)),
            np.empty((0, 1)), np.empty((0, 1)), m.open_time, spec_arrays(symbol_specs(bt.graph)),
            sim_config(bt.graph).to_params())  # fmt: skip
    best = float("inf")
    for _ in range(3):
        for buf in recs:
            buf[0][0] = 0
        outs = (np.empty(n), np.empty(n), np.zeros((n, 1)), np.zeros((n, 1)),
                np.zeros((n, 1), np.int64), np.empty(0), new_liq_memo(1),
                next_funding_bars(args[0]), bar_blocks(m.open, m.high, m.low, m.close, args[6]))  # fmt: skip
        state = (new_account(1, cash=10_000.0), new_pending(1), new_breaker(equity=10_000.0), recs)
        t0 = time.thread_time()
        simulate_nb(m.open, m.high, m.low, m.close, *args[:2], args[2], *args[3:6], args[6],
                    args[7], args[8], *state, *outs)  # fmt: skip
        best = min(best, time.thread_time() - t0)
    return {"kernel_ns": kernel, "first_ns": first, "sim_ns": best / n * 1e9}


def floor_loop(open_: np.ndarray, close: np.ndarray, repeat: int) -> dict[str, float]:
    """The same bars x combinations through a trivial numba loop (precomputed EMAs, a
    long-only position at the next open, the equity marked each bar, one lane per core)."""
    from concurrent.futures import ThreadPoolExecutor

    import numba
    import talib

    @numba.njit(nogil=True, cache=False)
    def lane(o, c, emas, pairs, lane_i, n_lanes, out):  # type: ignore[no-untyped-def]
        k = lane_i
        while k < pairs.shape[0]:
            f, s = emas[pairs[k, 0]], emas[pairs[k, 1]]
            cash, qty, want, peak, dd = 10_000.0, 0.0, False, 10_000.0, 0.0
            for t in range(o.shape[0]):
                if want and qty == 0.0:
                    qty = 0.5 * cash / o[t]
                    cash -= qty * o[t] * (1 + 0.0005)
                elif not want and qty != 0.0:
                    cash += qty * o[t] * (1 - 0.0005)
                    qty = 0.0
                eq = cash + qty * c[t]
                peak = max(peak, eq)
                dd = max(dd, 1.0 - eq / peak)
                want = f[t] > s[t]
            out[k] = cash + qty * c[-1] + dd * 0.0
            k += n_lanes

    emas = np.stack([talib.EMA(close, timeperiod=w) for w in WINDOWS])
    idx = {w: i for i, w in enumerate(WINDOWS)}
    pairs = np.array([(idx[f], idx[s]) for f, s in PAIRS], dtype=np.int64)
    out = np.zeros(len(PAIRS))
    n = len(os.sched_getaffinity(0))

    def run() -> None:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda i: lane(open_, close, emas, pairs, i, n, out), range(n)))

    run()
    t = best_time(run, repeat)
    t0 = time.thread_time()
    lane(open_, close, emas, pairs, 0, 1, out)
    cpu = (time.thread_time() - t0) / (close.size * len(PAIRS)) * 1e9
    return {"time": t, "ns_per_bar_combo": t / (close.size * len(PAIRS)) * 1e9, "cpu_ns": cpu}


def vectorbt_side(d: Path) -> tuple[Callable[[], Any], Callable[[Any], dict]]:  # type: ignore[type-arg]
    """vectorbt's own sweep over the same bars (read from .npy: no engine in this process)."""
    open_, close = np.load(d / "open.npy"), np.load(d / "close.npy")
    freq = json.loads((d / "meta.json").read_text())["freq"]
    return (lambda: vectorbt_sweep(open_, close, freq)), (lambda out: {"total_return": out})


def serve(which: str, d: Path) -> None:
    """A side's process: one warm run, then a timed run for every ``run`` line on stdin (its
    wall and CPU time back as a JSON line), then at ``finish`` its report: the best round's
    times, the first timed run's peak memory (and the largest run's) and the side's extras."""
    run, extras = engine_side(d) if which == "engine" else vectorbt_side(d)
    run()  # warm: numba caches loaded, first-touch costs paid
    fresh = peak_mb()  # a fresh process's first sweep (imports, data, loading kernels)
    print("ready", flush=True)
    best: tuple[float, float, Any] | None = None
    peaks: list[float] = []
    for line in sys.stdin:
        if line.strip() == "finish":
            break
        gc.collect()  # the last round's cycles, outside the timed run
        per_run = reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        out = run()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        peaks.append(peak_mb() if per_run else float("nan"))
        if best is None or t < best[0]:
            best = (t, c, out)
        print(json.dumps({"time": t, "cpu_time": c}), flush=True)
    assert best is not None, "no timed run"
    # the peak of one sweep: the first timed run's (the process's resident memory at its
    # start included: imports, data), whatever --repeat; a process that cannot start its
    # peak over reports its life's
    peak = peaks[0] if peaks[0] == peaks[0] else peak_mb()
    out = {
        "time": best[0], "cpu_time": best[1], "peak_mb": peak, "peak_max_mb": max(peaks),
        "peak_fresh_mb": fresh,
    }  # fmt: skip
    print(json.dumps({**out, **extras(best[2])}))


def _signals(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entries and exits of every pair, shifted to the fill bar (the next open)."""
    import talib

    ema = {w: talib.EMA(close, timeperiod=w) for w in WINDOWS}
    n = close.shape[0]
    long_ = np.empty((n, len(PAIRS)), dtype=bool)
    for j, (f, s) in enumerate(PAIRS):
        long_[:, j] = ema[f] > ema[s]  # NaN compares False: flat while warming up
    prev = np.vstack([np.zeros((1, len(PAIRS)), dtype=bool), long_[:-1]])
    entries = np.vstack([np.zeros((1, len(PAIRS)), dtype=bool), (long_ & ~prev)[:-1]])
    exits = np.vstack([np.zeros((1, len(PAIRS)), dtype=bool), (~long_ & prev)[:-1]])
    return entries, exits


def vectorbt_sweep(open_: np.ndarray, close: np.ndarray, freq: str, size=None):  # type: ignore[no-untyped-def]
    """vectorbt's sweep: indicators, signals, one portfolio of 190 columns; total returns
    (and closed trades per column when ``size`` is given: the check)."""
    import pandas as pd
    import vectorbt as vbt

    entries, exits = _signals(close)
    index = pd.MultiIndex.from_tuples(PAIRS, names=["fast", "slow"])
    sizing = (
        {"size": 0.5, "size_type": "percent"}
        if size is None
        else {"size": pd.DataFrame(size, columns=index), "size_type": "amount"}
    )
    pf = vbt.Portfolio.from_signals(
        close=pd.Series(close),
        entries=pd.DataFrame(entries, columns=index),
        exits=pd.DataFrame(exits, columns=index),
        price=pd.Series(open_),
        fees=FEE,
        init_cash=10_000.0,
        direction="longonly",
        freq=freq,
        **sizing,
    )
    ret = pf.total_return().to_numpy().tolist()
    if size is None:
        return ret
    rec = pf.trades.records
    closed = rec[rec["status"] == 1]
    return ret, np.bincount(closed["col"], minlength=len(PAIRS))


# --------------------------------------------------------------------------- the datasets


def prepare(name: str, root: Path) -> Path:
    """A folder with the store, the strategy file and the OHLC arrays of dataset ``name``."""
    from engine.data import import_paths, load_candles

    d = root / name
    (d / "store").mkdir(parents=True)
    if name == "5m":
        import_paths([SHARED / "klines" / "BTCUSDT-5m.csv.gz"], store=d / "store")
    else:
        csv = d / "BTCUSDT-1m.csv"
        random_walk(525_600).write_csv(csv)
        import_paths([csv], store=d / "store", market="usdm", symbol="BTCUSDT", interval="1m")
    start, end = SPANS[name]
    (d / "strategy.yaml").write_text(STRATEGY.format(interval=name, start=start, end=end, fee=FEE))
    c = load_candles("BTCUSDT", name, store=d / "store")
    np.save(d / "open.npy", c["open"].to_numpy())
    np.save(d / "close.npy", c["close"].to_numpy())
    (d / "meta.json").write_text(json.dumps({"freq": "5min" if name == "5m" else "1min"}))
    return d


def random_walk(n: int):  # type: ignore[no-untyped-def]
    """``n`` 1m bars from 2023-01-01 of a seeded geometric random walk (each open = the
    previous close), prices on a 0.1 tick."""
    import polars as pl

    rng = np.random.default_rng(20231)
    close = np.round(20_000 * np.exp(np.cumsum(rng.normal(0, 6e-4, n))), 1)
    open_ = np.r_[20_000.0, close[:-1]]
    wick = np.abs(rng.normal(0, 3e-4, (2, n)))
    high = np.round(np.maximum(open_, close) * (1 + wick[0]), 1)
    low = np.round(np.minimum(open_, close) * (1 - wick[1]), 1)
    t0 = 1_672_531_200_000  # 2023-01-01 00:00 UTC
    return pl.DataFrame({
        "open_time": t0 + 60_000 * np.arange(n, dtype=np.int64),
        "open": open_, "high": high, "low": low, "close": close,
        "volume": np.round(rng.lognormal(2, 1, n), 3),
    })  # fmt: skip


# ---------------------------------------------------------------------------- the check


def check(d: Path) -> tuple[float, int]:
    """The engine's sweep == its single backtests (sampled), and == vectorbt given the
    engine's quantities (total return within 1e-9, the same closed trades, every pair)."""
    import random

    from engine.backtest import run_backtest
    from engine.strategy import load_strategy
    from engine.sweep import sweep

    df = sweep(d / "strategy.yaml", grid=GRID, where=fast_lt_slow, store=d / "store")
    assert list(zip(df["fast"], df["slow"], strict=True)) == PAIRS
    rows = df.to_dicts()
    open_, close = np.load(d / "open.npy"), np.load(d / "close.npy")
    size = np.full((close.size, len(PAIRS)), np.nan)
    for j, (f, s) in enumerate(PAIRS):
        graph = load_strategy(d / "strategy.yaml", overrides={"fast": f, "slow": s})
        bt = run_backtest(graph, store=d / "store", log=False)
        if j in random.Random(3).sample(range(len(PAIRS)), 8):
            got = {k: rows[j][k] for k in bt.metrics}
            assert got == bt.metrics, (f, s, got, bt.metrics)
        fills = bt.sim.fills
        entry = fills[fills["side"] > 0]
        size[entry["bar"], j] = entry["qty"]
    freq = json.loads((d / "meta.json").read_text())["freq"]
    ret, trades = vectorbt_sweep(open_, close, freq, size=size)
    diff = np.abs(np.array(ret) - df["total_return"].to_numpy())
    if not np.array_equal(trades, df["trades"].to_numpy()):
        bad = int(np.flatnonzero(trades != df["trades"].to_numpy())[0])
        raise SystemExit(f"closed trades differ at {PAIRS[bad]}: vectorbt {trades[bad]}")
    if diff.max() >= 1e-9:
        bad = int(diff.argmax())
        raise SystemExit(f"total return differs at {PAIRS[bad]} by {diff[bad]:.3g}")
    return float(diff.max()), int(trades.sum())


# ----------------------------------------------------------------------------- the report


class Side:
    """A side's own process (:func:`serve`), started warm and then timed on demand, so that
    the two sides' rounds can alternate: the machine's speed moves by tens of percent from
    one minute to the next here, and both sides then sample the same minutes."""

    def __init__(self, which: str, d: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--side", which, "--dir", str(d)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        self._expect("ready")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a bench side exited with {self.proc.wait()}")
        return line.strip()

    def _expect(self, word: str) -> None:
        while self._line() != word:
            pass  # library chatter before the side is ready

    def _json(self) -> dict:  # type: ignore[type-arg]
        while not (line := self._line()).startswith("{"):
            pass  # library chatter
        return json.loads(line)  # type: ignore[no-any-return]

    def _send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def run(self) -> float:
        """One timed run; its wall time."""
        self._send("run")
        return float(self._json()["time"])

    def finish(self) -> dict:  # type: ignore[type-arg]
        """The side's report (best round, peak memory, extras); the process ends."""
        self._send("finish")
        out = self._json()
        self.proc.wait()
        return out


def report(name: str, d: Path, repeat: int) -> None:
    n = np.load(d / "close.npy").size
    t0 = time.perf_counter()
    max_diff, trades = check(d)
    print(
        f"\n== {name}: {n:,} bars x {len(PAIRS)} combinations = {n * len(PAIRS) / 1e6:.1f} M "
        f"bar-combinations\ncheck ({time.perf_counter() - t0:.0f} s): sweep == single backtests "
        f"(every metric, 8 sampled); vectorbt with the engine's quantities: same closed trades "
        f"({trades:,}), max |total_return diff| {max_diff:.2e} (< 1e-9)"
    )
    sides = {"engine": Side("engine", d), "vectorbt": Side("vectorbt", d)}
    times: dict[str, list[float]] = {"engine": [], "vectorbt": []}
    for r in range(repeat):  # alternate, each side first every other round
        for which in ("engine", "vectorbt") if r % 2 == 0 else ("vectorbt", "engine"):
            times[which].append(sides[which].run())
    eng, vbt = sides["engine"].finish(), sides["vectorbt"].finish()
    rounds = [v / e for e, v in zip(times["engine"], times["vectorbt"], strict=True)]
    bc = n * len(PAIRS)
    for label, s in (("engine  (fused sweep)", eng), ("vectorbt (from_signals)", vbt)):
        print(
            f"{label:24s} {s['time']:7.3f} s  {bc / s['time'] / 1e6:8.1f} M bar-combos/s  "
            f"{s['time'] / bc * 1e9:6.2f} ns/bar-combo  CPU {s['cpu_time']:7.3f} s  "
            f"peak {s['peak_mb']:7.0f} MB (largest round {s['peak_max_mb']:.0f} MB; a fresh "
            f"process's first sweep {s['peak_fresh_mb']:.0f} MB)"
        )
    pct = np.abs(np.array(eng["total_return"]) - np.array(vbt["total_return"]))
    print(
        f"throughput ratio engine/vectorbt: {vbt['time'] / eng['time']:.1f}x wall, "
        f"{vbt['cpu_time'] / eng['cpu_time']:.1f}x CPU time; peak memory ratio "
        f"vectorbt/engine: {vbt['peak_mb'] / eng['peak_mb']:.1f}x (target >= 20x at <= 1/5 "
        f"the memory); the {repeat} alternating rounds' ratios (vectorbt's time / the engine's): "
        f"{', '.join(f'{x:.1f}x' for x in rounds)}, median {float(np.median(rounds)):.1f}x"
    )
    print(
        f"the engine reading the store again in each run (no kept market; best of 3 after the "
        f"rounds): {eng['reloaded']:.3f} s, {vbt['time'] / eng['reloaded']:.1f}x vectorbt's best"
    )
    cpu, fl = eng["cpu"], eng["floor"]
    print(
        f"where the engine's time goes: phases (s) {eng['phases']}; CPU per bar-combination "
        f"on one thread: fused kernel {cpu['kernel_ns']:.1f} ns over all 190; for the first "
        f"pair (10/20, the most trades) {cpu['first_ns']:.1f} ns (rules, decisions, the bar "
        f"step, record draining and statistics), against {cpu['sim_ns']:.1f} ns for the "
        f"backtest's bar step alone over the same decisions (simulate_nb, which also writes "
        f"each bar's target and reason; the sweep's steady runs do not)"
    )
    print(
        f"machine floor (trivial numba loop: EMA compare, long-only position, equity mark): "
        f"{fl['ns_per_bar_combo']:.2f} ns/bar-combo wall on the same cores, "
        f"{fl['cpu_ns']:.2f} ns CPU on one thread; the engine's kernel is "
        f"{cpu['kernel_ns'] / fl['cpu_ns']:.0f}x that floor per bar-combination. "
        f"(vectorbt's percent sizing at the fill's open vs the engine's at the decision close: "
        f"timed runs differ by up to {pct.max():.1e} in total return)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--datasets", default="5m,1m")
    ap.add_argument("--side", choices=("engine", "vectorbt"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.side:
        serve(args.side, Path(args.dir))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            report(name, prepare(name, Path(tmp)), args.repeat)


if __name__ == "__main__":
    main()
