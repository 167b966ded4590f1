"""Limit entries live: a GTC LIMIT at the simulator's price (the decision close moved by
``limit_offset_bps`` and rounded away from the market to the tick), left resting for one bar
(the simulator's one-bar limit lifetime) and canceled at the next close when the bar did not
touch it. Decisions, fills and trades (maker fees) equal the backtest's over the same real bars."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.exchange_sim.market import MarketData

from .conftest import STRATEGY, drive, simulator, strategy
from .test_exits import trades
from .test_parity import assert_parity, backtest_for, q

LIMIT_STRATEGY = STRATEGY.replace("  order_type: market\n", "  order_type: limit\n  limit_offset_bps: 3\n")
N_BARS = 150


def test_limit_entries_match_the_backtest(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    assert "order_type: limit" in LIMIT_STRATEGY
    with simulator(market) as sim:
        res = drive(sim, strategy(text=LIMIT_STRATEGY), tmp_path, bars=N_BARS)
        resting = sim.call(lambda s: [o.client_id for o in s.exchange.orders.values() if o.is_open])
    assert res.status == "ok"
    assert resting == [], "a limit entry was left resting after the run ended"
    n_dec, n_fills = assert_parity(res.run_id, tmp_path, usdm_store, text=LIMIT_STRATEGY)
    assert n_dec == 2 * N_BARS
    by = {(r["type"], r["status"]): r["n"] for r in q(
        f"SELECT type, status, count(*) AS n FROM orders WHERE run_id = '{res.run_id}' "
        f"AND leg = 'entry' GROUP BY type, status", tmp_path)}
    # entries are limits; some filled, some expired untouched after their one bar
    assert by.get(("limit", "filled"), 0) >= 5 and by.get(("limit", "expired"), 0) >= 1, by
    assert ("market", "filled") not in by, by
    bt_id, _ = backtest_for(res.run_id, tmp_path, usdm_store, text=LIMIT_STRATEGY)
    last = q(f"SELECT max(open_time) AS t FROM decisions WHERE run_id = '{res.run_id}'", tmp_path)[0]["t"]
    live, bt = trades(res.run_id, last, tmp_path), trades(bt_id, last, tmp_path)
    assert len(live) == len(bt) >= 5
    for a, b in zip(live, bt, strict=True):
        for k in ("symbol", "side", "entry_time", "exit_time", "exit_reason"):
            assert a[k] == b[k], f"{k}: live {a} backtest {b}"
        assert a["quantity"] == pytest.approx(b["quantity"], abs=1e-9)
        for k in ("entry_price", "exit_price"):
            assert a[k] == pytest.approx(b[k], rel=1e-8), f"{k}: live {a} backtest {b}"
        notional = float(b["quantity"]) * float(b["entry_price"])
        for k in ("fees", "funding", "pnl"):
            assert a[k] == pytest.approx(b[k], abs=notional * 1e-8), f"{k}: live {a} backtest {b}"


def test_door_rejects_limit_entries_it_cannot_reproduce() -> None:
    from engine.errors import ConfigError
    from engine.live.decider import check_live_supported

    check_live_supported(strategy(text=LIMIT_STRATEGY))
    with pytest.raises(ConfigError, match="stop_loss/take_profit"):
        check_live_supported(strategy(text=LIMIT_STRATEGY, sets=("execution.stop_loss.pct=0.5",)))
    with pytest.raises(ConfigError, match="limit_offset_bps: 0"):
        check_live_supported(strategy(text=LIMIT_STRATEGY, sets=("execution.limit_offset_bps=0",)))
