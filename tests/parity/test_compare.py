"""The comparison rules of engine.parity, case by case: decisions (action, size, values,
missing rows), fills (venue-rounded prices, the bar a fill's moment lies in, fees at each
run's rates, missing fills), final order states from a real run log, the rerun's strategy,
and the report's JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.parity import FillRules, compare_decisions, compare_fills, fills, in_bar, same
from engine.parity.compare import fill_fee, price_tolerance
from engine.parity.report import ParityReport, fill_digits
from engine.parity.source import LiveSpan, final_orders, rerun_graph
from engine.runlog import RunLog
from engine.strategy import load_strategy
from engine.strategy.execution import strategy_hash

from .conftest import BAR, REPO

T0 = 1_704_088_800_000  # 2024-01-01 06:00


def dec(symbol: str = "BTCUSDT", t: int = T0, action: str = "long", target: float = 0.5,
        conf: float | None = 1.0, prob: float | None = None) -> dict[str, Any]:
    return {"symbol": symbol, "open_time": t, "action": action, "target_position": target,
            "confidence": conf, "probability": prob}


def test_same_is_null_for_null_and_numbers_to_1e_9() -> None:
    assert same(None, None) and not same(None, 0.0) and not same(0.0, None)
    assert same(0.1 + 0.2, 0.3) and not same(1.0, 1.0 + 2e-9)
    assert same(float("nan"), float("nan")) and not same(float("nan"), 1.0)
    assert same("flat", "flat") and not same("flat", "long")


def test_decisions_action_then_size_then_values() -> None:
    live = [dec(t=T0), dec(t=T0 + BAR, target=0.7), dec(t=T0 + 2 * BAR, prob=0.6),
            dec(t=T0 + 3 * BAR, conf=1.0 + 1e-10), dec(t=T0 + 4 * BAR, action="short", target=0.7)]
    bt = [dec(t=T0), dec(t=T0 + BAR, target=0.5), dec(t=T0 + 2 * BAR, prob=None),
          dec(t=T0 + 3 * BAR), dec(t=T0 + 4 * BAR, action="flat", target=0.0)]
    out = compare_decisions(live, bt)
    assert (out.compared, out.decision, out.size, out.value) == (5, 1, 1, 1)
    got = [(m.kind, m.open_time - T0, m.field, m.live, m.backtest) for m in out.mismatches]
    assert got == [("size", BAR, "target_position", 0.7, 0.5),
                   ("value", 2 * BAR, "probability", 0.6, None),
                   ("decision", 4 * BAR, "action", "short", "flat")]


def test_stale_live_bars_are_counted_and_compared_by_value_only() -> None:
    """A bar that closed while live mode was down holds the position kept (the backtest
    traded it): not a decision or size mismatch, but its values still must agree."""
    stale = {"risk_check": "stale", "rejection_reason": "closed while live mode was down"}
    live = [dec(t=T0, action="flat", target=0.0) | stale,
            dec(t=T0 + BAR, action="flat", target=0.0, prob=0.61) | stale,
            dec(t=T0 + 2 * BAR, action="flat", target=0.0)]
    bt = [dec(t=T0), dec(t=T0 + BAR, prob=0.6), dec(t=T0 + 2 * BAR)]
    out = compare_decisions(live, bt)
    assert (out.compared, out.stale, out.decision, out.size, out.value) == (3, 2, 1, 0, 1)
    got = [(m.kind, m.open_time - T0, m.field) for m in out.mismatches]
    assert got == [("value", BAR, "probability"), ("decision", 2 * BAR, "action")]


def test_a_decision_on_one_side_only_is_a_decision_mismatch() -> None:
    live = [dec("BTCUSDT"), dec("ETHUSDT")]
    bt = [dec("BTCUSDT"), dec("BTCUSDT", t=T0 + BAR, action="flat")]
    out = compare_decisions(live, bt)
    assert (out.compared, out.decision) == (3, 2)
    assert [(m.symbol, m.field, m.live, m.backtest) for m in out.mismatches] == [
        ("ETHUSDT", "missing", "long", None), ("BTCUSDT", "missing", None, "flat")]


def order(status: str = "filled", *, leg: str = "entry", t: int = T0, price: float = 42_000.0,
          qty: float = 0.05, side: str = "buy", type_: str = "market", updated: int | None = None,
          symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {"client_order_id": f"e-{t}-{leg}-{symbol}", "symbol": symbol, "side": side,
            "type": type_, "quantity": qty, "price": None, "status": status,
            "created_at": t + BAR, "open_time": t, "leg": leg, "filled_quantity": qty,
            "avg_price": price, "updated_at": updated if updated is not None else t + BAR}


RULES = FillRules(step_ms=BAR, digits={"BTCUSDT": 5}, live_fees=(0.0005, 0.0002),
                  backtest_fees=(0.0005, 0.0002))


def test_fills_are_the_filled_final_states_at_their_average_price() -> None:
    rows = fills([order(), order("canceled", leg="stop"), order("new", leg="target")])
    assert rows == [{"symbol": "BTCUSDT", "open_time": T0, "leg": "entry", "type": "market",
                     "side": "buy", "time": T0 + BAR, "quantity": 0.05, "price": 42_000.0}]


def test_a_price_the_venue_rounded_is_no_difference_but_one_digit_more_is() -> None:
    exact = 42_000.123456789
    bt = fills([order(price=exact)])
    rounded = fills([order(price=round(exact, 5))])
    assert compare_fills(rounded, bt, RULES).fill == 0
    off = fills([order(price=round(exact, 5) + 2e-5)])
    out = compare_fills(off, bt, RULES)
    assert out.fill == 1 and [m.field for m in out.mismatches] == ["price"]
    assert price_tolerance(5) == pytest.approx(5e-6 + 1e-9)


def test_fill_time_inside_the_backtests_bar_quantity_side_and_missing_fills() -> None:
    bt = fills([order(leg="stop", side="sell", updated=T0, type_="stop_market")])
    inside = fills([order(leg="stop", side="sell", updated=T0 + BAR, type_="stop_market")])
    late = fills([order(leg="stop", side="sell", updated=T0 + BAR + 1, type_="stop_market")])
    assert compare_fills(inside, bt, RULES).fill == 0
    assert [m.field for m in compare_fills(late, bt, RULES).mismatches] == ["time"]
    assert in_bar(T0, T0, BAR) and not in_bar(T0 - 1, T0, BAR)
    other = fills([order(leg="stop", side="buy", qty=0.06, updated=T0, type_="stop_market")])
    assert [m.field for m in compare_fills(other, bt, RULES).mismatches] == ["side", "quantity", "fee"]
    out = compare_fills([], bt, RULES)
    assert out.fill == 1 and out.mismatches[0].field == "missing"
    assert out.mismatches[0].to_dict()["backtest"] == "sell 0.05 @ 42000" and out.mismatches[0].leg == "stop"


def test_fees_are_quantity_times_price_at_each_runs_own_rate() -> None:
    (f,) = fills([order()])
    assert fill_fee(f, taker_fee=0.0005, maker_fee=0.0002) == pytest.approx(0.05 * 42_000 * 0.0005)
    assert fill_fee({**f, "type": "limit"}, taker_fee=0.0005, maker_fee=0.0002) == \
        pytest.approx(0.05 * 42_000 * 0.0002)
    cheaper = FillRules(step_ms=BAR, digits={}, live_fees=(0.0004, 0.0002), backtest_fees=(0.0005, 0.0002))
    out = compare_fills(fills([order()]), fills([order()]), cheaper)
    (m,) = out.mismatches
    assert m.field == "fee" and m.live == pytest.approx(0.84) and m.backtest == pytest.approx(1.05)


def test_fill_digits_are_the_price_precision_plus_3() -> None:
    assert fill_digits(("BTCUSDT", "ETHUSDT", "FOOUSDT")) == {"BTCUSDT": 5, "ETHUSDT": 5, "FOOUSDT": 8}


def test_final_orders_take_each_orders_latest_state_from_a_real_run_log(tmp_path: Path) -> None:
    with RunLog(tmp_path) as log:
        rid = log.start_run(mode="live", strategy="t", params={})
        new = {k: v for k, v in order("new").items() if k not in ("filled_quantity", "avg_price")}
        log.append(rid, "orders", [new, order("filled"),  # same time: the final status wins
                                   order("new", leg="stop", updated=T0 + BAR),
                                   order("canceled", leg="stop", updated=T0 + 3 * BAR)])
        got = [(o["leg"], o["status"]) for o in final_orders(log, rid)]
    assert got == [("entry", "filled"), ("stop", "canceled")]


def test_the_rerun_is_the_live_runs_resolved_strategy_over_its_bars() -> None:
    path = REPO / "strategies" / "ema_cross.yaml"
    live = load_strategy(path, overrides=["fast=5"])
    span = LiveSpan("live-1", {"params": {"config": live.resolved()}}, T0 - 49 * BAR, T0, T0 + 99 * BAR)
    g = rerun_graph(span)
    assert (g.config.data.start, g.config.data.end) == (T0 - 49 * BAR, T0 + 99 * BAR)
    assert g.rules["long"].text == "ema_5 > ema_50" and g.overrides == ("fast=5",)
    same_span = load_strategy(path, overrides=["fast=5"], start=T0 - 49 * BAR, end=T0 + 99 * BAR)
    assert strategy_hash(g) == strategy_hash(same_span)


def test_the_json_lists_the_first_mismatches_of_each_kind_in_bar_order() -> None:
    out = compare_decisions([dec(t=T0 + i * BAR, action="short") for i in range(30)],
                            [dec(t=T0 + i * BAR) for i in range(30)])
    fil = compare_fills([], fills([order(t=T0 + 5 * BAR)]), RULES)
    r = ParityReport(run_id="a", against="b", rerun=False, symbols=("BTCUSDT",), interval="5m",
                     first_live_bar=T0, last_bar=T0 + 29 * BAR, bars_compared=30,
                     decisions_compared=30, decision_mismatches=30, size_mismatches=0,
                     value_mismatches=0, fills_compared=1, fill_differences=1, warmup_fills=0,
                     mismatches=tuple(sorted(out.mismatches + fil.mismatches,
                                             key=lambda m: m.sort_key())))
    doc = json.loads(json.dumps(r.to_dict()))
    assert list(doc)[:5] == ["bars_compared", "decision_mismatches", "size_mismatches",
                             "fill_differences", "first_mismatches"]
    firsts = doc["first_mismatches"]
    assert [m["kind"] for m in firsts].count("decision") == 10 and len(firsts) == 11
    assert [m["open_time"] for m in firsts] == sorted(m["open_time"] for m in firsts)
    assert firsts[0]["time_utc"] == "2024-01-01 06:00" and not doc["ok"]
