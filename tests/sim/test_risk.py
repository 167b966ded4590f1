"""The risk manager: Kelly sizing, caps and the circuit breaker (hand-computed + Hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.sim import BreakerEvent, FillKind, Reason, SimConfig, Sizing, load_specs, simulate
from engine.sim.risk import (
    BAD_PRICE,
    DIR_NAN,
    DIR_NEG,
    DIR_POS,
    DIR_ZERO,
    EDGE_EPS,
    breaker_may_trip_nb,
    breaker_trip_nb,
    hold_classes_nb,
    kelly_nb,
    risk_hold_nb,
    risk_target_nb,
)

NAN = float("nan")
FLAT = (20000.0, 20000.0, 20000.0, 20000.0)
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def target(direction=1.0, p=NAN, b=1.0, *, price=20000.0, equity=10000.0, cur=0.0, other_notional=0.0,
           other_margin=0.0, halted=False, sizing=Sizing.FIXED, fixed=1.0, kelly=0.5, leverage=1.0,
           fee=0.0, max_pos=NAN, max_lev=NAN, max_exp=NAN, rebalance=False, step=0.001, min_qty=0.001,
           max_qty=1000.0, min_notional=100.0, bracket=math.inf):  # fmt: skip
    return risk_target_nb(
        direction,
        p,
        b,
        price,
        equity,
        cur,
        other_notional,
        other_margin,
        halted,
        sizing,
        fixed,
        kelly,
        leverage,
        fee,
        max_pos,
        max_lev,
        max_exp,
        rebalance,
        step,
        min_qty,
        max_qty,
        min_notional,
        bracket,
    )


def test_kelly_formula_and_fractional_size():
    # f* = p - (1 - p) / b = 0.6 - 0.4 / 1.5 = 1/3; half Kelly = 1/6 of 10 000 = 1 666.67 USDT
    # at 20 000 -> 0.0833 BTC -> floored to 0.083
    assert kelly_nb(0.6, 1.5) == pytest.approx(1 / 3, abs=1e-15)
    assert target(1.0, 0.6, 1.5, sizing=Sizing.KELLY) == (0.083, Reason.NONE)
    assert target(-1.0, 0.6, 1.5, sizing=Sizing.KELLY) == (-0.083, Reason.NONE)
    # with leverage 3 the same margin fraction buys three times the notional: 0.25
    assert target(1.0, 0.6, 1.5, sizing=Sizing.KELLY, leverage=3.0) == (0.25, Reason.NONE)


def test_kelly_zero_when_edge_not_positive():
    # 0.4 - 0.6 / 1.5 = 0 exactly: no bet
    assert target(1.0, 0.4, 1.5, sizing=Sizing.KELLY) == (0.0, Reason.EDGE)
    assert target(1.0, 0.3, 1.0, sizing=Sizing.KELLY, cur=-0.5) == (0.0, Reason.EDGE)
    # NaN probability = the model abstained: hold whatever is held
    assert target(1.0, NAN, 1.5, sizing=Sizing.KELLY, cur=0.2) == (0.2, Reason.NO_DECISION)


@HYP
@given(p=st.floats(0, 1), b=st.floats(0.01, 100), cur=st.sampled_from([0.0, 0.5, -0.5]))
def test_kelly_zero_for_non_positive_edge_property(p, b, cur):
    edge = p - (1 - p) / b
    qty, reason = target(1.0, p, b, sizing=Sizing.KELLY, cur=cur, kelly=1.0)
    if edge <= EDGE_EPS:
        if cur > 0:  # already long in the desired direction: held, not sized
            assert (qty, reason) == (cur, Reason.NONE)
        else:
            assert (qty, reason) == (0.0, Reason.EDGE)
    else:
        assert qty >= 0.0 and reason != Reason.EDGE


def test_caps_each_bind():
    # fixed 1.0 at 10x = 100 000 notional; each cap below cuts it and says CAP
    base = {"fixed": 1.0, "leverage": 10.0}
    assert target(**base, max_pos=50.0) == (0.25, Reason.CAP)  # 50 % of 10 000 = 5 000
    assert target(**base, max_lev=2.0) == (1.0, Reason.CAP)  # 2 x 10 000 = 20 000
    assert target(**base, max_exp=100.0, other_notional=6000.0) == (
        0.2,
        Reason.CAP,
    )  # 10 000 - 6 000
    assert target(**base, bracket=50000.0) == (2.5, Reason.CAP)
    assert target(**base, max_qty=1.5) == (1.5, Reason.CAP)
    # free margin 10 000 - 9 000 = 1 000 at 10x: 10 000 notional (fee 0)
    assert target(**base, other_margin=9000.0) == (0.5, Reason.CAP)
    assert target(**base) == (5.0, Reason.NONE)


@HYP
@given(
    equity=st.floats(50, 1e6),
    price=st.floats(1, 1e5),
    fixed=st.floats(0.01, 5),
    leverage=st.floats(1, 20),
    fee=st.floats(0, 0.001),
    max_pos=st.one_of(st.just(NAN), st.floats(1, 500)),
    max_lev=st.one_of(st.just(NAN), st.floats(0.1, 10)),
    max_exp=st.one_of(st.just(NAN), st.floats(1, 500)),
    other_frac=st.floats(0, 2),
    bracket=st.floats(1e3, 1e8),
    direction=st.sampled_from([-1.0, 1.0]),
)
def test_size_never_above_any_cap(equity, price, fixed, leverage, fee, max_pos, max_lev, max_exp, other_frac,
                                  bracket, direction):  # fmt: skip
    other_notional = other_frac * equity
    other_margin = other_notional / leverage
    qty, reason = target(direction, price=price, equity=equity, fixed=fixed, leverage=leverage, fee=fee,
                         max_pos=max_pos, max_lev=max_lev, max_exp=max_exp, other_notional=other_notional,
                         other_margin=other_margin, bracket=bracket, min_notional=5.0)  # fmt: skip
    notional = abs(qty) * price
    tol = 1e-9 * max(1.0, equity)
    if qty == 0.0:
        assert reason == Reason.FILTER
        return
    assert np.sign(qty) == direction
    assert notional <= fixed * equity * leverage + tol
    if not math.isnan(max_pos):
        assert notional <= max_pos / 100 * equity + tol
    if not math.isnan(max_lev):
        assert notional <= max_lev * equity + tol
    if not math.isnan(max_exp):
        assert notional + other_notional <= max_exp / 100 * equity + tol
    assert notional <= bracket + tol
    assert notional / leverage + notional * fee <= equity - other_margin + tol
    assert notional >= 5.0 and abs(qty) >= 0.001
    assert round(abs(qty) / 0.001, 6) == int(round(abs(qty) / 0.001))
    if reason == Reason.NONE:
        assert notional <= fixed * equity * leverage + tol


def test_breaker_halts_entries_but_lets_exits_through(btc):
    cfg = SimConfig(
        execution={"taker_fee": 0.0, "margin_mode": "isolated"},
        risk={"fraction": 1.0, "breaker": {"drawdown_pct": 10, "cooldown_bars": 3}},
    )
    rows = [FLAT, FLAT, (20000, 20000, 17000, 17000)] + [(17000,) * 4] * 5
    o, h, lo, c = (np.array(rows, dtype=float)[:, i : i + 1] for i in range(4))
    d = np.array([1, 1, -1, 1, 1, 1, NAN, NAN], dtype=float).reshape(-1, 1)
    r = simulate(o, h, lo, c, funding_rate=None, direction=d, specs=btc, config=cfg)
    # t1 buys 0.5 BTC at 20 000; t2 closes at 17 000: equity 8 500, drawdown 15 % > 10 %
    ev = r.events
    assert ev["bar"].tolist() == [2, 5]
    assert ev["code"].tolist() == [BreakerEvent.DRAWDOWN, BreakerEvent.RESET]
    assert ev["value"][0] == pytest.approx(15.0, abs=1e-9)
    # the flip decided at t2 becomes a plain exit; t3, t4 may not enter; t5 resets and enters
    assert r.reason[2:5, 0].tolist() == [Reason.BREAKER] * 3
    assert r.target_qty[2:5, 0].tolist() == [0.0] * 3
    f = r.fills
    assert f["bar"].tolist() == [1, 3, 6]
    assert f["kind"].tolist() == [FillKind.ENTRY, FillKind.EXIT, FillKind.ENTRY]


def test_breaker_daily_loss_uses_utc_days(btc):
    cfg = SimConfig(
        execution={"taker_fee": 0.0, "margin_mode": "isolated"},
        risk={"fraction": 1.0, "breaker": {"daily_loss_pct": 5, "cooldown_bars": 2}},
    )
    day = 86_400_000
    t0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
    # 4 bars on Jan 1 (the last at 23:00), then Jan 2
    times = np.array(
        [t0, t0 + 3_600_000, t0 + 7_200_000, t0 + day - 3_600_000, t0 + day, t0 + day + 3_600_000]
    )
    rows = [FLAT, FLAT, (20000, 20000, 19200, 19200), (19200,) * 4, (19200,) * 4, (19200,) * 4]
    o, h, lo, c = (np.array(rows, dtype=float)[:, i : i + 1] for i in range(4))
    d = np.ones((6, 1))
    r = simulate(
        o, h, lo, c, funding_rate=None, direction=d, specs=btc, config=cfg, open_time=times
    )
    # 0.5 BTC from 20 000 to 19 200: -400 = -4 % of the day's 10 000 -> no trip
    assert len(r.events) == 0
    rows[2] = (20000, 20000, 18800, 18800)  # -600 = -6 % -> trip at bar 2
    o, h, lo, c = (np.array(rows, dtype=float)[:, i : i + 1] for i in range(4))
    r = simulate(
        o, h, lo, c, funding_rate=None, direction=d, specs=btc, config=cfg, open_time=times
    )
    assert r.events["bar"].tolist() == [2, 4]
    assert r.events["code"].tolist() == [BreakerEvent.DAILY_LOSS, BreakerEvent.RESET]
    assert r.events["value"][0] == pytest.approx(6.0, abs=1e-9)


def _walk(rets: list[float], start: float = 20000.0) -> tuple[np.ndarray, ...]:
    close = start * np.cumprod(1.0 + np.array(rets))
    open_ = np.concatenate([[start], close[:-1]])
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    return tuple(np.round(x, 1).reshape(-1, 1) for x in (open_, high, low, close))


@HYP
@given(
    rets=st.lists(st.floats(-0.03, 0.03), min_size=20, max_size=120),
    dirs=st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=120, max_size=120),
    streak=st.integers(1, 3),
    cooldown=st.integers(1, 10),
    dd=st.floats(1, 20),
)
def test_no_new_entry_until_cooldown_ends(rets, dirs, streak, cooldown, dd):
    o, h, lo, c = _walk(rets)
    n = len(rets)
    # all of the equity as margin (the largest fraction there is) at 3x: trips come fast
    cfg = SimConfig(
        execution={"leverage": 3, "margin_mode": "isolated", "stop_loss": {"pct": 1.0}},
        risk={
            "fraction": 1.0,
            "breaker": {
                "max_consecutive_losses": streak,
                "cooldown_bars": cooldown,
                "drawdown_pct": dd,
            },
        },
    )
    r = simulate(o, h, lo, c, funding_rate=None, direction=np.array(dirs[:n]).reshape(-1, 1),
                 specs=load_specs(["BTCUSDT"]), config=cfg)  # fmt: skip
    entries = r.fills["bar"][r.fills["kind"] == FillKind.ENTRY]
    trips = r.events[r.events["code"] != BreakerEvent.RESET]
    for trip in trips:
        t = int(trip["bar"])
        # decisions at t .. t+cooldown-1 are halted, so nothing opens at t+1 .. t+cooldown
        assert not np.any((entries > t) & (entries <= t + cooldown)), (t, entries)
        resets = r.events["bar"][(r.events["code"] == BreakerEvent.RESET) & (r.events["bar"] > t)]
        if t + cooldown < n:
            assert resets[0] == t + cooldown
    # every trip is followed by its reset before the next trip
    codes = r.events["code"].tolist()
    assert all(
        (a == BreakerEvent.RESET) != (b == BreakerEvent.RESET)
        for a, b in zip(codes, codes[1:], strict=False)
    )


@HYP
@given(
    rets=st.lists(st.floats(-0.04, 0.04), min_size=30, max_size=150),
    seed=st.integers(0, 2**32 - 1),
    cross=st.booleans(),
    leverage=st.integers(1, 30),
)
def test_deterministic_and_the_books_balance(rets, seed, cross, leverage):
    """Two calls give identical results; the wallet equals cash + realised PnL - fees - funding."""
    o, h, lo, c = _walk(rets)
    n = len(rets)
    rng = np.random.default_rng(seed)
    direction = rng.choice([-1.0, 0.0, 1.0, NAN], size=(n, 1), p=[0.3, 0.1, 0.4, 0.2])
    prob = rng.uniform(0.3, 0.8, size=(n, 1))
    funding = np.where(rng.random((n, 1)) < 0.2, rng.normal(0, 0.001, (n, 1)), NAN)
    atr = np.abs(rng.normal(200, 50, (n, 1)))
    cfg = SimConfig(
        execution={
            "leverage": leverage,
            "margin_mode": "cross" if cross else "isolated",
            "slippage_bps": 3,
            "stop_loss": {"atr": 2},
            "take_profit": {"pct": 3},
        },
        risk={
            "sizing": "kelly",
            "kelly_fraction": 1.0,
            "payoff_ratio": 1.5,
            "breaker": {"max_consecutive_losses": 3, "cooldown_bars": 5},
        },
        rebalance=True,
    )
    specs = load_specs(["BTCUSDT"])

    def run():
        return simulate(o, h, lo, c, funding_rate=funding, direction=direction, prob=prob, atr=atr,
                        specs=specs, config=cfg)  # fmt: skip

    a, b = run(), run()
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
    booked = 10_000 + a.fills["realized"].sum() - a.fills["fee"].sum() - a.funding["amount"].sum()
    assert a.wallet[-1] == pytest.approx(booked, abs=1e-6)
    assert np.all(a.equity >= -1e-6)  # liquidation never takes an account below zero
    # quantities stay on the step grid
    assert np.allclose(np.round(a.position / 0.001), a.position / 0.001, atol=1e-6)


def test_breaker_may_trip_is_false_only_where_no_rule_can_trip():
    """breaker_may_trip_nb against breaker_trip_nb: wherever it says the breaker cannot trip,
    no equity, reference or time makes breaker_trip_nb name a rule; wherever it says it may,
    some bar does (so a steady run that skips the check loses nothing and skips no trip)."""
    rng = np.random.default_rng(11)
    equities = [-50.0, 0.0, 1.0, 5_000.0, 9_000.0, 9_990.0, 10_000.0, 12_000.0]
    for daily in (math.nan, 0.5, 5.0):
        for drawdown in (math.nan, 1.0, 20.0):
            for losses in (0, 1, 3):
                for streak in (0, 1, 2, 3, 7):
                    may = breaker_may_trip_nb(streak, daily, drawdown, losses)
                    tripped = False
                    for _ in range(200):
                        start, peak, equity = (float(rng.choice(equities)) for _ in range(3))
                        time_ms = int(rng.choice([-1, 0, 1_700_000_000_000]))
                        code, _ = breaker_trip_nb(
                            start, peak, streak, time_ms, equity, daily, drawdown, losses
                        )
                        tripped = tripped or code >= 0
                    assert may == tripped, (daily, drawdown, losses, streak)


def _bar_class(direction: float, price: float) -> int:
    if not price > 0.0:
        return BAD_PRICE
    if math.isnan(direction):
        return DIR_NAN
    return DIR_NEG if direction < 0 else (DIR_POS if direction > 0 else DIR_ZERO)


def test_hold_classes_are_risk_hold_by_class():
    """hold_classes_nb's table against risk_hold_nb itself on random bars: the rule reads
    the direction only through its class, the price only through whether it is valid, and
    p only under Kelly sizing (what lets a one-symbol steady run test a bar's class)."""
    rng = np.random.default_rng(12)
    directions = [math.nan, -math.inf, -3.0, -1.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 1.0, math.inf]
    prices = [math.nan, -5.0, 0.0, -0.0, 1e-9, 1.0, 64_000.0, math.inf]
    seen = set()
    for q in (-2.5, -0.001, 0.0, 0.001, 3.0):
        for sizing in (Sizing.FIXED, Sizing.KELLY):
            for rebalance in (False, True):
                steady, why = hold_classes_nb(q, sizing, rebalance)
                for _ in range(300):
                    d = float(rng.choice(directions)) * float(
                        rng.choice([1.0, rng.uniform(0.1, 9)])
                    )
                    price = float(rng.choice(prices))
                    p = math.nan if sizing == Sizing.KELLY else float(rng.choice([math.nan, 0.6]))
                    done, held, reason = risk_hold_nb(d, p, price, q, False, sizing, rebalance)
                    k = _bar_class(d, price)
                    seen.add((k, bool(done and held == q)))
                    assert steady[k] == (done and held == q), (q, sizing, rebalance, d, price)
                    if steady[k]:
                        assert why[k] == reason, (q, sizing, rebalance, d, price)
    # every class was seen, and both outcomes
    assert {k for k, _ in seen} == {DIR_NAN, DIR_NEG, DIR_ZERO, DIR_POS, BAD_PRICE}
    assert {s for _, s in seen} == {True, False}
