"""The pure formulas: rounding, filters, fills, margin, liquidation price, exit order."""

from __future__ import annotations

import json
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, DataError
from engine.sim import FillKind, OrderCheck, load_specs, spec_arrays
from engine.sim.accounting import (
    apply_fill_nb,
    check_order_nb,
    exit_levels_nb,
    exit_trigger_nb,
    floor_qty_nb,
    liquidation_price_nb,
    maint_margin_nb,
    max_notional_nb,
    round_price_nb,
    stop_target_prices_nb,
)
from engine.sim.specs import EXCHANGE_INFO, LEVERAGE_BRACKETS

NAN = float("nan")


def test_specs_from_the_shipped_snapshots():
    btc, eth = load_specs(["BTCUSDT", "ETHUSDT"])
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.max_qty, btc.market_max_qty) == (
        0.1,
        0.001,
        0.001,
        1000,
        120,
    )
    assert (btc.min_notional, btc.price_precision, btc.qty_precision) == (100, 2, 3)
    assert (eth.tick_size, eth.step_size, eth.min_notional) == (0.01, 0.001, 20)
    assert btc.bracket_leverage[0] == 125 and btc.bracket_mmr[0] == 0.004
    # maintenance margin = notional * mmr - cum: 100 000 USDT is in bracket 2 (0.5 %, cum 50)
    assert btc.maint_margin(100_000) == pytest.approx(450.0)
    assert btc.max_notional(20) == 20_000_000 and btc.max_notional(126) == 0.0
    info = json.loads(EXCHANGE_INFO.read_text())
    assert {
        "timezone",
        "serverTime",
        "rateLimits",
        "exchangeFilters",
        "assets",
        "symbols",
    } <= info.keys()
    fields = ("symbol pair contractType deliveryDate onboardDate status maintMarginPercent requiredMarginPercent "
              "baseAsset quoteAsset marginAsset pricePrecision quantityPrecision baseAssetPrecision quotePrecision "
              "underlyingType underlyingSubType settlePlan triggerProtect liquidationFee marketTakeBound filters "
              "orderTypes timeInForce").split()  # fmt: skip
    for sym in info["symbols"]:
        assert set(fields) <= sym.keys()


def test_spec_errors(tmp_path):
    with pytest.raises(ConfigError, match="DOGEUSDT") as err:
        load_specs(["DOGEUSDT"])
    assert "BTCUSDT" in str(err.value.hint)
    data = json.loads(LEVERAGE_BRACKETS.read_text())
    data[0]["brackets"][1]["cum"] = 49.0  # breaks continuity at 50 000
    bad = tmp_path / "brackets.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="cum"):
        load_specs(["BTCUSDT"], brackets=bad)


def test_specs_are_parsed_once_per_snapshot(tmp_path):
    """A sweep asks for the same symbol's spec for every combination: the parsed spec is
    reused while the snapshot documents are the same, and a different brackets file is
    parsed on its own."""
    first = load_specs(["BTCUSDT"])[0]
    assert load_specs(["ETHUSDT", "BTCUSDT"])[1] is first
    data = json.loads(LEVERAGE_BRACKETS.read_text())
    data[0]["brackets"][0]["initialLeverage"] = 100  # BTCUSDT's first bracket
    other = tmp_path / "brackets.json"
    other.write_text(json.dumps(data))
    mine = load_specs(["BTCUSDT"], brackets=other)[0]
    assert mine is not first and mine.bracket_leverage[0] == 100
    assert first.bracket_leverage[0] == 125 and load_specs(["BTCUSDT"])[0] is first


@settings(max_examples=300, deadline=None)
@given(cents=st.integers(1, 10**9), mode=st.sampled_from([-1, 0, 1]))
def test_round_price_matches_decimal(cents, mode):
    price = cents / 100  # prices with two decimals, tick 0.1
    rounding = {-1: ROUND_FLOOR, 0: "ROUND_HALF_UP", 1: ROUND_CEILING}[mode]
    expected = float(Decimal(str(price)).quantize(Decimal("0.1"), rounding=rounding))
    assert round_price_nb(price, 0.1, mode) == expected


@settings(max_examples=300, deadline=None)
@given(milli=st.integers(0, 10**7), extra=st.floats(0, 0.999))
def test_floor_qty_never_rounds_up(milli, extra):
    qty = (milli + extra) / 1000
    expected = float(Decimal(str(qty)).quantize(Decimal("0.001"), rounding=ROUND_FLOOR))
    got = floor_qty_nb(qty, 0.001)
    # exact multiples survive binary noise (0.003 / 0.001 = 2.9999999999999996)
    assert got == expected
    assert floor_qty_nb(-qty, 0.001) == -got


def test_check_order_codes():
    args = (0.001, 0.001, 1000.0, 100.0)  # step, min qty, max qty, min notional
    assert check_order_nb(0.005, 20000.0, *args, False) == OrderCheck.OK
    assert check_order_nb(0.0055, 20000.0, *args, False) == OrderCheck.STEP
    assert check_order_nb(0.0, 20000.0, *args, False) == OrderCheck.MIN_QTY
    assert check_order_nb(1001.0, 20000.0, *args, False) == OrderCheck.MAX_QTY
    assert check_order_nb(0.004, 20000.0, *args, False) == OrderCheck.MIN_NOTIONAL  # 80 USDT
    assert check_order_nb(0.004, 20000.0, *args, True) == OrderCheck.OK  # reduce-only is exempt


def test_apply_fill_open_increase_reduce_flip():
    # open 1 @ 100, add 1 @ 110 -> 2 @ 105
    assert apply_fill_nb(0.0, 0.0, 1.0, 100.0) == (1.0, 100.0, 0.0, 0.0)
    assert apply_fill_nb(1.0, 100.0, 1.0, 110.0) == (2.0, 105.0, 0.0, 0.0)
    # reduce 0.5 @ 120: +7.5, entry unchanged
    assert apply_fill_nb(2.0, 105.0, -0.5, 120.0) == (1.5, 105.0, 7.5, 0.5)
    # flip: sell 2 @ 95 closes 1.5 (-15) and opens 0.5 short @ 95
    assert apply_fill_nb(1.5, 105.0, -2.0, 95.0) == (-0.5, 95.0, -15.0, 1.5)
    # short closes: buy 0.5 @ 90 -> +2.5
    assert apply_fill_nb(-0.5, 95.0, 0.5, 90.0) == (0.0, 0.0, 2.5, 0.5)


def test_maint_margin_brackets_and_max_notional():
    spa = spec_arrays(load_specs(["BTCUSDT"]))
    caps, mmr, cum, levs, n = (
        spa.br_cap[0],
        spa.br_mmr[0],
        spa.br_cum[0],
        spa.br_lev[0],
        spa.n_br[0],
    )
    assert maint_margin_nb(40_000.0, caps, mmr, cum, n) == pytest.approx(160.0)  # 0.4 %
    assert maint_margin_nb(-300_000.0, caps, mmr, cum, n) == pytest.approx(300_000 * 0.01 - 1300)
    # continuous at a bracket edge
    assert maint_margin_nb(50_000.0 - 1e-6, caps, mmr, cum, n) == pytest.approx(
        maint_margin_nb(50_000.0, caps, mmr, cum, n)
    )
    assert max_notional_nb(50.0, caps, levs, n) == 3_000_000.0


@settings(max_examples=200, deadline=None)
@given(
    qty=st.floats(0.001, 200).map(lambda q: round(q, 3)),
    entry=st.floats(1000, 100_000),
    lev=st.integers(1, 50),
    short=st.booleans(),
)
def test_liquidation_price_is_where_margin_meets_maintenance(qty, entry, lev, short):
    spa = spec_arrays(load_specs(["BTCUSDT"]))
    # Binance only allows positions up to the bracket limit of the leverage
    assume(qty * entry <= max_notional_nb(float(lev), spa.br_cap[0], spa.br_lev[0], spa.n_br[0]))
    q = -qty if short else qty
    margin = qty * entry / lev
    lp = liquidation_price_nb(
        q, entry, margin, spa.br_floor[0], spa.br_cap[0], spa.br_mmr[0], spa.br_cum[0], spa.n_br[0]
    )
    if lp == 0.0:  # a long that cannot be liquidated (1x with a tiny maintenance rate)
        assert not short
        return
    mm = maint_margin_nb(qty * lp, spa.br_cap[0], spa.br_mmr[0], spa.br_cum[0], spa.n_br[0])
    assert margin + q * (lp - entry) == pytest.approx(mm, rel=1e-9, abs=1e-6)
    assert (lp < entry) != short


def test_stop_target_prices():
    assert stop_target_prices_nb(1, 20000.0, 2.0, 4.0, NAN, NAN, NAN, 0.1) == (19600.0, 20800.0)
    assert stop_target_prices_nb(-1, 20000.0, 2.0, NAN, NAN, 3.0, 100.0, 0.1) == (20400.0, 19700.0)
    stop, target = stop_target_prices_nb(
        1, 20000.0, NAN, NAN, 1.5, NAN, NAN, 0.1
    )  # no ATR: no stop
    assert np.isnan(stop) and np.isnan(target)


def test_exit_order_within_a_bar():
    # long: stop 19 600 above liquidation 18 000 -> the stop comes first
    assert exit_trigger_nb(1.0, 20000.0, 20500.0, 17000.0, 19600.0, 20400.0, 18000.0) == (
        FillKind.STOP,
        19600.0,
    )
    # a stop below the liquidation price is never reached: liquidation first
    assert exit_trigger_nb(1.0, 20000.0, 20500.0, 17000.0, 17500.0, 20400.0, 18000.0) == (
        FillKind.LIQUIDATION,
        18000.0,
    )
    # target touched, no adverse level touched
    assert exit_trigger_nb(1.0, 20000.0, 20500.0, 19700.0, 19600.0, 20400.0, 18000.0) == (
        FillKind.TARGET,
        20400.0,
    )
    # short mirror and gap through the stop
    assert exit_trigger_nb(-1.0, 20000.0, 20500.0, 19500.0, 20200.0, 19600.0, 22000.0) == (
        FillKind.STOP,
        20200.0,
    )
    assert exit_trigger_nb(-1.0, 20300.0, 20500.0, 20250.0, 20200.0, 19600.0, 22000.0) == (
        FillKind.STOP,
        20300.0,
    )
    assert exit_trigger_nb(1.0, 20000.0, 20100.0, 19900.0, NAN, NAN, NAN)[0] == -1


def test_exit_levels_fire_exactly_when_exit_trigger_does():
    """exit_levels_nb's two levels against exit_trigger_nb: every position side, levels
    absent (NaN), non-positive, infinite or equal, and bars touching, crossing or missing
    them (a NaN low or high included): an exit exactly when the bar reaches a level."""
    rng = np.random.default_rng(7)
    levels = [NAN, NAN, -5.0, 0.0, 95.0, 98.0, 100.0, 102.0, 105.0, np.inf, -np.inf]
    prices = [NAN, 90.0, 95.0, 97.0, 98.0, 100.0, 102.0, 103.0, 105.0, 110.0]
    checked = 0
    for _ in range(20_000):
        qty = float(rng.choice([0.0, 1.5, -1.5, 1e-3, -2e3]))
        stop, target, liq = (float(rng.choice(levels)) for _ in range(3))
        low, high = sorted(float(rng.choice(prices[1:])) for _ in range(2))
        if rng.random() < 0.05:
            low, high = (NAN, high) if rng.random() < 0.5 else (low, NAN)
        open_ = float(rng.choice(prices[1:]))
        kind, _ = exit_trigger_nb(qty, open_, high, low, stop, target, liq)
        lo_level, hi_level = exit_levels_nb(qty, stop, target, liq)
        fires = low <= lo_level or high >= hi_level
        assert (kind >= 0) == fires, (qty, stop, target, liq, low, high)
        checked += kind >= 0
    assert 2_000 < checked < 18_000  # both outcomes are exercised
