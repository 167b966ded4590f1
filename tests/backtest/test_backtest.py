"""Backtests on real BTCUSDT/ETHUSDT data: prefix invariance, reruns, timing, the run log, the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.backtest import run_backtest
from engine.decisions import client_order_id
from engine.errors import DataError
from engine.runlog import RunLog
from engine.strategy import load_strategy
from engine.timeutil import interval_ms, parse_time

REPO = Path(__file__).resolve().parents[2]
EMA = REPO / "strategies/ema_cross.yaml"
RSI = REPO / "strategies/rsi_reversion.yaml"
SPAN = {"start": "2023-03-01", "end": "2023-04-15"}


@pytest.fixture(scope="session")
def ema_run(usdm_store: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    results = tmp_path_factory.mktemp("results")
    graph = load_strategy(EMA, overrides=["execution.slippage_bps=0"], **SPAN)
    return run_backtest(graph, store=usdm_store, results=results), results


@pytest.mark.parametrize("path", [EMA, RSI], ids=["ema_cross", "rsi_reversion"])
def test_prefix_invariance(path: Path, usdm_store: Path) -> None:
    """A run ending at random earlier times gives exactly the full run's decisions for its bars."""
    full = run_backtest(load_strategy(path, **SPAN), store=usdm_store, log=False)
    t = full.market.open_time
    rng = random.Random(4 if path == EMA else 5)
    for _ in range(2):
        k = rng.randrange(2_000, t.size - 1)
        part = run_backtest(
            load_strategy(path, start=SPAN["start"], end=str(int(t[k]))),
            store=usdm_store,
            log=False,
        )
        n = part.market.n_bars
        assert n == k + 1
        np.testing.assert_array_equal(part.decisions.state, full.decisions.state[:n])
        np.testing.assert_array_equal(part.decisions.direction, full.decisions.direction[:n])
        np.testing.assert_array_equal(part.sim.target_qty, full.sim.target_qty[:n])
        np.testing.assert_array_equal(part.sim.equity, full.sim.equity[:n])
        np.testing.assert_array_equal(part.sim.fills, full.sim.fills[full.sim.fills["bar"] < n])
    assert len(full.sim.trades) > 20  # the strategy did trade in the span


def test_rerun_is_identical(ema_run, usdm_store: Path) -> None:  # type: ignore[no-untyped-def]
    first, results = ema_run
    graph = load_strategy(EMA, overrides=["execution.slippage_bps=0"], **SPAN)
    second = run_backtest(graph, store=usdm_store, results=results)
    assert second.run_id != first.run_id
    assert second.metrics == first.metrics
    log = RunLog(results)
    for table in ("trades", "ensemble_decisions", "equity", "system_events"):
        a = log.read(first.run_id, table).drop("run_id")
        b = log.read(second.run_id, table).drop("run_id")
        assert a.height > 0 or table == "system_events"
        assert a.equals(b), table
    oa, ob = log.read(first.run_id, "orders"), log.read(second.run_id, "orders")
    assert oa.drop("run_id", "client_order_id").equals(ob.drop("run_id", "client_order_id"))
    log.close()


def test_decision_at_close_fills_at_next_open(ema_run) -> None:  # type: ignore[no-untyped-def]
    r, _ = ema_run
    m, fills = r.market, r.sim.fills
    state = r.decisions.state
    assert r.graph.config.execution.slippage_bps == 0
    for f in fills[:50]:
        j, b = int(f["symbol"]), int(f["bar"])
        assert f["price"] == m.open[b, j]  # fills at the open of bar b ...
        assert state[b - 1, j] != (
            state[b - 2, j] if b >= 2 else 0
        )  # ... after a change at close b-1
        # the quantity was sized on the close of the decision bar, not on the fill price
    entry = fills[fills["kind"] == 0][0]
    j, b = int(entry["symbol"]), int(entry["bar"])
    notional = 0.2 * r.sim.equity[b - 1] * 2  # fraction x equity x leverage (ema_cross.yaml)
    cap = 0.5 * r.sim.equity[b - 1]  # max_position_pct 50
    assert entry["qty"] == pytest.approx(
        np.floor(min(notional, cap) / m.close[b - 1, j] / 0.001) * 0.001
    )


def test_run_log_tables(ema_run) -> None:  # type: ignore[no-untyped-def]
    r, results = ema_run
    log = RunLog(results)
    run = log.get_run(r.run_id)
    assert run is not None and run["status"] == "ok" and run["mode"] == "backtest"
    p = run["params"]
    assert p["symbols"] == ["BTCUSDT", "ETHUSDT"] and p["interval"] == "5m"
    assert p["start"] == parse_time("2023-03-01") and p["end"] == parse_time("2023-04-15T23:55")
    assert p["config"]["signals_resolved"] == {"long": "ema_9 > ema_50", "short": "ema_9 < ema_50"}
    assert run["metrics"]["trades"] == len(r.sim.trades)

    dec = log.read(r.run_id, "ensemble_decisions")
    assert dec.height == 2 * r.market.n_bars
    assert set(dec["action"].unique()) == {"long", "short", "flat"}
    assert (dec["confidence"] == 1.0).all()
    # target_position is signed: positive when long
    longs = dec.filter(pl.col("action") == "long", pl.col("target_position") != 0)
    assert (longs["target_position"] > 0).all()

    orders = log.read(r.run_id, "orders")
    assert orders.height == len(r.sim.fills)
    assert orders["client_order_id"].n_unique() == orders.height
    step = interval_ms("5m")
    for row in orders.head(20).iter_rows(named=True):
        assert row["client_order_id"] == client_order_id(
            r.run_id, row["symbol"], row["open_time"], row["leg"]
        )
        assert len(row["client_order_id"]) <= 36
        if row["leg"] in ("entry", "exit"):
            assert row["created_at"] == row["open_time"] + step  # sent at the decision bar's close
    trades = log.read(r.run_id, "trades")
    assert trades.height == len(r.sim.trades)
    np.testing.assert_allclose(trades["pnl"].sum(), r.sim.trades["pnl"].sum())
    eq = log.read(r.run_id, "equity")
    assert eq.height == r.market.n_bars and eq["equity"][-1] == pytest.approx(
        r.metrics["final_equity"]
    )
    log.close()


def test_missing_data_is_a_data_error(usdm_store: Path, tmp_path: Path) -> None:
    graph = load_strategy(EMA, start="2022-06-01", end="2022-06-30")
    with pytest.raises(DataError) as info:
        run_backtest(graph, store=usdm_store, results=tmp_path / "r")
    msg = str(info.value)
    assert "BTCUSDT" in msg and "5m" in msg and "2022-06" in msg and "engine data" in msg
    assert not (tmp_path / "r").exists()


def test_cli_json_and_query(usdm_store: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "backtest",
        str(EMA),
        "--json",
        "--start",
        "2024-03-01",
        "--end",
        "2024-03-07",
        "--set",
        "fast=12",
        "--store",
        str(usdm_store),
        "--results",
        str(results),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert proc.stdout.count("\n") == 1 and set(doc) == {"run_id", "metrics"}
    for key in (
        "total_return",
        "cagr",
        "sharpe",
        "sortino",
        "max_drawdown",
        "win_rate",
        "profit_factor",
        "exposure",
        "trades",
        "fees",
        "funding",
        "liquidations",
    ):
        assert key in doc["metrics"]
    q = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "query",
            "--format",
            "json",
            "--results",
            str(results),
            f"select symbol, count(*) as n from decisions where run_id = '{doc['run_id']}' group by symbol order by symbol",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == [
        {"symbol": "BTCUSDT", "n": 2016},
        {"symbol": "ETHUSDT", "n": 2016},
    ]
    runs = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "query",
            "--format",
            "json",
            "--results",
            str(results),
            "select strategy, status, json_extract(params, '$.params.fast') as fast from runs",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(runs.stdout) == [{"strategy": "ema_cross", "status": "ok", "fast": "12"}]

    # missing data: exit 1, the span and the command in the message, nothing written
    bad = subprocess.run(
        [
            *cmd[:6],
            "--start",
            "2021-01-01",
            "--end",
            "2021-01-02",
            "--store",
            str(usdm_store),
            "--results",
            str(tmp_path / "r2"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert "BTCUSDT" in bad.stderr and "engine data download" in bad.stderr
    assert not (tmp_path / "r2").exists()


def test_table_output(usdm_store: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    res = CliRunner().invoke(
        app,
        [
            "backtest",
            str(RSI),
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-10",
            "--symbols",
            "ETHUSDT",
            "--store",
            str(usdm_store),
            "--results",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    for label in (
        "Total return",
        "CAGR",
        "Sharpe",
        "Sortino",
        "Max drawdown",
        "Win rate",
        "Profit factor",
        "Exposure",
        "Trades",
        "Fees",
        "Funding",
        "Liquidations",
    ):
        assert label in res.stdout
    assert "rsi_reversion  ETHUSDT 5m" in res.stdout


def test_events_liquidations_and_snapshots(usdm_store: Path, tmp_path: Path) -> None:
    """Breaker trips and liquidations land in system_events; snapshots are opt-in."""
    graph = load_strategy(
        EMA,
        symbols=["BTCUSDT"],
        start="2024-03-01",
        end="2024-03-10",
        overrides=[
            "risk.max_leverage=50",
            "risk.max_position_pct=5000",
            "risk.max_exposure_pct=5000",
            "risk.fraction=0.5",
            "execution.leverage=50",
            "execution.margin_mode=isolated",
            "risk.breaker.max_consecutive_losses=3",
            "risk.breaker.cooldown_bars=12",
            "log.snapshots=true",
        ],
    )
    r = run_backtest(graph, store=usdm_store, results=tmp_path)
    assert r.sim.liquidations > 0 and r.metrics["liquidations"] == r.sim.liquidations
    log = RunLog(tmp_path)
    ev = log.read(r.run_id, "system_events")
    liq = ev.filter(pl.col("component") == "sim")
    assert liq.height == r.sim.liquidations and liq["message"].str.contains("liquidated").all()
    trips = ev.filter(pl.col("component") == "risk", pl.col("severity") == "warning")
    assert trips.height > 0 and trips["message"].str.contains("loss_streak").all()
    trades = log.read(r.run_id, "trades")
    assert (trades["exit_reason"] == "liquidation").sum() == r.sim.liquidations
    snap = log.read(r.run_id, "snapshots")
    assert snap.height == 2 * r.market.n_bars and set(snap["feature"].unique()) == {
        "ema_9",
        "ema_50",
    }
    log.close()
