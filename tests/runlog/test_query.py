"""engine query: real DuckDB over a real Parquet run and a real SQLite (live) run, one schema."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import UsageError
from engine.runlog import RunLog, schema
from engine.runlog.query import connect, run_query, view_names

BAR = 300_000


TARGET = {"flat": 0.0, "long": 0.01, "short": -0.01}
TIMES = [i * BAR for i in range(6)]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A backtest written in bulk and a live run appended bar by bar over the same bars."""
    root = tmp_path_factory.mktemp("results")
    log = RunLog(root)
    bt = _write_backtest(log)
    live = _append_live(log)
    log.close()
    return root, bt, live


def _write_backtest(log: RunLog) -> str:
    bt = log.start_run(
        mode="backtest", strategy="ema_cross", params={"symbols": ["BTCUSDT"], "interval": "5m"}
    )
    n = len(TIMES)
    times = TIMES
    actions = ["flat", "long", "long", "short", "flat", "long"]
    target = TARGET
    log.write(
        bt,
        "ensemble_decisions",
        pl.DataFrame(
            {
                "symbol": ["BTCUSDT"] * n,
                "open_time": times,
                "action": actions,
                "target_position": [target[a] for a in actions],
                "confidence": [1.0] * n,
            }
        ),
    )
    log.write(
        bt,
        "model_predictions",
        pl.DataFrame(
            {
                "symbol": ["BTCUSDT"] * n,
                "open_time": times,
                "model": ["lightgbm"] * n,
                "model_version": ["v1"] * n,
                "probability": [0.5, 0.6, 0.7, 0.3, 0.5, 0.8],
            }
        ),
    )
    log.write(bt, "equity", pl.DataFrame({"time": times, "equity": [1000.0 + i for i in range(n)]}))
    log.write(
        bt,
        "trades",
        pl.DataFrame(
            {
                "symbol": ["BTCUSDT"],
                "side": ["long"],
                "entry_time": [2 * BAR],
                "exit_time": [4 * BAR],
                "entry_price": [100.0],
                "exit_price": [101.0],
                "quantity": [0.01],
                "pnl": [0.009],
                "fees": [0.001],
                "funding": [0.0],
                "exit_reason": ["signal"],
            }
        ),
    )
    log.write(
        bt,
        "orders",
        pl.DataFrame(
            {
                "client_order_id": ["bt-1"],
                "symbol": ["BTCUSDT"],
                "side": ["buy"],
                "type": ["market"],
                "quantity": [0.01],
                "price": [100.0],
                "status": ["filled"],
                "created_at": [2 * BAR],
            }
        ),
    )
    log.finish_run(bt, status="ok", metrics={"total_return": 0.005, "trades": 1})
    return bt


def _append_live(log: RunLog) -> str:
    times, target = TIMES, TARGET
    live = log.start_run(mode="live", strategy="ema_cross", params={"symbols": ["BTCUSDT"]})
    live_actions = ["flat", "long", "short"]  # differs from the backtest at bar 2
    for i, a in enumerate(live_actions):
        log.append(
            live,
            "ensemble_decisions",
            {
                "symbol": "BTCUSDT",
                "open_time": times[i],
                "action": a,
                "target_position": target[a],
                "confidence": 1.0,
            },
        )
        log.append(live, "equity", {"time": times[i], "equity": 1000.0})
    order = {
        "client_order_id": "lv-1",
        "symbol": "BTCUSDT",
        "side": "buy",
        "type": "market",
        "quantity": 0.01,
        "created_at": BAR,
    }
    log.append(live, "orders", {**order, "status": "new"})
    log.append(
        live, "orders", {**order, "status": "filled", "updated_at": BAR + 50, "avg_price": 100.5}
    )
    log.event(live, severity="warning", component="stream", message="reconnected", time_ms=BAR)
    return live


def test_views_union_bulk_and_live_with_one_schema(two_runs: tuple[Path, str, str]) -> None:
    root, bt, live = two_runs
    con = connect(root)
    for view in view_names():
        con.execute(f'SELECT * FROM "{view}" LIMIT 0')
    for table, view in [
        ("ensemble_decisions", "decisions"),
        ("model_predictions", "predictions"),
        ("system_events", "events"),
        ("trades", "trades"),
        ("equity", "equity"),
    ]:
        cols = [r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()]
        assert cols == schema.column_names(table)
    types = dict((r[0], r[1]) for r in con.execute("DESCRIBE decisions").fetchall())
    assert types["open_time"] == "BIGINT" and types["target_position"] == "DOUBLE"
    con.close()
    runs = run_query(
        "SELECT run_id, mode, status FROM runs ORDER BY mode", results_dir=root
    ).to_pylist()
    assert runs == [
        {"run_id": bt, "mode": "backtest", "status": "ok"},
        {"run_id": live, "mode": "live", "status": "running"},
    ]
    # the question the log exists for: where did live differ from the backtest, bar for bar?
    diff = run_query(
        f"""SELECT b.open_time, b.action AS backtest, l.action AS live
            FROM decisions b JOIN decisions l USING (symbol, open_time)
            WHERE b.run_id = '{bt}' AND l.run_id = '{live}' AND b.action <> l.action""",
        results_dir=root,
    ).to_pylist()
    assert diff == [{"open_time": 2 * BAR, "backtest": "long", "live": "short"}]
    counts = run_query(
        "SELECT run_id, count(*) AS n FROM equity GROUP BY ALL ORDER BY n", results_dir=root
    )
    assert counts.to_pylist() == [{"run_id": live, "n": 3}, {"run_id": bt, "n": 6}]


def test_orders_view_shows_latest_state(two_runs: tuple[Path, str, str]) -> None:
    root, bt, live = two_runs
    rows = run_query(
        "SELECT client_order_id, status, avg_price FROM orders ORDER BY client_order_id",
        results_dir=root,
    ).to_pylist()
    assert rows == [
        {"client_order_id": "bt-1", "status": "filled", "avg_price": None},
        {"client_order_id": "lv-1", "status": "filled", "avg_price": 100.5},
    ]
    n = run_query("SELECT count(*) AS n FROM order_events", results_dir=root).to_pylist()
    assert n == [{"n": 3}]


def test_json_metrics_are_queryable(two_runs: tuple[Path, str, str]) -> None:
    root, bt, _ = two_runs
    rows = run_query(
        "SELECT CAST(metrics->>'trades' AS INT) AS t, params->'symbols'->>0 AS sym FROM runs WHERE mode='backtest'",
        results_dir=root,
    ).to_pylist()
    assert rows == [{"t": 1, "sym": "BTCUSDT"}]


def test_cli_formats(two_runs: tuple[Path, str, str]) -> None:
    root, bt, _ = two_runs
    runner = CliRunner()
    sql = (
        "SELECT open_time, action, target_position, confidence FROM decisions "
        f"WHERE run_id = '{bt}' ORDER BY open_time"
    )
    res = runner.invoke(app, ["query", sql, "--format", "json", "--results", str(root)])
    assert res.exit_code == 0, res.output
    rows = orjson.loads(res.stdout)
    assert isinstance(rows, list) and len(rows) == 6
    assert rows[1] == {
        "open_time": BAR,
        "action": "long",
        "target_position": 0.01,
        "confidence": 1.0,
    }
    assert isinstance(rows[1]["open_time"], int)
    res = runner.invoke(app, ["query", sql, "--format", "csv", "--results", str(root)])
    assert res.exit_code == 0, res.output
    parsed = list(csv.reader(io.StringIO(res.stdout)))
    assert parsed[0] == ["open_time", "action", "target_position", "confidence"]
    assert parsed[2] == [str(BAR), "long", "0.01", "1.0"] and len(parsed) == 7
    res = runner.invoke(app, ["query", sql, "--results", str(root), "--max-rows", "4"])
    assert res.exit_code == 0, res.output
    assert "target_position" in res.stdout and "long" in res.stdout
    assert "2 more row(s) not shown (6 in all)" in res.stdout
    # sums of BIGINT are HUGEINT in DuckDB: they still print as JSON integers
    res = runner.invoke(
        app,
        [
            "query",
            "SELECT sum(open_time) AS s FROM decisions",
            "-f",
            "json",
            "--results",
            str(root),
        ],
    )
    assert orjson.loads(res.stdout) == [
        {"s": sum(i * BAR for i in range(6)) + sum(i * BAR for i in range(3))}
    ]


def test_bad_sql_exits_2_naming_duckdb_error_and_views(two_runs: tuple[Path, str, str]) -> None:
    root, _, _ = two_runs
    with pytest.raises(UsageError, match="query failed: .*Parser Error") as err:
        run_query("SELEC * FROM runs", results_dir=root)
    assert "views: runs, decisions, trades, orders, equity, predictions, events" in (
        err.value.hint or ""
    )
    # the real command: exit code 2 and the message on stderr
    out = subprocess.run(
        [sys.executable, "-m", "engine", "query", "SELECT * FROM trade", "--results", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Table with name trade does not exist" in out.stderr
    assert "views: runs, decisions" in out.stderr
    res = CliRunner().invoke(app, ["query", "SELECT 1", "--format", "xml", "--results", str(root)])
    assert res.exit_code == 2


def test_empty_results_dir_gives_empty_views(tmp_path: Path) -> None:
    for view in view_names():
        assert run_query(f"SELECT * FROM {view}", results_dir=tmp_path / "none").num_rows == 0
    res = CliRunner().invoke(
        app, ["query", "SELECT * FROM trades", "-f", "json", "--results", str(tmp_path)]
    )
    assert res.exit_code == 0 and orjson.loads(res.stdout) == []
    assert not (tmp_path / "none").exists()  # a query writes nothing


def test_failed_run_is_visible_with_its_status(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    with pytest.raises(RuntimeError), log.run(mode="backtest", strategy="bad", params={}):
        raise RuntimeError("model failed to train")
    rows = run_query(
        "SELECT r.status, e.severity, e.message FROM runs r JOIN events e USING (run_id)",
        results_dir=tmp_path,
    ).to_pylist()
    assert rows == [
        {
            "status": "failed",
            "severity": "error",
            "message": "run failed: RuntimeError: model failed to train",
        }
    ]
