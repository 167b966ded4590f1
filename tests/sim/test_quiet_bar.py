"""The quiet-bar fast path (``fold_step_nb``) books exactly what the full bar step books.

Random walks of two symbols (gaps, missing bars, funding every 8th bar, directions that hold
for a while then flip, go flat or give no decision), high leverage so that liquidations,
stops and targets fire: each bar is stepped twice from the same state, once by
``bar_step_nb`` and once by ``fold_step_nb`` with a liquidation-price memo kept across the
bars, and every state array, record buffer, output row and the equity must be equal
(``array_equal``, NaN == NaN).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.sim import SimConfig, load_specs, spec_arrays
from engine.sim.enums import FillKind
from engine.sim.loop import bar_step_nb, fold_step_nb, new_liq_memo
from engine.sim.state import new_account, new_breaker, new_pending, new_records

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
N_BARS = 1500

CONFIGS = {
    "cross-stops-breaker": SimConfig(
        execution={
            "leverage": 25,
            "margin_mode": "cross",
            "slippage_bps": 2,
            "stop_loss": {"pct": 1.5},
            "take_profit": {"pct": 2.5},
        },
        risk={"fraction": 0.6, "breaker": {"drawdown_pct": 30, "cooldown_bars": 20}},
    ),  # fmt: skip
    "isolated-limit": SimConfig(
        execution={
            "leverage": 50,
            "margin_mode": "isolated",
            "order_type": "limit",
            "limit_offset_bps": 2,
        },
        risk={"fraction": 0.8},
    ),  # fmt: skip
    "cross-plain": SimConfig(
        execution={"leverage": 50, "margin_mode": "cross"}, risk={"fraction": 0.9}
    ),  # fmt: skip
}


def _market(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = N_BARS
    start = np.array([30_000.0, 2_000.0])
    r = rng.standard_t(3, size=(n, 2)) * 0.004
    close = start * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([start, close[:-1]]) * np.exp(rng.normal(0, 0.0005, size=(n, 2)))
    wick = np.abs(rng.normal(0, 0.003, size=(n, 2)))
    high = np.maximum(open_, close) * (1 + wick)
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.003, size=(n, 2))))
    funding = np.full((n, 2), np.nan)
    funding[::8] = rng.normal(0.0001, 0.0003, size=funding[::8].shape)
    gone = rng.random((n, 2)) < 0.01  # a symbol without a bar now and then
    for a in (open_, high, low, close):
        a[gone] = np.nan
    d = np.sign(rng.normal(size=(n // 25 + 1, 2))).repeat(25, axis=0)[:n]
    d[rng.random((n, 2)) < 0.05] = np.nan
    d[rng.random((n, 2)) < 0.02] = 0.0
    times = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 300_000
    return {"o": open_, "h": high, "lo": low, "c": close, "funding": funding, "d": d,
            "atr": np.abs(close * 0.01), "time": times}  # fmt: skip


def _state(cash: float):  # type: ignore[no-untyped-def]
    s = len(SYMBOLS)
    return (new_account(s, cash=cash), new_pending(s), new_breaker(equity=cash),
            new_records(fills=64, trades=64, funding=64, events=64))  # fmt: skip


def _arrays(state) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    acct, pend, brk, recs = state
    out = [*acct, *pend, *brk]
    for buf in recs:
        out.extend(buf)
    return out


def _copy_into(dst, src) -> None:  # type: ignore[no-untyped-def]
    for a, b in zip(_arrays(dst), _arrays(src), strict=True):
        a[...] = b


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fast_path_equals_full_step(name: str, seed: int) -> None:
    cfg = CONFIGS[name]
    prm, spa = cfg.to_params(), spec_arrays(load_specs(SYMBOLS))
    m = _market(seed)
    cash = cfg.execution.initial_cash
    full, fast = _state(cash), _state(cash)
    memo = new_liq_memo(len(SYMBOLS))
    empty = np.empty(0)
    kinds: set[int] = set()
    quiet = 0
    for t in range(N_BARS):
        _copy_into(fast, full)
        fills_before = int(full[3].fills.n[0])
        outs = [(np.zeros(2), np.zeros(2, dtype=np.int64)) for _ in range(2)]
        args = (t, int(m["time"][t]), m["o"][t], m["h"][t], m["lo"][t], m["c"][t],
                m["funding"][t], empty, m["d"][t], empty, empty, m["atr"][t])  # fmt: skip
        e_full = bar_step_nb(*full[:3], spa, prm, full[3], *args, *outs[0])
        e_fast = fold_step_nb(*fast[:3], spa, prm, fast[3], *args, *outs[1], memo)
        assert np.array_equal(np.array([e_full]), np.array([e_fast]), equal_nan=True), t
        for a, b in zip(_arrays(full), _arrays(fast), strict=True):
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (t, a, b)
        for a, b in zip(outs[0], outs[1], strict=True):
            assert np.array_equal(a, b), t
        n_fills = int(full[3].fills.n[0])
        kinds.update(full[3].fills.kind[fills_before:n_fills].tolist())
        quiet += n_fills == fills_before and int(full[3].funding.n[0]) == 0
        for buf in full[3]:  # drained every bar, as the sweep's kernel does
            buf.n[0] = 0
    # the run exercised both paths and the exits the fast path must leave to the full one
    assert quiet > N_BARS // 2, quiet
    assert FillKind.ENTRY in kinds, kinds
    if name.startswith("cross-stops"):
        assert {FillKind.STOP, FillKind.TARGET} <= kinds, kinds
    else:
        assert FillKind.LIQUIDATION in kinds, kinds
