"""Stop-loss / take-profit live: after each entry fill, exchange-side STOP_MARKET and
TAKE_PROFIT_MARKET (closePosition) orders at the simulator's trigger prices; the exchange
simulator triggers them on its replayed bars, and decisions and fills (stop and target exits
included) equal the backtest's over the same real bars."""

from __future__ import annotations

from pathlib import Path

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
