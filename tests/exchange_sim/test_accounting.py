"""Parity: the same orders on the same bars give the same fills, fees, funding and balance in
the exchange simulator (through ccxt) as in the backtest simulator (engine.sim.simulate),
including orders that fill at a funding bar's open (both settle funding before them)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.binance.venue import make_ccxt
from engine.exchange_sim.market import MarketData
from engine.sim import ExecutionSettings, RiskSettings, SimConfig, load_specs, simulate
from engine.sim.accounting import stop_target_prices_nb
from engine.sim.enums import FillKind
from engine.timeutil import parse_time

from .conftest import KEY, SECRET, START, admin, advance, running, url

BAR = 300_000
N = 320  # 26 h 40 min of 5m bars: funding at 08:00, 16:00 and 00:00
SYMS = ("BTCUSDT", "ETHUSDT")
CCXT = {"BTCUSDT": "BTC/USDT:USDT", "ETHUSDT": "ETH/USDT:USDT"}
STOP_PCT = 2.0


def _grid(market: MarketData) -> dict[str, np.ndarray]:
    start = parse_time(START)
    times = start + np.arange(N, dtype=np.int64) * BAR
    out = {k: np.full((N, 2), np.nan) for k in ("o", "h", "l", "c", "fr")}
    for j, s in enumerate(SYMS):
        sb = market.bars[s]
        idx = np.array([sb.index_of(int(t)) for t in times])
        assert (idx >= 0).all()
        for k in ("o", "h", "l", "c"):
            out[k][:, j] = getattr(sb, k)[idx]
        for ft, rate in zip(sb.funding_time, sb.funding_rate, strict=True):
            if start < ft < times[-1] + BAR:
                out["fr"][(ft - start) // BAR, j] = rate
    out["times"] = times
    return out


FUNDING_BARS = (96, 192, 288)  # 08:00, 16:00 and 00:00 after START


def _direction(fr: np.ndarray) -> np.ndarray:
    """A scripted strategy: longs, shorts, flips and flats, some decided at the close just
    before a funding time (bars 95, 191, 287) so they fill at the funding bar's open."""
    d = np.full((N, 2), np.nan)
    script = {
        # flips short -> long at the 08:00 and 16:00 bars: the short pays/receives there
        0: [(5, 1), (40, 0), (70, -1), (95, 1), (150, -1), (191, 1), (230, 0), (260, -1)],
        # opens from flat at 08:00 (no funding), closes at 16:00 (pays that funding)
        1: [(12, -1), (90, 0), (95, 1), (191, 0), (200, -1), (300, 0)],
    }
    for j, steps in script.items():
        for bar, value in steps:
            d[bar, j] = value
    for t in FUNDING_BARS:
        assert np.isfinite(fr[t]).all() and np.isnan(fr[t - 1]).all()
    return d


CASES = {
    # cross margin, 3x, 2 % stop-loss orders: entries, exits, flips, stops, funding
    "cross-stops": (({"leverage": 3.0, "margin_mode": "cross", "stop_loss": {"pct": STOP_PCT}}, {"fraction": 0.3}),
                    {FillKind.ENTRY, FillKind.EXIT, FillKind.STOP}),
    # isolated margin at 30x without stops: positions get liquidated
    "isolated-liquidations": (({"leverage": 30.0, "margin_mode": "isolated"}, {"fraction": 0.1}),
                              {FillKind.ENTRY, FillKind.EXIT, FillKind.LIQUIDATION}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scripted_orders_match_the_backtest(market: MarketData, case: str) -> None:
    (execution, risk), must = CASES[case]
    g = _grid(market)
    specs = load_specs(list(SYMS))
    cfg = SimConfig(
        execution=ExecutionSettings(initial_cash=10_000.0, slippage_bps=1.5, close_at_end=False, **execution),
        risk=RiskSettings(sizing="fixed", **risk),
    )
    direction = _direction(g["fr"])
    bt = simulate(g["o"], g["h"], g["l"], g["c"], funding_rate=g["fr"], direction=direction, specs=specs, config=cfg)
    kinds = set(bt.fills["kind"].tolist())
    assert must <= kinds, f"the script must exercise {must}"
    assert len(bt.funding) >= 3
    # orders fill exactly at funding bars, where funding settles first, on the position held
    # before them: some close/flip a position that pays there, some open one that does not
    at_funding = [f for f in bt.fills if f["kind"] in (FillKind.ENTRY, FillKind.EXIT) and f["bar"] in FUNDING_BARS]
    paid = {(int(f["bar"]), int(f["symbol"])) for f in bt.funding}
    assert any(f["kind"] == FillKind.EXIT and (int(f["bar"]), int(f["symbol"])) in paid for f in at_funding)
    assert any(
        f["kind"] == FillKind.ENTRY and (int(f["bar"]), int(f["symbol"])) not in paid
        for f in at_funding
    ), "the script must open a position at a funding bar's open from flat"
    stop_pct = cfg.execution.stop_loss.pct if cfg.execution.stop_loss is not None else None

    start = parse_time(START)
    with running(market, balance=10_000.0, slippage_bps=1.5) as sim:
        ex = make_ccxt(url(sim), KEY, SECRET)
        ex.load_markets()
        for s in SYMS:
            ex.set_leverage(int(cfg.execution.leverage), CCXT[s])
            if cfg.execution.margin_mode == "isolated":
                ex.set_margin_mode("isolated", CCXT[s])
        by_bar: dict[int, list] = {}
        for f in bt.fills:
            if f["kind"] in (FillKind.ENTRY, FillKind.EXIT):
                by_bar.setdefault(int(f["bar"]), []).append(f)
        for t in range(N):
            if t > 0:
                advance(sim, BAR)  # bar t-1 closes; the clock stands at bar t's open
            for f in by_bar.get(t, []):
                s = SYMS[int(f["symbol"])]
                ex.cancel_all_orders(CCXT[s], params={"trigger": True})
                side = "buy" if f["side"] > 0 else "sell"
                ex.create_order(CCXT[s], "market", side, float(f["qty"]))
                pos = ex.fapiPrivateV2GetPositionRisk({"symbol": s})[0]
                q = float(pos["positionAmt"])
                if q != 0 and stop_pct is not None:
                    stop, _ = stop_target_prices_nb(
                        1 if q > 0 else -1, float(pos["entryPrice"]), stop_pct, np.nan, np.nan, np.nan, np.nan,
                        specs[int(f["symbol"])].tick_size,
                    )
                    ex.create_order(
                        CCXT[s], "market", "sell" if q > 0 else "buy", abs(q),
                        params={"stopLossPrice": float(stop), "reduceOnly": True},
                    )
        advance(sim, BAR)  # close the last bar
        state = admin(sim, "/sim/state")

    sim_fills = [f for f in state["fills"]]
    assert len(sim_fills) == len(bt.fills)
    for a, b in zip(sim_fills, bt.fills, strict=True):
        assert (a["time"] - start) // BAR == int(b["bar"])
        assert a["symbol"] == SYMS[int(b["symbol"])] and a["side"] == int(b["side"])
        assert a["qty"] == pytest.approx(float(b["qty"]), abs=1e-12)
        assert a["price"] == pytest.approx(float(b["price"]), rel=1e-13)
        assert a["fee"] == pytest.approx(float(b["fee"]), rel=1e-12)
        assert a["realized"] == pytest.approx(float(b["realized"]), rel=1e-9, abs=1e-9)
        assert a["kind"] == int(b["kind"])
    assert len(state["fundingEvents"]) == len(bt.funding)
    for a, b in zip(state["fundingEvents"], bt.funding, strict=True):
        assert (a["time"] - start) // BAR == int(b["bar"])
        assert a["amount"] == pytest.approx(float(b["amount"]), rel=1e-12)
        assert a["mark"] == float(b["mark"]) and a["rate"] == float(b["rate"])
    assert state["wallet"] == pytest.approx(float(bt.wallet[-1]), rel=1e-12)
    assert sum(1 for f in sim_fills if f["kind"] == FillKind.LIQUIDATION) == sum(
        1 for f in bt.fills if f["kind"] == FillKind.LIQUIDATION
    )
