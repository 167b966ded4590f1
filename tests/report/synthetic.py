"""A synthetic run for report tests: a random-walk price, a toy rule, two models with labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.metrics import compute_metrics
from engine.runlog import RunLog

BAR = 3_600_000  # 1h
START = 1_672_531_200_000  # 2023-01-01


def write_synthetic_run(
    results: Path, *, n: int = 24 * 120, models: bool = True, seed: int = 1
) -> str:
    """Write one finished backtest-like run (bulk) and return its run_id."""
    rng = np.random.default_rng(seed)
    times = START + np.arange(n, dtype=np.int64) * BAR
    close = 20_000 * np.cumprod(1 + rng.normal(0, 0.004, n))
    up = np.r_[(close[1:] > close[:-1]).astype(np.int64), 0]
    signal = np.where(np.sin(np.arange(n) / 40.0) > 0, 1, -1)
    pos = np.r_[0, signal[:-1]]  # decided at bar t, held from t+1
    ret = np.r_[0.0, close[1:] / close[:-1] - 1]
    equity = 10_000 * np.cumprod(1 + 0.5 * pos * ret)
    change = np.flatnonzero(np.diff(pos) != 0) + 1
    trades = []
    for a, b in zip(change[:-1], change[1:], strict=False):
        side = "long" if pos[a] > 0 else "short"
        q = 0.25
        pnl = q * (close[b] - close[a]) * (1 if side == "long" else -1) - 0.5
        trades.append(
            {
                "symbol": "BTCUSDT",
                "side": side,
                "entry_time": int(times[a]),
                "exit_time": int(times[b]),
                "entry_price": float(close[a]),
                "exit_price": float(close[b]),
                "quantity": q,
                "pnl": float(pnl),
                "fees": 0.5,
                "funding": 0.0,
                "exit_reason": "signal",
            }
        )
    trades_df = pl.DataFrame(trades)
    action = np.where(signal > 0, "long", "short")
    log = RunLog(results)
    params = {
        "symbols": ["BTCUSDT"],
        "interval": "1h",
        "start": int(times[0]),
        "end": int(times[-1]),
        "store": str(results / "no-store-here"),
    }
    rid = log.start_run(
        mode="backtest", strategy="synthetic", params=params, strategy_hash="abc123"
    )
    fused = np.clip(0.5 + 0.3 * (up - 0.5) + rng.normal(0, 0.15, n), 0.01, 0.99)
    log.write(
        rid,
        "ensemble_decisions",
        pl.DataFrame(
            {
                "symbol": ["BTCUSDT"] * n,
                "open_time": times,
                "action": action,
                "target_position": signal * 0.25,
                "confidence": np.abs(fused - 0.5) * 2,
                "probability": fused,
                "price": close,
            }
        ),
    )
    if models:
        rows = []
        for name, noise, w in (("lightgbm", 0.1, 0.6), ("xgboost", 0.3, 0.4)):
            p = np.clip(0.5 + 0.35 * (up - 0.5) + rng.normal(0, noise, n), 0.01, 0.99)
            rows.append(
                pl.DataFrame(
                    {
                        "symbol": ["BTCUSDT"] * n,
                        "open_time": times,
                        "model": [name] * n,
                        "model_version": [f"{name}-2023-01-01"] * n,
                        "probability": p,
                        "weight": np.full(n, w),
                        "label": up,
                    }
                )
            )
        log.write(rid, "model_predictions", pl.concat(rows))
    log.write(rid, "trades", trades_df)
    log.write(
        rid,
        "equity",
        pl.DataFrame(
            {
                "time": times,
                "equity": equity,
                "cash": equity,
                "exposure": np.abs(pos) * close * 0.25,
            }
        ),
    )
    log.write(
        rid,
        "system_events",
        pl.DataFrame(
            {
                "time": [int(times[10])],
                "severity": ["warning"],
                "component": ["risk"],
                "message": ["circuit breaker tripped: drawdown 12%"],
            }
        ),
    )
    metrics = compute_metrics(
        times_ms=times,
        equity=equity,
        trades=trades_df,
        bar_interval_ms=BAR,
        exposure=np.abs(pos),
        funding_total=0.0,
        fees_total=float(trades_df["fees"].sum()),
        liquidations=0,
    )
    log.finish_run(rid, status="ok", metrics=metrics)
    log.close()
    return rid
