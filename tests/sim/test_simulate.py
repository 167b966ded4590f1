"""Hand-computed backtests on handmade BTCUSDT bars.

Spec used throughout (engine/resources): tick 0.10, step 0.001, MIN_NOTIONAL 100, bracket 1
= notional [0, 50 000) at mmr 0.4 %, cum 0; liquidation fee 1.25 %. Every expected number
is worked out in the comments; a decision at the close of bar t fills at the open of t+1.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from engine.errors import ConfigError, DataError
from engine.sim import FillKind, OrderType, Reason, SimConfig

NAN = float("nan")
FLAT = (20000.0, 20000.0, 20000.0, 20000.0)


def test_taker_fee_on_entry_and_exit(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0.0005}, risk={"fraction": 0.5})
    rows = [
        FLAT,
        (20000, 20100, 19900, 20050),
        (20100, 20200, 20000, 20150),
        (20200, 20200, 20200, 20200),
    ]
    r = run_btc(rows, [1, 1, 0, NAN], config=cfg)
    # t0: notional 0.5 * 10 000 * 1 = 5 000 -> 0.25 BTC at the close 20 000.
    # t1 open 20 000: buy 0.25, fee 0.25 * 20 000 * 0.0005 = 2.5 -> wallet 9 997.5
    # t1 close 20 050: equity 9 997.5 + 0.25 * 50 = 10 010
    # t3 open 20 200: sell 0.25, pnl 0.25 * 200 = 50, fee 0.25 * 20 200 * 0.0005 = 2.525
    # wallet 9 997.5 + 50 - 2.525 = 10 044.975
    assert r.fills["bar"].tolist() == [1, 3]
    assert r.fills["fee"].tolist() == pytest.approx([2.5, 2.525], abs=1e-12)
    assert r.fills["kind"].tolist() == [FillKind.ENTRY, FillKind.EXIT]
    assert r.equity[1] == pytest.approx(10010.0, abs=1e-9)
    assert r.equity[3] == pytest.approx(10044.975, abs=1e-9)
    assert r.wallet[3] == pytest.approx(10044.975, abs=1e-9)
    (t,) = r.trades
    assert (t["entry_bar"], t["exit_bar"], t["qty"], t["side"]) == (1, 3, 0.25, 1)
    assert t["pnl"] == pytest.approx(50 - 2.5 - 2.525, abs=1e-9)
    assert t["fees"] == pytest.approx(5.025, abs=1e-12)


def test_maker_fee_on_limit_fill(run_btc):
    cfg = SimConfig(
        execution={
            "order_type": "limit",
            "limit_offset_bps": 10,
            "maker_fee": 0.0002,
        },
        risk={"fraction": 0.5},
    )
    rows = [FLAT, (20010, 20050, 19970, 20000), (20100, 20100, 20100, 20100)]
    r = run_btc(rows, [1, 0, NAN], config=cfg)
    # buy limit = 20 000 * (1 - 0.001) = 19 980.0; t1 low 19 970 touches it, the open
    # 20 010 is above it -> fill at 19 980, maker fee 0.25 * 19 980 * 0.0002 = 0.999
    # exit at t2 open 20 100 (market, taker 0.0005): pnl 0.25 * 120 = 30, fee 2.5125
    f = r.fills
    assert f["order_type"].tolist() == [OrderType.LIMIT, OrderType.MARKET]
    assert f["price"].tolist() == [19980.0, 20100.0]
    assert f["fee"].tolist() == pytest.approx([0.999, 2.5125], abs=1e-12)
    assert r.wallet[2] == pytest.approx(10000 - 0.999 + 30 - 2.5125, abs=1e-9)


def test_limit_not_touched_does_not_fill_and_gap_fills_at_open(run_btc):
    cfg = SimConfig(
        execution={"order_type": "limit", "limit_offset_bps": 10},
        risk={"fraction": 0.5},
    )
    # limit 19 980: the low 19 990 never reaches it
    r = run_btc([FLAT, (20010, 20050, 19990, 20000)], [1, NAN], config=cfg)
    assert len(r.fills) == 0 and r.position[1, 0] == 0.0
    # the bar opens below the limit: a resting buy fills at the better open 19 950
    r = run_btc([FLAT, (19950, 20050, 19900, 20000)], [1, NAN], config=cfg)
    assert r.fills["price"].tolist() == [19950.0]


def test_slippage_against_the_trader(run_btc):
    cfg = SimConfig(
        execution={"slippage_bps": 10, "taker_fee": 0.0005},
        risk={"fraction": 0.5},
    )
    r = run_btc([FLAT, FLAT, (20200, 20200, 20200, 20200)], [1, 0, NAN], config=cfg)
    # buy at 20 000 * 1.001 = 20 020, fee 0.25 * 20 020 * 0.0005 = 2.5025
    # sell at 20 200 * 0.999 = 20 179.8: pnl 0.25 * 159.8 = 39.95, fee 2.522475
    assert r.fills["price"].tolist() == pytest.approx([20020.0, 20179.8], abs=1e-9)
    assert r.wallet[2] == pytest.approx(10000 - 2.5025 + 39.95 - 2.522475, abs=1e-9)


@pytest.mark.parametrize(("side", "sign"), [(1, 1.0), (-1, -1.0)])
def test_funding_paid_long_received_short_at_funding_bars_only(run_btc, side, sign):
    cfg = SimConfig(execution={"taker_fee": 0.0}, risk={"fraction": 0.5})
    up = (20100, 20100, 20100, 20100)
    rows = [FLAT, FLAT, up, up, (20200, 20200, 20200, 20200)]
    funding = [0.0005, 0.0002, 0.0001, NAN, 0.0003]
    r = run_btc(rows, [side] * 5, funding=funding, config=cfg)
    # t0: flat, nothing to pay though a rate is set.
    # t1: funding settles at the open BEFORE the order decided at t0 fills, so the account
    #     is still flat at the funding instant: nothing to pay; then 0.25 BTC fill at 20 000.
    # t2: 0.25 * 20 100 (open as mark) * 0.0001 = 0.5025;  t3: no funding (NaN)
    # t4: 0.25 * 20 200 * 0.0003 = 1.515
    assert r.funding["bar"].tolist() == [2, 4]
    assert r.funding["qty"].tolist() == [side * 0.25, side * 0.25]
    assert r.funding["amount"].tolist() == pytest.approx([sign * 0.5025, sign * 1.515], abs=1e-12)
    # a long pays (wallet down), a short receives (wallet up): 0.5025 + 1.515 = 2.0175;
    # price PnL 0.25 * (20 200 - 20 000) = 50 in the position's favour for a long
    assert r.wallet[4] == pytest.approx(10000 - sign * 2.0175, abs=1e-9)
    assert r.equity[4] == pytest.approx(10000 - sign * 2.0175 + sign * 50, abs=1e-9)


def test_funding_uses_mark_price_when_given(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0.0}, risk={"fraction": 0.5})
    mark = np.array([[NAN], [NAN], [20080.0]])
    r = run_btc(
        [FLAT, FLAT, FLAT], [1, 1, 1], funding=[NAN, NAN, 0.0001], config=cfg, mark_price=mark
    )
    assert r.funding["amount"].tolist() == pytest.approx([0.25 * 20080 * 0.0001], abs=1e-12)


def test_trade_records_funding_and_pnl_net(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0.0005}, risk={"fraction": 0.5})
    r = run_btc(
        [FLAT, FLAT, FLAT, FLAT], [1, 1, 0, NAN], funding=[NAN, NAN, 0.001, NAN], config=cfg
    )
    # fees 2.5 + 2.5, funding 0.25 * 20 000 * 0.001 = 5, price PnL 0 -> pnl -10
    (t,) = r.trades
    assert t["funding"] == pytest.approx(5.0, abs=1e-12)
    assert t["pnl"] == pytest.approx(-10.0, abs=1e-12)
    assert r.equity[-1] == pytest.approx(9990.0, abs=1e-9)


def test_position_opened_by_a_fill_at_a_funding_bar_open_pays_no_funding_for_it(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0.0005}, risk={"fraction": 0.5})
    r = run_btc([FLAT, FLAT, FLAT], [1, NAN, NAN], funding=[NAN, 0.001, 0.001], config=cfg)
    # decided at close t0 (23:55 bar), the buy reaches the exchange after t1's funding time:
    # t1: funding first, on the position held then (none) -> no payment; buy 0.25 @ 20 000,
    #     fee 0.25 * 20 000 * 0.0005 = 2.5
    # t2: the position now held pays 0.25 * 20 000 * 0.001 = 5
    assert r.fills["bar"].tolist() == [1]
    assert r.funding["bar"].tolist() == [2]
    assert r.funding["amount"].tolist() == pytest.approx([5.0], abs=1e-12)
    assert r.wallet[1] == pytest.approx(10000 - 2.5, abs=1e-9)
    assert r.wallet[2] == pytest.approx(10000 - 2.5 - 5.0, abs=1e-9)


@pytest.mark.parametrize(("mark", "paid"), [(None, 5.025), (20080.0, 5.02)])
def test_position_closed_by_a_fill_at_a_funding_bar_open_pays_that_funding(run_btc, mark, paid):
    cfg = SimConfig(execution={"taker_fee": 0.0005}, risk={"fraction": 0.5})
    up = (20100, 20100, 20100, 20100)
    kw = {} if mark is None else {"mark_price": np.array([[NAN], [NAN], [mark]])}
    r = run_btc([FLAT, FLAT, up], [1, 0, NAN], funding=[NAN, NAN, 0.001], config=cfg, **kw)
    # t1: buy 0.25 @ 20 000, fee 2.5. t1 close: decide flat -> sell pending for t2.
    # t2: funding first, on the 0.25 still held at the funding instant:
    #     mark = the bar's open 20 100 -> 0.25 * 20 100 * 0.001 = 5.025,
    #     or the given mark 20 080 -> 0.25 * 20 080 * 0.001 = 5.02;
    #     then sell 0.25 @ 20 100: PnL 0.25 * 100 = 25, fee 0.25 * 20 100 * 0.0005 = 2.5125
    assert r.funding["bar"].tolist() == [2]
    assert r.funding["qty"].tolist() == [0.25]
    assert r.funding["mark"].tolist() == [20100.0 if mark is None else mark]
    assert r.funding["amount"].tolist() == pytest.approx([paid], abs=1e-12)
    (t,) = r.trades
    assert (t["entry_bar"], t["exit_bar"], t["exit_kind"]) == (1, 2, FillKind.EXIT)
    assert t["funding"] == pytest.approx(paid, abs=1e-12)
    assert t["pnl"] == pytest.approx(25 - 2.5 - 2.5125 - paid, abs=1e-9)
    assert r.position[2, 0] == 0.0
    assert r.wallet[2] == pytest.approx(10000 + 25 - 2.5 - 2.5125 - paid, abs=1e-9)


def test_flip_at_a_funding_bar_open_charges_the_old_position(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0.0005}, risk={"fraction": 0.5})
    r = run_btc([FLAT, FLAT, FLAT], [1, -1, NAN], funding=[NAN, NAN, 0.001], config=cfg)
    # t1: buy 0.25 @ 20 000, fee 2.5 -> equity 9 997.5 at the close;
    #     short target 0.5 * 9 997.5 / 20 000 = 0.2499375 -> floored to 0.249
    # t2: funding first on the LONG 0.25 (pays 0.25 * 20 000 * 0.001 = 5, booked on the
    #     long trade), then the pending order fills in two legs: sell 0.25 closes the long
    #     (kind exit), sell 0.249 opens the short (kind entry)
    assert r.funding["bar"].tolist() == [2]
    assert r.funding["qty"].tolist() == [0.25]
    assert r.funding["amount"].tolist() == pytest.approx([5.0], abs=1e-12)
    assert r.fills["bar"].tolist() == [1, 2, 2]
    assert r.fills["kind"].tolist() == [FillKind.ENTRY, FillKind.EXIT, FillKind.ENTRY]
    assert r.fills["qty"].tolist() == pytest.approx([0.25, 0.25, 0.249], abs=1e-12)
    assert r.position[2, 0] == pytest.approx(-0.249, abs=1e-12)
    (t,) = r.trades  # the long; the short is still open
    assert (t["side"], t["exit_bar"]) == (1, 2)
    assert t["funding"] == pytest.approx(5.0, abs=1e-12)


def test_liquidation_isolated(run_btc):
    cfg = SimConfig(
        execution={"leverage": 10, "taker_fee": 0.0, "margin_mode": "isolated"},
        risk={"fraction": 0.4},
    )
    rows = [FLAT, FLAT, (19500, 19600, 18000, 18500), (18500, 18500, 18500, 18500)]
    r = run_btc(rows, [1, 1, 1, NAN], config=cfg)
    # notional 0.4 * 10 000 * 10 = 40 000 -> 2 BTC; isolated margin 40 000 / 10 = 4 000
    # LP = (WB + cum - Q*E) / (Q*mmr - Q) = (4 000 - 40 000) / (0.008 - 2) = 18 072.2891566...
    lp = (4000 - 40000) / (2 * 0.004 - 2)
    assert 18072.28 < lp < 18072.29
    # check: margin + uPnL at LP = 4 000 + 2 * (LP - 20 000) = 144.578 = 2 * LP * 0.004 (maint.)
    assert 4000 + 2 * (lp - 20000) == pytest.approx(2 * lp * 0.004, abs=1e-9)
    # t2 low 18 000 <= LP: liquidated at LP; the clearance fee takes the remaining
    # maintenance margin (min(144.58, 1.25 % * 36 144.58 = 451.8)), so the isolated
    # margin is lost: wallet 10 000 - 4 000 = 6 000.
    assert r.liquidations == 1
    liq = r.fills[r.fills["kind"] == FillKind.LIQUIDATION]
    assert liq["price"].tolist() == pytest.approx([lp], abs=1e-9)
    assert liq["fee"].tolist() == pytest.approx([2 * lp * 0.004], abs=1e-9)
    assert r.equity[2] == pytest.approx(6000.0, abs=1e-9)
    assert r.position[2, 0] == 0.0
    assert r.trades["exit_kind"].tolist() == [FillKind.LIQUIDATION]
    # after liquidation the decision at t2 (long) re-enters at t3
    assert r.position[3, 0] > 0


def test_liquidation_cross(run_btc):
    cfg = SimConfig(
        execution={"leverage": 10, "taker_fee": 0.0, "margin_mode": "cross"}, risk={"fraction": 0.4}
    )
    # the isolated position above would die at 18 072; in cross the whole wallet backs it
    safe = run_btc([FLAT, FLAT, (19500, 19600, 16000, 18500)], [1, 1, NAN], config=cfg)
    assert safe.liquidations == 0
    assert safe.equity[2] == pytest.approx(10000 + 2 * (18500 - 20000), abs=1e-9)
    # LP = (10 000 - 40 000) / (0.008 - 2) = 15 060.2409...; t2 low 15 000 reaches it
    lp = (10000 - 40000) / (2 * 0.004 - 2)
    r = run_btc([FLAT, FLAT, (19500, 19600, 15000, 15500)], [1, 1, NAN], config=cfg)
    assert r.liquidations == 1
    assert r.fills["price"][-1] == pytest.approx(lp, abs=1e-9)
    # margin balance at LP equals the maintenance margin 2 * LP * 0.004 = 120.48, which
    # goes as the clearance fee: the account is left with 0.
    assert r.fills["fee"][-1] == pytest.approx(2 * lp * 0.004, abs=1e-9)
    assert r.equity[2] == pytest.approx(0.0, abs=1e-9)


def test_liquidation_through_a_gap_stops_at_the_bankruptcy_price(run_btc):
    cfg = SimConfig(
        execution={"leverage": 10, "taker_fee": 0.0, "margin_mode": "isolated"},
        risk={"fraction": 0.4},
    )
    # t2 opens at 17 000, below LP 18 072 and below the bankruptcy price
    # 20 000 - 4 000 / 2 = 18 000: the trader loses exactly the margin, no more.
    r = run_btc([FLAT, FLAT, (17000, 17100, 16900, 17000)], [1, 1, NAN], config=cfg)
    assert r.fills["price"][-1] == pytest.approx(18000.0, abs=1e-9)
    assert r.fills["fee"][-1] == pytest.approx(0.0, abs=1e-9)
    assert r.equity[2] == pytest.approx(6000.0, abs=1e-9)


def test_stop_fills_first_when_stop_and_target_touched_in_one_bar(run_btc):
    cfg = SimConfig(
        execution={
            "taker_fee": 0.0005,
            "stop_loss": {"pct": 2},
            "take_profit": {"pct": 2},
        },
        risk={"fraction": 0.5},
    )
    r = run_btc([FLAT, FLAT, (20000, 20500, 19500, 20000)], [1, 1, NAN], config=cfg)
    # entry 20 000: stop 19 600, target 20 400; t2 touches both -> the stop
    # pnl 0.25 * -400 = -100; fee 0.25 * 19 600 * 0.0005 = 2.45
    stop = r.fills[-1]
    assert (stop["kind"], stop["order_type"], stop["price"]) == (
        FillKind.STOP,
        OrderType.STOP_MARKET,
        19600.0,
    )
    assert stop["fee"] == pytest.approx(2.45, abs=1e-12)
    assert r.wallet[2] == pytest.approx(10000 - 2.5 - 100 - 2.45, abs=1e-9)
    assert r.trades["exit_kind"].tolist() == [FillKind.STOP]


def test_target_alone_and_stop_through_a_gap(run_btc):
    cfg = SimConfig(
        execution={
            "taker_fee": 0.0,
            "stop_loss": {"pct": 2},
            "take_profit": {"pct": 2},
        },
        risk={"fraction": 0.5},
    )
    r = run_btc([FLAT, FLAT, (20000, 20500, 19700, 20300)], [1, 1, NAN], config=cfg)
    assert (r.fills[-1]["kind"], r.fills[-1]["price"]) == (FillKind.TARGET, 20400.0)
    assert r.wallet[2] == pytest.approx(10100.0, abs=1e-9)
    # opens at 19 500, below the stop 19 600: the stop fills at the open
    r = run_btc([FLAT, FLAT, (19500, 19550, 19400, 19500)], [1, 1, NAN], config=cfg)
    assert (r.fills[-1]["kind"], r.fills[-1]["price"]) == (FillKind.STOP, 19500.0)


def test_short_stop_and_target(run_btc):
    cfg = SimConfig(
        execution={
            "taker_fee": 0.0,
            "stop_loss": {"pct": 1},
            "take_profit": {"pct": 3},
        },
        risk={"fraction": 0.5},
    )
    # short 0.25 at 20 000: stop 20 200, target 19 400
    r = run_btc([FLAT, FLAT, (20000, 20100, 19300, 19500)], [-1, -1, NAN], config=cfg)
    assert (r.fills[-1]["kind"], r.fills[-1]["price"]) == (FillKind.TARGET, 19400.0)
    assert r.wallet[2] == pytest.approx(10000 + 0.25 * 600, abs=1e-9)
    r = run_btc([FLAT, FLAT, (20000, 20300, 19300, 19500)], [-1, -1, NAN], config=cfg)
    assert (r.fills[-1]["kind"], r.fills[-1]["price"]) == (FillKind.STOP, 20200.0)


def test_atr_multiple_stop_uses_the_decision_bar_atr(run_btc):
    cfg = SimConfig(
        execution={
            "taker_fee": 0.0,
            "stop_loss": {"atr": 2},
            "take_profit": {"atr": 3},
        },
        risk={"fraction": 0.5},
    )
    atr = np.array([[150.0], [1000.0], [1000.0]])
    # ATR at the decision bar t0 is 150: stop 20 000 - 300 = 19 700, target 20 450
    r = run_btc(
        [FLAT, (20000, 20100, 19900, 20000), (20000, 20100, 19650, 19800)],
        [1, 1, NAN],
        config=cfg,
        atr=atr,
    )
    assert (r.fills[-1]["kind"], r.fills[-1]["price"]) == (FillKind.STOP, 19700.0)
    assert r.fills[-1]["bar"] == 2  # t1's low 19 900 is above the stop
    r = run_btc([FLAT, (20000, 20460, 19900, 20000), FLAT], [1, NAN, NAN], config=cfg, atr=atr)
    assert (r.fills[-1]["kind"], r.fills[-1]["price"], r.fills[-1]["bar"]) == (
        FillKind.TARGET,
        20450.0,
        1,
    )


def test_min_notional_rejection_and_step_floor(run_btc):
    # 150 USDT at 50 %: 75 USDT -> 0.00375 BTC -> floor 0.003 -> 60 USDT < MIN_NOTIONAL 100
    r = run_btc(
        [FLAT, FLAT],
        [1, NAN],
        config=SimConfig(execution={"initial_cash": 150}, risk={"fraction": 0.5}),
    )
    assert r.reason[0, 0] == Reason.FILTER and r.target_qty[0, 0] == 0.0
    assert len(r.fills) == 0
    # 1 000 USDT at 37 %: 370 / 20 000 = 0.0185 -> floored to 0.018 (never rounded up)
    r = run_btc(
        [FLAT, FLAT],
        [1, NAN],
        config=SimConfig(
            execution={"initial_cash": 1000, "taker_fee": 0},
            risk={"fraction": 0.37},
        ),
    )
    assert r.target_qty[0, 0] == 0.018 and r.fills["qty"].tolist() == [0.018]


def test_decision_at_close_fills_at_next_open_never_at_close(run_btc):
    rows = [(100.0 * k, 100.0 * k + 50, 100.0 * k - 50, 100.0 * k + 30) for k in range(200, 206)]
    r = run_btc(
        rows,
        [NAN, NAN, 1, NAN, NAN, NAN],
        config=SimConfig(execution={"taker_fee": 0}, risk={"fraction": 0.5}),
    )
    # decided at the close of bar 2 (20 230): 5 000 / 20 230 = 0.24716 -> 0.247
    assert r.position[2, 0] == 0.0 and r.position[3, 0] == 0.247
    assert r.fills["bar"].tolist() == [3]
    assert r.fills["price"].tolist() == [rows[3][0]]  # the open of bar 3, not the close of bar 2


def test_flip_long_to_short(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0.0005}, risk={"fraction": 0.5})
    up = (20400, 20400, 20400, 20400)
    r = run_btc([FLAT, FLAT, (20000, 20400, 20000, 20400), up], [1, 1, -1, NAN], config=cfg)
    # t1 buy 0.25 @ 20 000, fee 2.5 -> wallet 9 997.5
    # t2 close 20 400: equity 9 997.5 + 100 = 10 097.5; short target 0.5 * 10 097.5 / 20 400
    #   = 0.24749 -> 0.247
    # t3 open 20 400: sell 0.25 (close, pnl +100, fee 2.55) then sell 0.247 (fee 2.5194)
    assert r.target_qty[2, 0] == -0.247
    f = r.fills
    assert f["kind"].tolist() == [FillKind.ENTRY, FillKind.EXIT, FillKind.ENTRY]
    assert f["side"].tolist() == [1, -1, -1]
    assert f["qty"].tolist() == [0.25, 0.25, 0.247]
    assert r.position[3, 0] == -0.247
    assert r.wallet[3] == pytest.approx(9997.5 + 100 - 2.55 - 0.247 * 20400 * 0.0005, abs=1e-9)
    (t,) = r.trades
    assert (t["side"], t["pnl"]) == (1, pytest.approx(100 - 2.5 - 2.55, abs=1e-9))
    assert r.account.entry_price[0] == 20400.0


def test_close_at_end(run_btc):
    cfg = SimConfig(
        execution={"taker_fee": 0.0005, "close_at_end": True},
        risk={"fraction": 0.5},
    )
    r = run_btc([FLAT, FLAT, (20000, 20200, 20000, 20200)], [1, 1, 1], config=cfg)
    assert r.position[-1, 0] == 0.0
    assert r.fills["kind"].tolist() == [FillKind.ENTRY, FillKind.END]
    assert r.equity[-1] == pytest.approx(10000 - 2.5 + 50 - 0.25 * 20200 * 0.0005, abs=1e-9)


def test_missing_bar_holds_position_and_defers_the_order(run_btc):
    cfg = SimConfig(execution={"taker_fee": 0}, risk={"fraction": 0.5})
    gap = (NAN, NAN, NAN, NAN)
    r = run_btc([FLAT, gap, (20100, 20100, 20100, 20100)], [1, NAN, NAN], config=cfg)
    # no bar at t1: the order waits for t2's open
    assert r.fills["bar"].tolist() == [2] and r.fills["price"].tolist() == [20100.0]
    assert r.reason[1, 0] == Reason.NO_DECISION
    assert r.equity[1] == 10000.0


def test_bad_inputs_are_rejected(run_btc, btc):
    with pytest.raises(DataError, match=r"direction\[1, 0\]"):
        run_btc([FLAT, FLAT], [1, 2])
    with pytest.raises(DataError, match="inconsistent OHLC"):
        run_btc([FLAT, (20000, 19000, 19500, 19800)], [1, 1])
    with pytest.raises(ConfigError, match="kelly"):
        run_btc(
            [FLAT],
            [1],
            config=SimConfig(risk={"sizing": "kelly"}),
        )
    with pytest.raises(ValidationError, match=r"execution\.leverage\n.*must be in \[1, 125\]"):
        SimConfig(execution={"leverage": 200})
    with pytest.raises(ValidationError, match="stop_loss\n.*give exactly one of pct or atr"):
        SimConfig(execution={"stop_loss": {"pct": 1, "atr": 2}})
    with pytest.raises(ConfigError, match="daily_loss_pct"):
        run_btc(
            [FLAT],
            [1],
            config=SimConfig(
                risk={"breaker": {"daily_loss_pct": 5}},
            ),
        )


def test_cross_liquidation_counts_the_other_positions():
    from engine.sim import load_specs, simulate

    specs = load_specs(["BTCUSDT", "ETHUSDT"])
    cfg = SimConfig(
        execution={"leverage": 10, "taker_fee": 0.0, "margin_mode": "cross"}, risk={"fraction": 0.2}
    )
    btc = [FLAT, FLAT, (20000, 20000, 10000, 10500)]
    eth = [(1000.0,) * 4] * 3
    o, h, lo, c = (
        np.array([[b[i], e[i]] for b, e in zip(btc, eth, strict=True)]) for i in range(4)
    )
    d = np.array([[1.0, 1.0], [NAN, NAN], [NAN, NAN]])
    r = simulate(o, h, lo, c, funding_rate=None, direction=d, specs=specs, config=cfg)
    # each: 0.2 * 10 000 * 10 = 20 000 notional -> 1 BTC @ 20 000, 20 ETH @ 1 000
    assert r.position[1].tolist() == [1.0, 20.0]
    # BTC's LP backs onto wallet - ETH's maintenance + ETH's uPnL (0). 20 000 USDT of ETH is
    # in ETH's bracket 2 (10k-100k: 0.65 %, cum 15): 20 000 * 0.0065 - 15 = 115, so
    # LP = (10 000 - 115 - 20 000) / (0.004 - 1) = 10 155.622...
    lp = (10000 - 115 - 20000) / (0.004 - 1)
    assert 10155.62 < lp < 10155.63
    liq = r.fills[r.fills["kind"] == FillKind.LIQUIDATION]
    assert liq["symbol"].tolist() == [1, 0]  # ETH is closed first, at its open
    assert liq["price"].tolist() == pytest.approx([1000.0, lp], abs=1e-9)
    # margin balance at LP = 10 000 + (LP - 20 000) = 155.62 = BTC 40.62 + ETH 115 maintenance,
    # taken as the clearance fee (below 1.25 % of the 30 156 USDT closed)
    assert 10000 + lp - 20000 == pytest.approx(lp * 0.004 + 115, abs=1e-9)
    assert liq["fee"].tolist() == pytest.approx([0.0, 10000 + lp - 20000], abs=1e-9)
    assert r.liquidations == 2 and r.equity[2] == pytest.approx(0.0, abs=1e-9)


def test_frames_name_the_codes(run_btc):
    cfg = SimConfig(
        execution={"stop_loss": {"pct": 2}, "take_profit": {"pct": 2}},
        risk={"fraction": 0.5},
    )
    # funding at t2 (not t1: at t1's open the entry has not filled yet, nothing is held)
    r = run_btc(
        [FLAT, FLAT, (20000, 20500, 19500, 20000)],
        [1, 1, NAN],
        funding=[NAN, NAN, 0.0001],
        config=cfg,
    )
    frames = r.frames()
    assert frames["fills"]["kind"].to_list() == ["entry", "stop"]
    assert frames["fills"]["order_type"].to_list() == ["market", "stop_market"]
    assert frames["fills"]["symbol"].to_list() == ["BTCUSDT", "BTCUSDT"]
    assert frames["trades"]["exit_kind"].to_list() == ["stop"]
    assert frames["funding"].height == 1 and frames["events"].height == 0
