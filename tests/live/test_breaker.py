"""The loss-streak breaker live: the live TradeBook's closed trades feed the simulator's
breaker kernel (engine.sim's loss definition, pnl < 0 net of fees and funding), so trips,
cooldowns and resets happen on the backtest's bars; and a finished live run's metrics
(engine.metrics.compute_metrics over its logged equity and trades) are in runs.metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.exchange_sim.market import MarketData

from .conftest import BAR, STRATEGY, drive, simulator, strategy
from .test_parity import assert_parity, backtest_for, q

BREAKER_STRATEGY = STRATEGY.replace(
    "  max_exposure_pct: 100\n",
    "  max_exposure_pct: 100\n  breaker: {{max_consecutive_losses: 2, cooldown_bars: 6}}\n",
)
N_BARS = 150


def breaker_events(run_id: str, since: int, results: Path) -> list[tuple[Any, ...]]:
    rows = q(f"SELECT time, severity, message, data FROM events WHERE run_id = '{run_id}' "
             f"AND component = 'risk' AND time >= {since} ORDER BY time, message", results)
    out = []
    for r in rows:
        d = json.loads(r["data"])
        out.append((r["time"], r["severity"], r["message"], d["event"], d["value"], d["bar"]))
    return out


def test_loss_streak_breaker_and_metrics_match_the_backtest(market: MarketData, usdm_store: Path,
                                                            tmp_path: Path) -> None:
    assert "max_consecutive_losses: 2" in BREAKER_STRATEGY
    with simulator(market) as sim:
        res = drive(sim, strategy(text=BREAKER_STRATEGY), tmp_path, bars=N_BARS)
    assert res.status == "ok"
    n_dec, _ = assert_parity(res.run_id, tmp_path, usdm_store, text=BREAKER_STRATEGY)
    assert n_dec == 2 * N_BARS
    bt_id, first_live = backtest_for(res.run_id, tmp_path, usdm_store, text=BREAKER_STRATEGY)
    last = q(f"SELECT max(open_time) AS t FROM decisions WHERE run_id = '{res.run_id}'", tmp_path)[0]["t"]
    live = breaker_events(res.run_id, first_live, tmp_path)
    bt = [e for e in breaker_events(bt_id, first_live, tmp_path) if e[0] <= last]
    assert len(live) == len(bt) > 0
    for a, b in zip(live, bt, strict=True):
        # value: the streak (exact), or at a reset the equity (live: the exchange's wallet,
        # reported to 8 decimals)
        assert a[:4] == b[:4] and a[5] == b[5], f"breaker event differs: live {a} backtest {b}"
        assert a[4] == pytest.approx(b[4], rel=1e-9, abs=1e-12), f"live {a} backtest {b}"
    trips = [e for e in live if e[3] == "loss_streak"]
    assert len(trips) >= 2 and any(e[3] == "reset" for e in live), live
    # the halt is visible in the decisions: entries turned into closes while tripped
    halted = q(f"SELECT count(*) AS n FROM decisions WHERE run_id = '{res.run_id}' "
               f"AND risk_check = 'breaker'", tmp_path)[0]["n"]
    assert halted > 0

    # runs.metrics: compute_metrics over what the run logged
    sharpe = q(f"SELECT metrics->>'$.sharpe' AS s FROM runs WHERE mode = 'live' "
               f"AND run_id = '{res.run_id}'", tmp_path)
    assert len(sharpe) == 1 and sharpe[0]["s"] is not None
    from engine.metrics import compute_metrics

    eq = q(f"SELECT time, equity, exposure FROM equity WHERE run_id = '{res.run_id}' ORDER BY time", tmp_path)
    tr = q(f"SELECT pnl, fees, funding, entry_time, exit_time FROM trades WHERE run_id = '{res.run_id}'",
           tmp_path)
    assert len(eq) == N_BARS and eq[-1]["time"] - eq[0]["time"] == (N_BARS - 1) * BAR
    fills = q(f"SELECT sum(filled_quantity * avg_price) AS n FROM orders WHERE run_id = '{res.run_id}' "
              f"AND status = 'filled'", tmp_path)[0]["n"]
    want = compute_metrics(
        times_ms=np.array([r["time"] for r in eq]), equity=np.array([r["equity"] for r in eq]),
        trades=pl.DataFrame(tr), bar_interval_ms=BAR, exposure=np.array([r["exposure"] for r in eq]),
        funding_total=0.0, fees_total=0.0)
    got = json.loads(q(f"SELECT metrics FROM runs WHERE run_id = '{res.run_id}'", tmp_path)[0]["metrics"])
    for k in ("sharpe", "sortino", "total_return", "max_drawdown", "win_rate", "profit_factor",
              "exposure", "trades", "final_equity", "initial_equity", "bars"):
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k
    assert got["trades"] == len(tr) > 0 and got["orders"] == res.orders
    # fees: every filled order's taker fee (trades still open included)
    assert got["fees"] == pytest.approx(float(fills) * 0.0005, rel=1e-6)
