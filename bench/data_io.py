"""Data store I/O beside its peer, pandas, in one run.

Measures
  1. import: the real 5m futures CSVs (BTCUSDT, ETHUSDT: 287,801 rows) into the store with
     ``engine.data.import_paths`` (parse, validate, partition by month, atomic writes), against
     pandas ``read_csv`` + ``to_parquet`` (one file per symbol, no validation);
  2. load: one symbol's full 5m history (143,900 bars) with ``engine.data.load_candles``,
     against pandas ``read_parquet`` of the file it wrote.

Both paths are first checked to hold the same data. Targets (issue 2): load under 30 ms;
import at least 5x the pandas path. Besides wall time the import's CPU time (all threads)
is printed: on a loaded machine the wall ratio tends to the CPU ratio.

Run: ``python bench/data_io.py [--repeat N]`` (data from $ENGINE_SHARED_DATA or ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl

from engine.data import import_paths, load_candles

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data"))
FILES = [SHARED / "binance-usdm" / "klines" / f"{s}-5m.csv.gz" for s in ("BTCUSDT", "ETHUSDT")]


CPU: dict[str, list[float]] = {}  # process CPU seconds per run, by function name


def race(
    a: Callable[[], object],
    b: Callable[[], object],
    repeat: int,
    setup: Callable[[], None] | None = None,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(best, median) wall seconds of ``a`` and of ``b``, run alternately so that both see
    the same machine load; ``setup`` runs untimed before each run. The CPU seconds of each
    run (all threads) are kept in ``CPU`` under the function's name."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((a, times[0]), (b, times[1])):
            if setup is not None:
                setup()
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
            CPU.setdefault(getattr(fn, "__name__", "?"), []).append(time.process_time() - c0)
    return (min(times[0]), statistics.median(times[0])), (
        min(times[1]),
        statistics.median(times[1]),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_data_io_"))
    store = work / "store"
    pdir = work / "pandas"
    try:

        def fresh() -> None:
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(pdir, ignore_errors=True)
            pdir.mkdir()

        def engine_import() -> None:
            import_paths(FILES, store=store)

        def pandas_import() -> None:
            for f in FILES:
                pd.read_csv(f).to_parquet(pdir / (f.name.split("-")[0] + ".parquet"))

        # correctness first: both paths hold the same bars
        fresh()
        engine_import()
        pandas_import()
        rows = 0
        for f in FILES:
            sym = f.name.split("-")[0]
            ours = load_candles(sym, "5m", store=store)
            theirs = pl.from_pandas(pd.read_parquet(pdir / f"{sym}.parquet"))
            theirs = theirs.with_columns(pl.col(c).cast(pl.Float64) for c in theirs.columns[1:])
            assert ours.equals(theirs), f"{sym}: engine and pandas disagree"
            rows += ours.height
        print(f"checked: engine store == pandas parquet for {len(FILES)} files, {rows:,} rows")

        (e_imp, e_imp_med), (p_imp, p_imp_med) = race(
            engine_import, pandas_import, args.repeat, fresh
        )
        fresh()
        engine_import()
        pandas_import()
        (e_load, e_load_med), (p_load, p_load_med) = race(
            lambda: load_candles("BTCUSDT", "5m", store=store),
            lambda: pd.read_parquet(pdir / "BTCUSDT.parquet"),
            args.repeat * 3,
        )
        n_load = load_candles("BTCUSDT", "5m", store=store).height

        print()
        print(f"{'measure':38} {'engine':>14} {'pandas':>14} {'ratio':>8}")
        print(
            f"{'import 5m CSVs, rows/s (best)':38} {rows / e_imp:>14,.0f} {rows / p_imp:>14,.0f}"
            f" {p_imp / e_imp:>7.1f}x"
        )
        print(f"{'import 5m CSVs, ms (best / median)':38} {e_imp * 1e3:>6.1f} / {e_imp_med * 1e3:<5.1f}"
              f" {p_imp * 1e3:>6.1f} / {p_imp_med * 1e3:<5.1f}")  # fmt: skip
        e_cpu, p_cpu = min(CPU["engine_import"]), min(CPU["pandas_import"])
        print(
            f"{'import 5m CSVs, CPU ms (all threads)':38} {e_cpu * 1e3:>14.1f} {p_cpu * 1e3:>14.1f}"
            f" {p_cpu / e_cpu:>7.1f}x"
        )
        print(
            f"{f'load {n_load:,} bars, ms (best / median)':38} {e_load * 1e3:>6.1f} / {e_load_med * 1e3:<5.1f}"
            f" {p_load * 1e3:>6.1f} / {p_load_med * 1e3:<5.1f} {p_load / e_load:>7.1f}x"
        )
        print()
        ok_load = e_load * 1e3 < 30
        ok_imp = p_imp / e_imp >= 5
        print(f"target load < 30 ms: {'met' if ok_load else 'NOT met'} ({e_load * 1e3:.1f} ms)")
        print(
            f"target import >= 5x pandas: {'met' if ok_imp else 'NOT met'} ({p_imp / e_imp:.1f}x)"
        )
        print(f"(machine: {os.cpu_count()} cores, shared; best of {args.repeat})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
