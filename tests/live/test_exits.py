"""Stop-loss / take-profit live: after each entry fill, exchange-side STOP_MARKET and
TAKE_PROFIT_MARKET (closePosition) orders at the simulator's trigger prices; the exchange
simulator triggers them on its replayed bars, and decisions and fills (stop and target exits
included) equal the backtest's over the same real bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.exchange_sim.market import MarketData

from .conftest import STRATEGY, drive, simulator, strategy
from .test_parity import assert_parity, q

EXIT_STRATEGY = STRATEGY.replace(
    "  initial_cash: 10000\n",
    "  initial_cash: 10000\n  stop_loss: {{pct: 0.25}}\n  take_profit: {{pct: 0.5}}\n",
)
N_BARS = 160


@pytest.mark.slow
def test_stops_and_targets_match_the_backtest(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    assert "stop_loss" in EXIT_STRATEGY
    with simulator(market) as sim:
        res = drive(sim, strategy(text=EXIT_STRATEGY), tmp_path, bars=N_BARS)
    assert res.status == "ok"
    n_dec, n_fills = assert_parity(res.run_id, tmp_path, usdm_store, text=EXIT_STRATEGY)
    assert n_dec == 2 * N_BARS
    legs = q(f"SELECT leg, type, count(*) AS n FROM orders WHERE run_id = '{res.run_id}' "
             f"AND status = 'filled' GROUP BY leg, type ORDER BY leg", tmp_path)
    by_leg = {r["leg"]: (r["type"], r["n"]) for r in legs}
    assert by_leg["stop"][0] == "stop_market" and by_leg["stop"][1] >= 3, by_leg
    assert by_leg["target"][0] == "take_profit_market" and by_leg["target"][1] >= 2, by_leg
    # no protective order is left resting for a flat position, none filled twice
    left = q(f"SELECT count(*) AS n FROM orders WHERE run_id = '{res.run_id}' AND status = 'new'", tmp_path)
    assert left[0]["n"] <= 2 * 2  # at most the live positions' own stop and target


def trades(run_id: str, before: int, results: Path) -> list[dict[str, Any]]:
    return q(f"SELECT symbol, side, entry_time, exit_time, quantity, entry_price, exit_price, fees, "
             f"funding, pnl, exit_reason FROM trades WHERE run_id = '{run_id}' AND exit_time < {before} "
             f"AND exit_reason <> 'end' ORDER BY exit_time, symbol", results)


@pytest.mark.slow
def test_trades_from_live_fills_match_the_backtest(market: MarketData, usdm_store: Path,
                                                   tmp_path: Path) -> None:
    """The live ``trades`` rows (entry/exit pairs from fills, stops and targets included, with
    fees and the funding settled at 08:00 and 16:00) equal the backtest's."""
    from .test_parity import backtest_for

    with simulator(market) as sim:
        res = drive(sim, strategy(text=EXIT_STRATEGY), tmp_path, bars=N_BARS)
    bt_id, first_live = backtest_for(res.run_id, tmp_path, usdm_store, text=EXIT_STRATEGY)
    last = q(f"SELECT max(open_time) AS t FROM decisions WHERE run_id = '{res.run_id}'", tmp_path)[0]["t"]
    live, bt = trades(res.run_id, last, tmp_path), trades(bt_id, last, tmp_path)
    assert len(live) == len(bt) >= 20
    assert {r["exit_reason"] for r in live} == {"signal", "stop", "target"}
    assert any(r["funding"] != 0.0 for r in live), "some trade must hold through a funding time"
    for a, b in zip(live, bt, strict=True):
        for k in ("symbol", "side", "entry_time", "exit_time", "exit_reason"):
            assert a[k] == b[k], f"{k}: live {a} backtest {b}"
        assert a["quantity"] == pytest.approx(b["quantity"], abs=1e-9)
        # live prices are the exchange's reported avgPrice (price precision + 3 decimals)
        for k in ("entry_price", "exit_price"):
            assert a[k] == pytest.approx(b[k], rel=1e-8), f"{k}: live {a} backtest {b}"
        notional = float(b["quantity"]) * float(b["entry_price"])
        for k in ("fees", "funding", "pnl"):
            assert a[k] == pytest.approx(b[k], abs=notional * 1e-8), f"{k}: live {a} backtest {b}"
