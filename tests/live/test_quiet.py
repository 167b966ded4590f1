"""A quiet account (flat, no order resting) is read after a bar, for the next decision, not
on the path from the closed kline to the order; what changes it meanwhile (a manual order)
is still reconciled, one bar later than a read at the close would see it."""

from __future__ import annotations

from pathlib import Path

from engine.binance.venue import make_ccxt
from engine.exchange_sim.market import MarketData

from .conftest import BAR, KEY, SECRET, STRATEGY, drive, simulator, strategy
from .parity import q

# never long or short: the run stays flat, its account quiet
NEVER = STRATEGY.replace("long: ema_{{fast}} > ema_{{slow}}", "long: ema_{{fast}} > ema_{{slow}} * 100") \
                .replace("short: ema_{{fast}} < ema_{{slow}}", "short: ema_{{fast}} < ema_{{slow}} * 0.01")


def test_a_manual_order_on_a_quiet_account_is_reconciled(market: MarketData, tmp_path: Path) -> None:
    assert NEVER != STRATEGY
    results = tmp_path / "results"
    with simulator(market) as sim:
        assert sim.server is not None
        url = sim.server.url

        def manual(k: int) -> None:
            if k == 1:  # after bar 1 and its quiet read: a position the run did not make
                ex = make_ccxt(url, KEY, SECRET)
                ex.load_markets()
                ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01)

        res = drive(sim, strategy(text=NEVER), results, bars=5, between=manual)
    bars = [r["open_time"] for r in q(
        f"SELECT DISTINCT open_time FROM ensemble_decisions WHERE run_id = '{res.run_id}' "
        "ORDER BY open_time", results)]
    assert len(bars) == 5
    events = q(f"SELECT time, message FROM system_events WHERE run_id = '{res.run_id}' "
               "AND component = 'reconcile' AND message LIKE '%differ from the book%'", results)
    # bar 2 decided on the account read after bar 1 (flat, as it was then); the read after
    # bar 2 holds the manual position, and bar 3 takes it into the book
    assert [e["time"] for e in events] == [bars[3] + BAR], events
    assert "BTCUSDT" in events[0]["message"]
    # the never-trading strategy's target stays flat throughout (so it closes the position
    # once the book holds it, at bar 3)
    rows = q(f"SELECT symbol, open_time, target_position FROM ensemble_decisions "
             f"WHERE run_id = '{res.run_id}' AND symbol = 'BTCUSDT' ORDER BY open_time", results)
    assert [r["target_position"] for r in rows] == [0.0] * 5
    # the position it found is booked as a whole trade: entered at the exchange's entry
    # price when it was seen, closed by the strategy's exit order
    trades = q(f"SELECT symbol, side, entry_time, entry_price, quantity, exit_reason FROM trades "
               f"WHERE run_id = '{res.run_id}'", results)
    assert len(trades) == 1, trades
    (tr,) = trades
    assert (tr["symbol"], tr["side"], tr["entry_time"], tr["quantity"]) == ("BTCUSDT", "long", bars[3] + BAR, 0.01)
    assert tr["entry_price"] > 0 and tr["exit_reason"] == "signal"
