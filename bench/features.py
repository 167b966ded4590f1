"""Features beside TA-Lib, in one run: correctness first, then batch and streaming cost.

    python bench/features.py [--repeat 7]

(a) batch: the whole catalogue (with _15m and _1h variants) over BTCUSDT's 143,900 5m bars,
    and the TA-Lib-covered subset beside TA-Lib's own time for the same calls
    (targets: catalogue < 100 ms, subset <= 1.5x TA-Lib);
(b) streaming: one new bar through the whole catalogue, after 1e3 and after 1e6 bars of
    history (target < 20 us per bar at both, no growth with history).

Timings are warm (every kernel compiled first) and the best of ``--repeat`` runs; the subset
and TA-Lib alternate run by run. Both sides compute the same 21 outputs; ours includes taking
the columns out of the polars frame and building the result frame, TA-Lib gets numpy arrays
and returns them (ADX, +DI and -DI are three TA-Lib calls: it has no call giving all three).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import talib

from engine.features import FeatureStream, compute, default_names

CSV = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "binance-usdm"
    / "klines"
    / "BTCUSDT-5m.csv.gz"
)

# Our names for every TA-Lib call of the subset, and the TA-Lib calls themselves.
SUBSET = [
    "rsi_14", "rsi_28", "ema_9", "ema_20", "ema_50", "ema_200", "volume_sma_20",
    "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower",
    "atr_14", "atr_pct_14", "obv", "adx_14", "plus_di_14", "minus_di_14",
    "momentum_10", "volume_momentum_10",
]  # fmt: skip


def talib_subset(o, h, lo, c, v) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    macd = talib.MACD(c, 12, 26, 9)
    bb = talib.BBANDS(c, 20, 2, 2, 0)
    return {
        "rsi_14": talib.RSI(c, 14), "rsi_28": talib.RSI(c, 28),
        "ema_9": talib.EMA(c, 9), "ema_20": talib.EMA(c, 20), "ema_50": talib.EMA(c, 50),
        "ema_200": talib.EMA(c, 200), "volume_sma_20": talib.SMA(v, 20),
        "macd": macd[0], "macd_signal": macd[1], "macd_hist": macd[2],
        "bb_upper": bb[0], "bb_middle": bb[1], "bb_lower": bb[2],
        "atr_14": talib.ATR(h, lo, c, 14), "atr_pct_14": talib.NATR(h, lo, c, 14),
        "obv": talib.OBV(c, v), "adx_14": talib.ADX(h, lo, c, 14),
        "plus_di_14": talib.PLUS_DI(h, lo, c, 14), "minus_di_14": talib.MINUS_DI(h, lo, c, 14),
        "momentum_10": talib.MOM(c, 10), "volume_momentum_10": talib.MOM(v, 10),
    }  # fmt: skip


def load_btc() -> tuple[pl.DataFrame, str]:
    try:
        from engine.data import load_candles

        return load_candles("BTCUSDT", "5m"), "engine.data.load_candles"
    except Exception as err:  # no store here: read the shared CSV directly
        reason = str(err).splitlines()[0]
        return pl.read_csv(
            CSV, schema_overrides={"open_time": pl.Int64}
        ), f"{CSV.name} ({reason[:60]}...)"


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_pair(
    fn_a: Callable[[], object], fn_b: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Best times of two functions run alternately (a, b, a, b, ...)."""
    ta, tb = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(ta), min(tb)


def max_rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    has = ~np.isnan(ref)
    if np.isnan(ours[has]).any():
        return float("inf")
    denom = np.maximum(np.abs(ref[has]), 1e-6 * np.max(np.abs(ref[has])))
    denom[denom == 0] = 1.0
    return float(np.max(np.abs(ours[has] - ref[has]) / denom))


def stream_cost(fs: FeatureStream, bars: list[dict[str, float]], repeat: int) -> float:
    """Best per-bar cost (us) over ``repeat`` blocks of bars fed through ``update``."""
    per = len(bars) // repeat
    costs = []
    for r in range(repeat):
        block = bars[r * per : (r + 1) * per]
        t0 = time.perf_counter()
        for bar in block:
            fs.update(bar)
        costs.append((time.perf_counter() - t0) / len(block) * 1e6)
    return min(costs)


def random_walk_bars(n: int, *, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    op = np.concatenate([[30_000.0], close[:-1]])
    return {
        "open_time": 1_500_000_000_000 // 3_600_000 * 3_600_000
        + 300_000 * np.arange(n, dtype=np.int64),
        "open": op,
        "high": np.maximum(op, close) * (1 + np.abs(rng.normal(0, 5e-4, n))),
        "low": np.minimum(op, close) * (1 - np.abs(rng.normal(0, 5e-4, n))),
        "close": close,
        "volume": rng.gamma(2.0, 50.0, n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    df, source = load_btc()
    print(f"BTCUSDT 5m: {df.height:,} bars from {source}")
    ohlcv = [
        df[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close", "volume")
    ]
    check_against_talib(df, ohlcv)
    names = default_names("5m")
    batch(df, ohlcv, names, args.repeat)
    streaming(names)


def check_against_talib(df: pl.DataFrame, ohlcv: list[np.ndarray]) -> None:
    """Correctness first: the subset equals TA-Lib's to 1e-9 relative, else nothing is timed."""
    compute(df.head(1_000), interval="5m")  # compile
    ref = talib_subset(*ohlcv)
    ours = compute(df, SUBSET, interval="5m")
    worst = max((max_rel_error(ours[k].to_numpy(), ref[k]), k) for k in SUBSET)
    print(f"check vs TA-Lib: {len(SUBSET)} series, max relative error {worst[0]:.2e} ({worst[1]})")
    if not worst[0] < 1e-9:
        raise SystemExit("FAILED: features differ from TA-Lib; not timing")


def batch(df: pl.DataFrame, ohlcv: list[np.ndarray], names: list[str], repeat: int) -> None:
    """(a) The whole catalogue, and the TA-Lib subset beside TA-Lib."""
    t_all = best(lambda: compute(df, names, interval="5m"), repeat)
    # Ours and TA-Lib alternate run by run, so both sides see the same load on a shared machine.
    t_sub, t_ta = best_pair(
        lambda: compute(df, SUBSET, interval="5m"), lambda: talib_subset(*ohlcv), repeat
    )
    print(f"\n(a) batch over all bars (warm, best of {repeat})")
    print(
        f"  whole catalogue, {len(names)} features (incl. _15m, _1h): {t_all * 1e3:8.1f} ms   target < 100 ms"
    )
    print(f"  TA-Lib subset, ours ({len(SUBSET)} series):           {t_sub * 1e3:8.1f} ms")
    print(f"  TA-Lib subset, TA-Lib:                          {t_ta * 1e3:8.1f} ms")
    print(
        f"  ratio ours / TA-Lib:                            {t_sub / t_ta:8.2f} x   target <= 1.5x"
    )


def streaming(names: list[str]) -> None:
    """(b) One bar through the whole catalogue after 1e3 and after 1e6 bars of history."""
    hist_small, hist_big, probe = 1_000, 1_000_000, 5_000
    walk = random_walk_bars(hist_big + 2 * probe, seed=7)
    cols = list(walk)
    bars_small = [
        dict(zip(cols, row, strict=True))
        for row in zip(*(walk[k][: hist_small + probe].tolist() for k in cols), strict=True)
    ]
    fs = FeatureStream(names, interval="5m")
    for bar in bars_small[:hist_small]:
        fs.update(bar)
    us_small = stream_cost(fs, bars_small[hist_small:], repeat=5)

    fs2 = FeatureStream(names, interval="5m")
    t_arr = walk["open_time"].tolist()
    arrs = [walk[k].tolist() for k in ("open", "high", "low", "close", "volume")]
    t0 = time.perf_counter()
    for i in range(hist_big):
        fs2.update_values(t_arr[i], arrs[0][i], arrs[1][i], arrs[2][i], arrs[3][i], arrs[4][i])
    fill = time.perf_counter() - t0
    keys = ("open", "high", "low", "close", "volume")
    bars_big = [
        {"open_time": t_arr[i], **{k: arrs[j][i] for j, k in enumerate(keys)}}
        for i in range(hist_big, hist_big + probe)
    ]
    us_big = stream_cost(fs2, bars_big, repeat=5)
    print(
        f"\n(b) streaming one bar through the whole catalogue ({len(names)} features), FeatureStream.update"
    )
    print(f"  after {hist_small:>9,} bars: {us_small:6.2f} us/bar   target < 20 us")
    print(f"  after {hist_big:>9,} bars: {us_big:6.2f} us/bar   target < 20 us")
    print(f"  ratio (1e6 / 1e3):    {us_big / us_small:6.2f}      target ~1 (O(1) in history)")
    print(
        f"  (feeding the 1e6 bars of history took {fill:.1f} s, {fill / hist_big * 1e6:.2f} us/bar without the dict)"
    )


if __name__ == "__main__":
    main()
