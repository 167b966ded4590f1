"""Invariant 4: live mode against the exchange simulator decides and fills exactly as the
backtest over the same real bars (compared through `engine query`'s SQL views)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.backtest import run_backtest
from engine.exchange_sim.market import MarketData

from .conftest import BAR, admin, drive, faults, simulator, strategy
from .parity import compare_runs, q

N_BARS = 200


def live_span(run_id: str, results: Path) -> tuple[int, int]:
    rows = q(f"SELECT data FROM events WHERE run_id = '{run_id}' AND message LIKE 'warm-up%'", results)
    data = json.loads(rows[0]["data"])
    return int(data["warmup_start"]), int(data["first_live_bar"])


def backtest_for(run_id: str, results: Path, store: Path, **graph: Any) -> tuple[str, int]:
    """The backtest over exactly the live run's bars (warm-up included); returns (run_id, first live bar).
    ``graph``: the live run's strategy keywords (see conftest.strategy)."""
    first, first_live = live_span(run_id, results)
    last = q(f"SELECT max(open_time) AS t FROM decisions WHERE run_id = '{run_id}'", results)[0]["t"]
    res = run_backtest(strategy(first, int(last), **graph), store=store, results=results)
    assert res.run_id is not None
    return res.run_id, first_live


def assert_parity(live_id: str, results: Path, store: Path, **graph: Any) -> tuple[int, int]:
    """Every column of decisions, final order states, trades and equity (tests/live/parity.py);
    returns (decision rows, filled orders) of the live span."""
    bt_id, first_live = backtest_for(live_id, results, store, **graph)
    compare_runs(live_id, bt_id, first_live, results)
    # the backtest must have traded before its first live bar: never (warm-up only)
    early = q(f"SELECT count(*) AS n FROM orders WHERE run_id = '{bt_id}' AND open_time < {first_live}", results)
    assert early[0]["n"] == 0
    n_dec = q(f"SELECT count(*) AS n FROM decisions WHERE run_id = '{bt_id}' AND open_time >= {first_live}",
              results)[0]["n"]
    n_fills = q(f"SELECT count(*) AS n FROM orders WHERE run_id = '{bt_id}'", results)[0]["n"]
    return n_dec, n_fills


@pytest.mark.slow
def test_live_replay_matches_the_backtest(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    with simulator(market) as sim:
        res = drive(sim, strategy(), tmp_path, bars=N_BARS)
        exchange_orders = len(sim.call(lambda s: list(s.exchange.orders.values())))
        sim_fills = admin(sim, "/sim/state")["fills"]
    assert res.status == "ok" and res.bars == N_BARS
    n_dec, n_fills = assert_parity(res.run_id, tmp_path, usdm_store)
    assert n_dec == 2 * N_BARS
    assert n_fills >= 20, "the short EMA cross must trade often"
    assert exchange_orders == len(sim_fills)  # every order reached the exchange once
    # the exchange's own (unrounded) fill prices are the backtest's to the last bit
    bt_id = q("SELECT run_id FROM runs WHERE mode = 'backtest'", tmp_path)[0]["run_id"]
    bt = q(f"SELECT symbol, quantity, price FROM order_events WHERE run_id = '{bt_id}' "
           f"ORDER BY updated_at, symbol, leg DESC", tmp_path)
    ex = [(f["symbol"], f["qty"], f["price"]) for f in sim_fills][: len(bt)]
    assert len(ex) == len(bt)
    for (s, qty, price), b in zip(ex, bt, strict=True):
        assert s == b["symbol"] and qty == pytest.approx(b["quantity"], abs=1e-9)
        assert price == pytest.approx(b["price"], rel=1e-13)
    runs = q(f"SELECT mode, status FROM runs WHERE run_id = '{res.run_id}'", tmp_path)
    assert runs == [{"mode": "live", "status": "ok"}]
    eq = q(f"SELECT count(*) AS n FROM equity WHERE run_id = '{res.run_id}'", tmp_path)
    assert eq[0]["n"] == N_BARS


@pytest.mark.slow
def test_websocket_drops_skip_and_double_no_bar(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    import time

    with simulator(market, faults=faults("ws_drop=1s")) as sim:
        res = drive(sim, strategy(), tmp_path, bars=60, between=lambda k: time.sleep(0.05))
        dropped = [f for f in sim.call(lambda s: s.faults.snapshot()["events"]) if "ws" in f.get("kind", "")]
    assert dropped, "the fault must have cut the stream"
    times = q(f"SELECT open_time, count(*) AS n FROM decisions WHERE run_id = '{res.run_id}' "
              f"GROUP BY open_time ORDER BY open_time", tmp_path)
    assert all(r["n"] == 2 for r in times)
    ts = [r["open_time"] for r in times]
    assert ts == list(range(ts[0], ts[0] + BAR * len(ts), BAR)) and len(ts) == 60
    ev = q(f"SELECT count(*) AS n FROM events WHERE run_id = '{res.run_id}' AND component = 'stream'", tmp_path)
    assert ev[0]["n"] > 0
    assert_parity(res.run_id, tmp_path, usdm_store)


def test_5xx_after_accept_never_doubles_an_order(market: MarketData, usdm_store: Path, tmp_path: Path) -> None:
    """Order POSTs answer 503 (half of them AFTER the order was accepted): live mode looks the
    order up by its client id before resending, so each decision's order exists once."""
    with simulator(market, faults=faults("http_5xx=0.3"), seed=3) as sim:
        res = drive(sim, strategy(), tmp_path, bars=80)
        orders = sim.call(lambda s: [o.client_id for o in s.exchange.orders.values()])
        events = sim.call(lambda s: s.faults.snapshot(last=10_000)["events"])
    accepted = [e for e in events if e["kind"] == "http_5xx" and e.get("accepted")]
    assert accepted, "the fault must have answered 503 after accepting an order"
    not_resent = q(f"SELECT count(*) AS n FROM events WHERE run_id = '{res.run_id}' "
                   f"AND message LIKE '%was accepted; not resent%'", tmp_path)
    assert not_resent[0]["n"] >= len(accepted)
    assert len(orders) == len(set(orders)), "an order was sent twice"
    live_ids = q(f"SELECT client_order_id FROM orders WHERE run_id = '{res.run_id}' AND status = 'filled'", tmp_path)
    assert sorted(r["client_order_id"] for r in live_ids) == sorted(orders)
    retries = q(f"SELECT count(*) AS n FROM events WHERE run_id = '{res.run_id}' AND component = 'broker'", tmp_path)
    assert retries[0]["n"] > 0
    assert_parity(res.run_id, tmp_path, usdm_store)
