"""Cross-check against vectorbt: long-only, unleveraged, funding-free ema_cross on real BTCUSDT 5m.

Setup both engines express identically:

* signals: the engine's decision at the close of bar t fills at the open of bar t+1, so
  vectorbt gets the entry/exit signals shifted by one bar and ``price=open``;
* fees: the taker fee on every fill (vectorbt ``fees``), no slippage, no funding;
* size: the engine sizes an entry as ``fraction * equity[t] / close[t]`` (margin fraction x
  leverage 1) on a 1e-8 grid (``execution.exchange_filters: false`` lifts Binance's 0.001
  step and min notional). vectorbt is given those quantities (``size_type='amount'``);
  the test checks separately that each equals the formula on vectorbt's own portfolio
  value, so by induction vectorbt sizing "fraction of its value at the decision close"
  would place the same orders.

Then trades (entry/exit bar, prices, size, net PnL, fees) and the whole equity curve must
agree to 1e-9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.backtest import run_backtest
from engine.strategy import load_strategy_text

TEXT = """\
name: vbt_check
params: {fast: 9, slow: 50}
data: {symbols: [BTCUSDT], interval: 5m, start: 2023-01-01, end: 2023-03-31, funding: false}
features: ["ema_{fast}", "ema_{slow}"]
signals: {long: "ema_{fast} > ema_{slow}"}
risk: {sizing: fixed, fraction: 0.5}
execution: {leverage: 1, margin_mode: isolated, taker_fee: 0.0005, slippage_bps: 0,
            exchange_filters: false, initial_cash: 10000}
"""


@pytest.mark.slow
def test_engine_equals_vectorbt(usdm_store: Path) -> None:
    import vectorbt as vbt

    r = run_backtest(load_strategy_text(TEXT), store=usdm_store, log=False)
    m, res = r.market, r.sim
    assert m.n_bars == 25_920
    openp, close = m.open[:, 0], m.close[:, 0]
    long_ = r.decisions.state[:, 0] == 1
    prev = np.concatenate([[False], long_[:-1]])
    # decisions at close t -> orders at open t+1
    entries = np.concatenate([[False], (long_ & ~prev)[:-1]])
    exits = np.concatenate([[False], (~long_ & prev)[:-1]])
    ent = res.fills[res.fills["kind"] == 0]
    size = np.full(m.n_bars, np.nan)
    size[ent["bar"]] = ent["qty"]
    assert np.array_equal(np.flatnonzero(entries), ent["bar"])  # every entry signal filled

    pf = vbt.Portfolio.from_signals(
        close=close,
        entries=entries,
        exits=exits,
        price=openp,
        size=size,
        size_type="amount",
        fees=0.0005,
        init_cash=10_000.0,
        direction="longonly",
        freq="5min",
    )
    value = pf.value().to_numpy()
    np.testing.assert_allclose(res.equity, value, rtol=1e-9, atol=0)
    assert abs(res.equity[-1] - value[-1]) <= 1e-9 * value[-1]

    # sizing: qty = floor(fraction * value at the decision close / that close, 1e-8)
    dbar = ent["bar"] - 1
    want = np.floor(0.5 * value[dbar] / close[dbar] / 1e-8 + 1e-9) * 1e-8
    np.testing.assert_allclose(ent["qty"], want, rtol=0, atol=1.000001e-8)

    vt = pf.trades.records
    closed = vt[vt["status"] == 1]
    et = res.trades
    assert len(et) == len(closed) > 300
    np.testing.assert_array_equal(et["entry_bar"], closed["entry_idx"])
    np.testing.assert_array_equal(et["exit_bar"], closed["exit_idx"])
    for ours, theirs in (
        (et["entry_price"], closed["entry_price"]),
        (et["exit_price"], closed["exit_price"]),
        (et["qty"], closed["size"]),
        (et["fees"], closed["entry_fees"] + closed["exit_fees"]),
        (et["pnl"], closed["pnl"]),
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)
