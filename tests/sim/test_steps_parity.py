"""The step kernels driven one bar (or one phase) at a time from Python, as the exchange
simulator and live mode drive them, book exactly what the batch fold books."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.sim import SimConfig, load_specs, simulate, spec_arrays
from engine.sim.api import records_to_arrays
from engine.sim.loop import (
    bar_step_nb,
    close_phase_nb,
    decide_phase_nb,
    exit_phase_nb,
    fill_pending_nb,
    funding_phase_nb,
    open_phase_nb,
)
from engine.sim.state import new_account, new_breaker, new_pending, new_records
from engine.sim.steps import equity_nb, exit_step_nb, funding_step_nb

N_BARS = 3000
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def _ema(x: np.ndarray, n: int) -> np.ndarray:
    a = 2.0 / (n + 1)
    out = np.empty_like(x)
    out[0] = x[0]
    for i in range(1, len(x)):
        out[i] = a * x[i] + (1 - a) * out[i - 1]
    return out


@pytest.fixture(scope="module")
def market(usdm_dir):
    frames = [pl.read_csv(usdm_dir / "klines" / f"{s}-5m.csv.gz", n_rows=N_BARS) for s in SYMBOLS]
    times = frames[0]["open_time"].to_numpy()
    assert all((f["open_time"].to_numpy() == times).all() for f in frames)
    o, h, lo, c = (
        np.column_stack([f[k].to_numpy() for f in frames]) for k in ("open", "high", "low", "close")
    )
    funding = np.full(o.shape, np.nan)
    for j, s in enumerate(SYMBOLS):
        fr = pl.read_csv(usdm_dir / "fundingRate" / f"{s}-fundingRate.csv.gz")
        at = (fr["calc_time"].to_numpy() // 3_600_000) * 3_600_000  # drop Binance's ms jitter
        idx = np.searchsorted(times, at)
        ok = (idx < len(times)) & (times[np.minimum(idx, len(times) - 1)] == at)
        funding[idx[ok], j] = fr["last_funding_rate"].to_numpy()[ok]
    direction = np.column_stack(
        [np.where(_ema(c[:, j], 9) > _ema(c[:, j], 40), 1.0, -1.0) for j in range(2)]
    )
    direction[::7] = np.nan  # some "no decision" bars
    direction[::11] = 0.0
    # flip the decision at the close before each funding bar: its orders fill at the
    # funding bar's open (funding settles first, on the position held before them)
    before = np.flatnonzero(np.isfinite(funding).any(axis=1)) - 1
    direction[before[before >= 0]] *= -1.0
    tr = np.maximum(h - lo, np.abs(h - np.roll(c, 1, axis=0)))
    atr = np.array([_ema(tr[:, j], 14) for j in range(2)]).T.copy()
    assert np.isfinite(funding).sum() >= 2 * 30
    return {
        "o": o,
        "h": h,
        "lo": lo,
        "c": c,
        "funding": funding,
        "direction": direction,
        "atr": atr,
        "time": times,
    }


CONFIGS = {
    "cross": SimConfig(
        execution={
            "leverage": 5,
            "margin_mode": "cross",
            "slippage_bps": 2,
            "stop_loss": {"atr": 3},
            "take_profit": {"atr": 5},
        },
        risk={
            "fraction": 0.4,
            "max_exposure_pct": 300,
            "breaker": {
                "drawdown_pct": 8,
                "cooldown_bars": 50,
                "daily_loss_pct": 3,
                "max_consecutive_losses": 4,
            },
        },
    ),  # fmt: skip
    "isolated-limit": SimConfig(
        execution={
            "leverage": 20,
            "order_type": "limit",
            "limit_offset_bps": 3,
            "margin_mode": "isolated",
            "stop_loss": {"pct": 0.15},
            "take_profit": {"pct": 0.25},
        },
        risk={"fraction": 0.5, "max_position_pct": 400},
    ),  # fmt: skip
}


def _batch(m, cfg, specs):
    return simulate(m["o"], m["h"], m["lo"], m["c"], funding_rate=m["funding"], direction=m["direction"],
                    atr=m["atr"], open_time=m["time"], specs=specs, config=cfg)  # fmt: skip


def _stepwise(m, cfg, specs, *, mode: str):
    n, s = m["o"].shape
    prm, spa = cfg.to_params(), spec_arrays(specs)
    acct, pend = new_account(s, cash=cfg.execution.initial_cash), new_pending(s)
    brk = new_breaker(equity=cfg.execution.initial_cash)
    recs = new_records(fills=4 * n * s, trades=4 * n * s, funding=n * s, events=n + 2)
    equity = np.empty(n)
    position = np.empty((n, s))
    target = np.zeros((n, s))
    reason = np.zeros((n, s), dtype=np.int64)
    empty = np.empty(0)
    o, h, lo, c = m["o"], m["h"], m["lo"], m["c"]
    for t in range(n):
        tm = int(m["time"][t])
        if mode == "phases":
            funding_phase_nb(acct, prm, recs, t, o[t], m["funding"][t], empty)
            open_phase_nb(acct, pend, spa, prm, recs, t, o[t], h[t], lo[t])
            exit_phase_nb(acct, spa, prm, recs, t, o[t], h[t], lo[t])
            equity[t] = close_phase_nb(acct, c[t])
        elif mode == "per-symbol":
            # what an exchange simulator does: one symbol, one order, one settlement at a time;
            # funding at the funding instant (the open), before the orders sent after it fill
            for j in range(s):
                rate = m["funding"][t, j]
                if not np.isnan(rate) and acct.qty[j] != 0.0:
                    funding_step_nb(acct, prm, recs, t, j, rate, o[t, j])
            for j in range(s):
                acct.last_price[j] = o[t, j]
                if pend.active[j]:
                    fill_pending_nb(acct, pend, spa, prm, recs, t, j, o[t, j], h[t, j], lo[t, j])
            for j in range(s):
                if acct.qty[j] != 0.0:
                    exit_step_nb(acct, spa, prm, recs, t, j, o[t, j], h[t, j], lo[t, j])
            acct.last_price[:] = c[t]
            equity[t] = equity_nb(acct)
        if mode in ("phases", "per-symbol"):
            decide_phase_nb(acct, pend, brk, spa, prm, recs, t, tm, equity[t], c[t], m["direction"][t], empty,
                            empty, m["atr"][t], target[t], reason[t])  # fmt: skip
        else:
            equity[t] = bar_step_nb(acct, pend, brk, spa, prm, recs, t, tm, o[t], h[t], lo[t], c[t],
                                    m["funding"][t], empty, m["direction"][t], empty, empty, m["atr"][t],
                                    target[t], reason[t])  # fmt: skip
        position[t] = acct.qty
    return equity, position, target, reason, records_to_arrays(recs), acct


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("mode", ["bar_step", "phases", "per-symbol"])
def test_stepwise_equals_batch(market, name, mode):
    cfg = CONFIGS[name]
    specs = load_specs(SYMBOLS)
    batch = _batch(market, cfg, specs)
    # the run must exercise what it claims to compare
    kinds = set(batch.fills["kind"].tolist())
    assert {0, 1, 2, 3} <= kinds, kinds
    assert len(batch.funding) > 10 and len(batch.trades) > 20
    # ... including orders that fill at a funding bar's open (funding settles before them)
    fb = np.isfinite(market["funding"])
    at_funding = fb[batch.fills["bar"], batch.fills["symbol"]] & (batch.fills["kind"] <= 1)
    assert at_funding.sum() >= 3, int(at_funding.sum())
    equity, position, target, reason, arrays, acct = _stepwise(market, cfg, specs, mode=mode)
    np.testing.assert_array_equal(equity, batch.equity)
    np.testing.assert_array_equal(position, batch.position)
    np.testing.assert_array_equal(target, batch.target_qty)
    np.testing.assert_array_equal(reason, batch.reason)
    for key in ("fills", "trades", "funding", "events"):
        np.testing.assert_array_equal(arrays[key], getattr(batch, key), err_msg=key)
    assert acct.wallet[0] == batch.wallet[-1]


def test_two_runs_are_identical(market):
    specs = load_specs(SYMBOLS)
    cfg = CONFIGS["cross"]
    a, b = _batch(market, cfg, specs), _batch(market, cfg, specs)
    for field in (
        "equity",
        "wallet",
        "position",
        "target_qty",
        "reason",
        "fills",
        "trades",
        "funding",
        "events",
    ):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.equity.tobytes() == b.equity.tobytes()
