"""Steady runs (``steady_run_nb``) book exactly what the bar step books, bar by bar and over
whole runs.

The random markets of ``test_quiet_bar`` (gaps, missing bars, funding every 8th bar,
directions that hold then flip, go flat or give no decision; high leverage so that stops,
targets, liquidations and the breaker fire), with one symbol and with two:

- bar by bar: each bar is offered to ``steady_run_nb`` alone and to ``fold_step_nb`` from the
  same state. When the run takes the bar, every state array, output row and the equity equal
  the step's; when it declines, no state changed and no equity was written. The step then
  carries the state on.
- whole backtests: ``simulate_nb`` (steady runs between full steps) against a plain loop of
  ``fold_step_nb`` over every bar: every output and every final state array equal.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.sim import SimConfig, load_specs, spec_arrays
from engine.sim.bars import CHUNK, bar_blocks, next_funding_bars
from engine.sim.enums import FillKind
from engine.sim.fold import simulate_nb, steady_run_nb
from engine.sim.loop import close_all_nb, fold_step_nb, new_liq_memo
from engine.sim.state import new_account, new_breaker, new_pending, new_records
from engine.sim.steps import equity_nb
from tests.sim.test_quiet_bar import CONFIGS, N_BARS, SYMBOLS, _arrays, _copy_into, _market

STEADY_CONFIGS = {
    **CONFIGS,
    "isolated-stops-daily-breaker": SimConfig(
        execution={
            "leverage": 20,
            "margin_mode": "isolated",
            "stop_loss": {"pct": 2.0},
            "take_profit": {"pct": 3.0},
        },
        risk={
            "fraction": 0.5,
            "breaker": {"daily_loss_pct": 4, "drawdown_pct": 25, "cooldown_bars": 30},
        },
    ),  # fmt: skip
}


def _inputs(seed: int, n_sym: int) -> dict[str, np.ndarray]:
    m = _market(seed)
    return {k: (v[:, :n_sym].copy() if v.ndim == 2 else v) for k, v in m.items()}


def _state(cash: float, n_sym: int, cap: int = 64):  # type: ignore[no-untyped-def]
    return (new_account(n_sym, cash=cash), new_pending(n_sym), new_breaker(equity=cash),
            new_records(fills=cap, trades=cap, funding=cap, events=cap))  # fmt: skip


def _setup(name: str, seed: int, n_sym: int):  # type: ignore[no-untyped-def]
    cfg = STEADY_CONFIGS[name]
    return cfg, cfg.to_params(), spec_arrays(load_specs(SYMBOLS[:n_sym])), _inputs(seed, n_sym)


@pytest.mark.parametrize("n_sym", [1, 2])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", sorted(STEADY_CONFIGS))
def test_steady_bar_equals_the_step(name: str, seed: int, n_sym: int) -> None:
    cfg, prm, spa, m = _setup(name, seed, n_sym)
    cash = cfg.execution.initial_cash
    full, run = _state(cash, n_sym), _state(cash, n_sym)
    memo_full, memo_run = new_liq_memo(n_sym), new_liq_memo(n_sym)
    empty, no_prob = np.empty(0), np.empty((0, n_sym))
    runs_allowed = n_sym == 1 or cfg.execution.margin_mode == "isolated"
    next_funding = next_funding_bars(m["funding"])
    blocks = bar_blocks(m["o"], m["h"], m["lo"], m["c"], m["time"])
    taken = 0
    for t in range(N_BARS):
        _copy_into(run, full)
        memo_run[...] = memo_full
        before = [a.copy() for a in _arrays(full)]
        eq_run = np.full(N_BARS, -1.0)
        tg_run, rs_run = np.full((1, n_sym), -1.0), np.full((1, n_sym), -1, dtype=np.int64)
        d = m["d"][t : t + 1]
        # one_views_nb's views, made here: a kernel without NRT returns its arguments only
        one = tuple(
            a.reshape(a.size)[: a.size if n_sym == 1 else 0]
            for a in (m["o"], m["h"], m["lo"], m["c"], d, no_prob, tg_run, rs_run)
        )
        end = steady_run_nb(
            *run[:3], spa, prm, m["o"], m["h"], m["lo"], m["c"], m["funding"], next_funding,
            m["time"], d, no_prob, t, t + 1, t, eq_run, tg_run, rs_run, memo_run, one, blocks,
        )  # fmt: skip
        tg, rs = np.zeros(n_sym), np.zeros(n_sym, dtype=np.int64)
        e_full = fold_step_nb(
            *full[:3], spa, prm, full[3], t, int(m["time"][t]), m["o"][t], m["h"][t],
            m["lo"][t], m["c"][t], m["funding"][t], empty, m["d"][t], empty, empty, m["atr"][t],
            tg, rs, memo_full,
        )  # fmt: skip
        assert end in (t, t + 1)
        if end == t + 1:
            taken += 1
            assert eq_run[t] == e_full, t
            assert np.array_equal(tg_run[0], tg) and np.array_equal(rs_run[0], rs), t
            for a, b in zip(_arrays(full), _arrays(run), strict=True):
                assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (t, a, b)
        else:  # declined: no state changed, no equity written (the step writes the row)
            assert eq_run[t] == -1.0, t
            for a, b in zip(before, _arrays(run), strict=True):
                assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (t, a, b)
        for buf in full[3]:
            buf.n[0] = 0
    if runs_allowed:  # both paths exercised: runs take bars, the step the others
        assert 20 <= taken < N_BARS, taken
    else:  # cross margin over two symbols: the marks move the liquidation price
        assert taken == 0


def _simulate_equals_steps(
    cfg: SimConfig, m: dict[str, np.ndarray], n_sym: int, prob=None, payoff=None
):  # type: ignore[no-untyped-def]
    """``simulate_nb`` (steady runs between full steps) and a plain loop of ``fold_step_nb``
    over the same bars: every output (equity, wallet, position, each bar's target and
    reason) and every final state array equal. Returns the positions and the final state."""
    prm, spa = cfg.to_params(), spec_arrays(load_specs(SYMBOLS[:n_sym]))
    cash = cfg.execution.initial_cash
    n = m["o"].shape[0]
    # record buffers with room for every record of the run
    st_sim, st_loop = _state(cash, n_sym, cap=4 * n), _state(cash, n_sym, cap=4 * n)
    empty, none = np.empty(0), np.empty((0, n_sym))
    prob = none if prob is None else prob
    payoff = none if payoff is None else payoff
    outs_sim = (np.empty(n), np.empty(n), np.zeros((n, n_sym)), np.zeros((n, n_sym)),
                np.zeros((n, n_sym), dtype=np.int64))  # fmt: skip
    simulate_nb(
        m["o"], m["h"], m["lo"], m["c"], m["funding"], none, m["d"], prob, payoff, m["atr"],
        m["time"], spa, prm, *st_sim, *outs_sim, empty, new_liq_memo(n_sym),
        next_funding_bars(m["funding"]), bar_blocks(m["o"], m["h"], m["lo"], m["c"], m["time"]),
    )  # fmt: skip
    eq, wallet = np.empty(n), np.empty(n)
    pos, tg = np.zeros((n, n_sym)), np.zeros((n, n_sym))
    rs = np.zeros((n, n_sym), dtype=np.int64)
    memo = new_liq_memo(n_sym)
    acct = st_loop[0]
    for t in range(n):
        p_row = prob[t] if prob.shape[0] else empty
        b_row = payoff[t] if payoff.shape[0] else empty
        eq[t] = fold_step_nb(
            *st_loop[:3], spa, prm, st_loop[3], t, int(m["time"][t]), m["o"][t], m["h"][t],
            m["lo"][t], m["c"][t], m["funding"][t], empty, m["d"][t], p_row, b_row,
            m["atr"][t], tg[t], rs[t], memo,
        )  # fmt: skip
        wallet[t] = acct.wallet[0]
        pos[t] = acct.qty
    if prm.close_at_end:
        close_all_nb(acct, st_loop[1], prm, st_loop[3], n - 1)
        eq[n - 1] = equity_nb(acct)
        wallet[n - 1] = acct.wallet[0]
        pos[n - 1] = acct.qty
    for a, b in zip(outs_sim, (eq, wallet, pos, tg, rs), strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    for a, b in zip(_arrays(st_sim), _arrays(st_loop), strict=True):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return pos, st_sim


@pytest.mark.parametrize("n_sym", [1, 2])
@pytest.mark.parametrize("name", sorted(STEADY_CONFIGS))
def test_simulate_equals_a_loop_of_steps(name: str, n_sym: int) -> None:
    _, st_sim = _simulate_equals_steps(STEADY_CONFIGS[name], _inputs(3, n_sym), n_sym)
    assert st_sim[3].fills.n[0] >= 4  # the run traded


LONG_RUN_CONFIGS = {
    "plain": SimConfig(execution={"leverage": 2, "margin_mode": "isolated"}, risk={"fraction": 0.5}),
    "stops": SimConfig(
        execution={"leverage": 3, "margin_mode": "cross", "stop_loss": {"pct": 4.0},
                   "take_profit": {"pct": 6.0}},
        risk={"fraction": 0.7},
    ),
    "kelly": SimConfig(
        execution={"leverage": 2, "margin_mode": "isolated"}, risk={"sizing": "kelly"}
    ),
    "rebalance": SimConfig(
        execution={"leverage": 2, "margin_mode": "isolated"}, risk={"fraction": 0.3},
        rebalance=True,
    ),
}  # fmt: skip


def _long_runs(seed: int) -> dict[str, np.ndarray]:
    """One symbol, 1m bars over ~4 UTC days from mid-day, no funding, directions held for
    100-900 bars (runs of many CHUNKs, across days), a few missing bars, NaN and zero
    directions."""
    rng = np.random.default_rng(seed)
    n = 6000
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, 6e-4, n)))
    open_ = np.r_[30_000.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 4e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 4e-4, n)))
    gone = rng.random(n) < 0.002
    for a in (open_, high, low, close):
        a[gone] = np.nan
    d = np.empty(n)
    t = 0
    while t < n:
        k = int(rng.integers(100, 900))
        d[t : t + k] = rng.choice([-1.0, 0.0, 1.0, 2.5])
        t += k
    d[rng.random(n) < 0.003] = np.nan
    col = lambda a: a.reshape(n, 1).copy()  # noqa: E731
    return {"o": col(open_), "h": col(high), "lo": col(low), "c": col(close),
            "funding": np.full((n, 1), np.nan), "d": col(d), "atr": col(close * 0.01),
            "time": 1_700_050_000_000 + np.arange(n, dtype=np.int64) * 60_000}  # fmt: skip


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("name", sorted(LONG_RUN_CONFIGS))
def test_long_runs_equal_a_loop_of_steps(name: str, seed: int) -> None:
    """Runs of hundreds of bars across UTC days (the one-symbol run that tests its bars a
    chunk at a time, and with Kelly sizing the one that asks the hold rule per bar):
    simulate_nb against a plain loop of fold_step_nb, every output (equity, wallet,
    position, each bar's target and reason) and every final state array equal."""
    m = _long_runs(seed)
    n = m["o"].shape[0]
    kelly = name.startswith("kelly")
    pos, _ = _simulate_equals_steps(
        LONG_RUN_CONFIGS[name], m, 1,
        prob=np.full((n, 1), 0.6) if kelly else None,
        payoff=np.full((n, 1), 1.5) if kelly else None,
    )  # fmt: skip
    flips = int(np.count_nonzero(np.diff(np.sign(pos[:, 0]))))
    assert flips >= 4, flips  # the directions moved the position
    assert int(np.count_nonzero(pos[:, 0])) > n // 4  # and it was held through long runs


TIGHT_STOPS = SimConfig(
    execution={"leverage": 2, "margin_mode": "isolated", "stop_loss": {"pct": 0.4},
               "take_profit": {"pct": 0.6}},
    risk={"fraction": 0.5},
)  # fmt: skip


@pytest.mark.parametrize("seed", [6, 7])
def test_runs_stop_inside_a_block(seed: int) -> None:
    """Whole blocks of bar_blocks tested at once stop exactly where bars tested alone do:
    stops and targets touched mid-block (tight levels), a missing open under a valid close,
    a missing close, and UTC days starting mid-block; simulate_nb against a plain loop of
    fold_step_nb, every output and final state equal."""
    m = _long_runs(seed)
    n = m["o"].shape[0]
    rng = np.random.default_rng(seed)
    m["o"][rng.choice(n, 8, replace=False), 0] = np.nan
    m["c"][rng.choice(n, 8, replace=False), 0] = np.nan
    m["time"] = m["time"] + 17 * 60_000  # days start at bar 1423 % CHUNK != 0 and so on
    pos, st = _simulate_equals_steps(TIGHT_STOPS, m, 1)
    kinds = st[3].fills.kind[: st[3].fills.n[0]]
    assert int(np.count_nonzero(kinds == FillKind.STOP)) >= 3
    assert int(np.count_nonzero(kinds == FillKind.TARGET)) >= 3
    assert int(np.count_nonzero(pos[:, 0])) > n // 4


def test_bar_blocks_are_each_blocks_extremes() -> None:
    """bar_blocks against a plain scan of each block: NaN skipped in the lows and highs
    (+-inf for a block of none), the gap flag for a missing open or close, the earliest and
    latest times; a short last block; several symbols or no times give 0 rows."""
    rng = np.random.default_rng(8)
    n = 5 * CHUNK + 7
    o, h, lo, c = (rng.normal(100, 5, (n, 1)) for _ in range(4))
    lo[3, 0] = h[3, 0] = np.nan
    lo[CHUNK : 2 * CHUNK, 0] = np.nan
    h[CHUNK : 2 * CHUNK, 0] = np.nan
    o[2 * CHUNK + 5, 0] = np.nan
    c[4 * CHUNK + 1, 0] = np.nan
    time = rng.permutation(n).astype(np.int64) * 60_000
    prices, times = bar_blocks(o, h, lo, c, time)
    assert prices.shape == (6, 3) and times.shape == (6, 2)
    for b in range(6):
        rows = slice(b * CHUNK, min(n, (b + 1) * CHUNK))
        lows, highs = lo[rows, 0][~np.isnan(lo[rows, 0])], h[rows, 0][~np.isnan(h[rows, 0])]
        assert prices[b, 0] == (lows.min() if lows.size else np.inf)
        assert prices[b, 1] == (highs.max() if highs.size else -np.inf)
        assert prices[b, 2] == float(np.isnan(o[rows, 0] + c[rows, 0]).any())
        assert (times[b, 0], times[b, 1]) == (time[rows].min(), time[rows].max())
    assert bar_blocks(np.c_[o, o], np.c_[h, h], np.c_[lo, lo], np.c_[c, c], time)[0].shape == (0, 3)
    assert bar_blocks(o, h, lo, c, np.empty(0, dtype=np.int64))[1].shape == (0, 2)


def test_next_funding_bars_is_the_first_rate_at_or_after_each_bar() -> None:
    """next_funding_bars against a plain scan: per symbol, the first bar >= t with a rate
    (n where none follows), also for a symbol that never pays funding."""
    rng = np.random.default_rng(5)
    funding = np.where(rng.random((300, 3)) < 0.05, 1e-4, np.nan)
    funding[:, 2] = np.nan
    got = next_funding_bars(funding)
    assert got.dtype == np.int64 and got.flags.c_contiguous and got.flags.writeable
    for s in range(3):
        for t in range(300):
            later = [u for u in range(t, 300) if not np.isnan(funding[u, s])]
            assert got[t, s] == (later[0] if later else 300), (t, s)


def test_hold_range_is_the_settled_classes() -> None:
    """_hold_range_nb: for every set of settled direction classes, lo <= d <= hi holds for
    exactly the directions of those classes (NaN never), or the set is not one range."""
    from engine.sim.fold import _hold_range_nb
    from engine.sim.risk import DIR_NEG, DIR_POS, DIR_ZERO

    directions = [-np.inf, -1e300, -1.0, -5e-324, -0.0, 0.0, 5e-324, 2.5, 1e300, np.inf]
    for bits in range(8):
        steady = [True, bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, True]
        lo, hi, interval = _hold_range_nb(tuple(steady))
        assert interval == (bits != 0b101), bits  # negative and positive without zero
        if not interval:
            continue
        for d in directions:
            k = DIR_NEG if d < 0 else (DIR_POS if d > 0 else DIR_ZERO)
            assert (lo <= d <= hi) == steady[k], (bits, d)
        assert not (lo <= np.nan <= hi)
