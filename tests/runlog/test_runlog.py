"""RunLog against a real SQLite file and real Parquet files: bulk, append, atomicity, failures."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.errors import RunError, UsageError
from engine.runlog import RunLog, features_to_long, new_run_id, schema
from engine.runlog.log import PARTIAL_DIR, RUNS_DIR, SQLITE_NAME


def _equity(n: int = 5) -> pl.DataFrame:
    return pl.DataFrame(
        {"time": [i * 300_000 for i in range(n)], "equity": [100.0 + i for i in range(n)]}
    )


def test_run_id_is_readable_and_unique() -> None:
    ids = {new_run_id("ema_cross", at_ms=1_700_000_000_000) for _ in range(200)}
    assert len(ids) == 200
    rid = next(iter(ids))
    assert rid.startswith("20231114T221320Z-ema_cross-")
    assert len(rid.rsplit("-", 1)[1]) == 6


def test_bulk_write_is_invisible_until_finish_then_one_file(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="backtest", strategy="ema_cross", params={"symbols": ["BTCUSDT"]})
    assert log.get_run(rid)["status"] == "running"
    log.write(rid, "equity", _equity(3))
    log.write(rid, "equity", _equity(5).slice(3))  # a second part: concatenated in call order
    # nothing published yet: the rows sit in the staging folder only
    assert not (tmp_path / RUNS_DIR / rid).exists()
    assert list((tmp_path / RUNS_DIR / PARTIAL_DIR / rid).glob("equity-*.parquet"))
    assert log.read(rid, "equity").height == 0
    log.finish_run(rid, status="ok", metrics={"total_return": 0.04, "nan": float("nan")})
    files = sorted(p.name for p in (tmp_path / RUNS_DIR / rid).iterdir())
    assert files == ["equity.parquet"]
    assert not (tmp_path / RUNS_DIR / PARTIAL_DIR / rid).exists()
    eq = pl.read_parquet(tmp_path / RUNS_DIR / rid / "equity.parquet")
    assert eq.columns == schema.column_names("equity")
    assert eq["equity"].to_list() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert eq["run_id"].unique().to_list() == [rid]
    assert eq.schema["time"] == pl.Int64 and eq.schema["cash"] == pl.Float64
    run = log.get_run(rid)
    assert run["status"] == "ok" and run["finished_at"] >= run["started_at"]
    assert run["metrics"] == {"total_return": 0.04, "nan": None}
    assert run["params"] == {"symbols": ["BTCUSDT"]}
    assert run["mode"] == "backtest" and run["pid"] == os.getpid()


def test_finished_run_rejects_writes_and_unknown_run(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="backtest", strategy="s", params={})
    log.finish_run(rid, status="ok", metrics={})
    with pytest.raises(RunError, match="already finished"):
        log.write(rid, "equity", _equity())
    with pytest.raises(RunError, match="already finished"):
        log.append(rid, "equity", {"time": 0, "equity": 1.0})
    with pytest.raises(RunError, match="unknown run_id 'nope'"):
        log.append("nope", "equity", {"time": 0, "equity": 1.0})
    with pytest.raises(UsageError, match="status must be one of"):
        log.finish_run(rid, status="done")
    with pytest.raises(UsageError, match="run mode must be one of"):
        log.start_run(mode="paperz", strategy="s", params={})


def test_schema_is_enforced_on_write_and_append(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="backtest", strategy="s", params={})
    with pytest.raises(RunError, match=r"equity: unknown column\(s\) equty") as err:
        log.write(rid, "equity", pl.DataFrame({"time": [0], "equty": [1.0]}))
    assert "equity columns: run_id, time, equity" in str(err.value)
    with pytest.raises(RunError, match=r"missing required column\(s\) equity"):
        log.write(rid, "equity", pl.DataFrame({"time": [0]}))
    with pytest.raises(RunError, match="does not fit its type"):
        log.write(rid, "equity", pl.DataFrame({"time": ["yesterday"], "equity": [1.0]}))
    with pytest.raises(RunError, match="action: values must be one of long, short, flat"):
        log.write(
            rid,
            "ensemble_decisions",
            pl.DataFrame(
                {"symbol": ["X"], "open_time": [0], "action": ["buy"], "target_position": [1.0]}
            ),
        )
    with pytest.raises(RunError, match="severity: values must be one of"):
        log.append(
            rid, "system_events", {"time": 0, "severity": "loud", "component": "x", "message": "m"}
        )
    with pytest.raises(RunError, match=r"required, but missing or null"):
        log.append(rid, "equity", {"time": 0})
    with pytest.raises(RunError, match="rows carry run_id 'other'"):
        log.write(rid, "equity", _equity().with_columns(run_id=pl.lit("other")))
    with pytest.raises(RunError, match="unknown table 'runs'"):
        log.write(rid, "runs", _equity())
    # nothing half-written: no part files from the rejected writes, no SQLite rows
    assert not (tmp_path / RUNS_DIR / PARTIAL_DIR / rid).exists()
    assert log.read(rid, "equity").height == 0
    # integer columns given as floats that are whole, and ints for floats, are cast
    log.write(rid, "equity", pl.DataFrame({"time": [0], "equity": [5]}))
    log.finish_run(rid, status="ok")
    assert log.read(rid, "equity")["equity"].to_list() == [5.0]


def test_append_is_durable_across_connections(tmp_path: Path) -> None:
    writer = RunLog(tmp_path)
    rid = writer.start_run(mode="live", strategy="ema_cross", params={"symbols": ["ETHUSDT"]})
    writer.append(
        rid,
        "ensemble_decisions",
        {
            "symbol": "ETHUSDT",
            "open_time": 0,
            "action": "long",
            "target_position": 1.5,
            "confidence": 0.6,
        },
    )
    writer.append(
        rid,
        "orders",
        [
            {
                "client_order_id": "c1",
                "symbol": "ETHUSDT",
                "side": "buy",
                "type": "market",
                "quantity": 1.5,
                "status": "new",
                "created_at": 10,
                "reduce_only": False,
            }
        ],
    )
    writer.event(
        rid,
        severity="info",
        component="stream",
        message="connected",
        data={"url": "ws://x"},
        time_ms=5,
    )
    # a separate plain sqlite3 connection sees committed rows immediately: durable before return
    conn = sqlite3.connect(tmp_path / SQLITE_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT action, target_position FROM ensemble_decisions").fetchall() == [
        ("long", 1.5)
    ]
    assert conn.execute("SELECT reduce_only FROM orders").fetchall() == [(0,)]
    assert conn.execute("SELECT data FROM system_events").fetchall() == [('{"url":"ws://x"}',)]
    # SQLite tables have exactly the schema's columns, in order
    for table in schema.TABLES:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        assert cols == schema.column_names(table)
    conn.close()
    reader = RunLog(tmp_path)
    df = reader.read(rid, "ensemble_decisions")
    assert df.columns == schema.column_names("ensemble_decisions")
    assert df.row(0, named=True)["confidence"] == 0.6
    writer.finish_run(rid, status="stopped", metrics={"trades": 0})
    assert reader.get_run(rid)["status"] == "stopped"


def test_context_manager_marks_failed_and_records_the_error(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    with (
        pytest.raises(ZeroDivisionError),
        log.run(mode="backtest", strategy="boom", params={}) as rid,
    ):
        log.write(rid, "equity", _equity())
        1 / 0  # noqa: B018
    run = log.get_run(rid)
    assert run["status"] == "failed"
    events = log.read(rid, "system_events")
    assert events["severity"].to_list() == ["error"]
    assert "ZeroDivisionError" in events["message"][0]
    # the complete parts it had written are published (status says they belong to a failed run)
    assert (tmp_path / RUNS_DIR / rid / "equity.parquet").exists()
    with log.run(mode="backtest", strategy="fine", params={}) as rid2:
        pass
    assert log.get_run(rid2)["status"] == "ok"


def test_crashed_process_run_is_marked_failed(tmp_path: Path) -> None:
    code = (
        "import os, polars as pl, sys\n"
        "from engine.runlog import RunLog\n"
        f"log = RunLog({str(tmp_path)!r})\n"
        "rid = log.start_run(mode='backtest', strategy='crash', params={})\n"
        "log.write(rid, 'equity', pl.DataFrame({'time': [0], 'equity': [1.0]}))\n"
        "print(rid, flush=True)\n"
        "os._exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    rid = out.stdout.strip()
    log = RunLog(tmp_path)
    assert log.get_run(rid)["status"] == "running"
    assert log.reap_abandoned() == [rid]
    run = log.get_run(rid)
    assert run["status"] == "failed"
    assert "run abandoned" in log.read(rid, "system_events")["message"][0]
    assert log.read(rid, "equity").height == 1
    assert log.reap_abandoned() == []


def test_interrupted_part_write_is_never_published(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="backtest", strategy="s", params={})
    log.write(
        rid,
        "trades",
        pl.DataFrame(
            {
                "symbol": ["X"],
                "side": ["long"],
                "entry_time": [0],
                "entry_price": [1.0],
                "quantity": [1.0],
                "pnl": [0.5],
            }
        ),
    )
    stage = tmp_path / RUNS_DIR / PARTIAL_DIR / rid
    (stage / ".trades-99999999999999999999-abc.parquet.tmp").write_bytes(b"PAR1 half a file")
    log.finish_run(rid, status="ok")
    assert sorted(p.name for p in (tmp_path / RUNS_DIR / rid).iterdir()) == ["trades.parquet"]
    assert log.read(rid, "trades")["pnl"].to_list() == [0.5]


def test_features_to_long_round_trips(tmp_path: Path) -> None:
    wide = pl.DataFrame(
        {"open_time": [0, 300_000], "rsi_14": [50.0, float("nan")], "ema_9": [1.0, 2.0]}
    )
    long = features_to_long(wide, symbol="BTCUSDT")
    assert long.columns == ["symbol", "open_time", "feature", "value"]
    assert long.height == 4
    log = RunLog(tmp_path)
    rid = log.start_run(mode="backtest", strategy="s", params={})
    log.write(rid, "snapshots", long)
    log.finish_run(rid, status="ok")
    back = (
        log.read(rid, "snapshots")
        .pivot(on="feature", index="open_time", values="value")
        .select("open_time", "rsi_14", "ema_9")
        .sort("open_time")
    )
    assert back.equals(wide)
    with pytest.raises(UsageError, match="no 'symbol' column"):
        features_to_long(wide)


def test_json_and_struct_columns(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="backtest", strategy="s", params={"path": tmp_path, "grid": (1, 2)})
    events = pl.DataFrame(
        {
            "time": [1],
            "severity": ["warning"],
            "component": ["risk"],
            "message": ["breaker"],
            "data": [{"reason": "drawdown", "value": 0.2}],
        }
    )
    log.write(rid, "system_events", events)
    log.finish_run(rid, status="ok")
    assert log.get_run(rid)["params"] == {"path": str(tmp_path), "grid": [1, 2]}
    assert log.read(rid, "system_events")["data"].to_list() == ['{"reason":"drawdown","value":0.2}']


def test_concurrent_processes_share_one_log(tmp_path: Path) -> None:
    """A sweep's workers: several processes start, write, append and finish runs at once."""
    code = (
        "import sys, polars as pl\n"
        "from engine.runlog import RunLog\n"
        "log = RunLog(sys.argv[1])\n"
        "for k in range(5):\n"
        "    rid = log.start_run(mode='sweep', strategy='w' + sys.argv[2], params={'k': k})\n"
        "    log.write(rid, 'equity', pl.DataFrame({'time': [0, 1], 'equity': [1.0, float(k)]}))\n"
        "    for i in range(10):\n"
        "        log.event(rid, severity='info', component='w', message=str(i), time_ms=i)\n"
        "    log.finish_run(rid, status='ok', metrics={'k': k})\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(w)], stderr=subprocess.PIPE, text=True
        )
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    log = RunLog(tmp_path)
    runs = log.recent_runs(100)
    assert len(runs) == 20 and {r["status"] for r in runs} == {"ok"}
    for r in runs:
        assert log.read(r["run_id"], "equity")["equity"].to_list() == [
            1.0,
            float(r["metrics"]["k"]),
        ]
        assert log.read(r["run_id"], "system_events").height == 10


def test_none_and_nan_in_float_columns(tmp_path: Path) -> None:
    """Both stores take None and NaN in a float column; how each keeps them is pinned here.

    None is NULL everywhere. NaN is passed through as given: Parquet keeps it as NaN, while
    SQLite itself stores a NaN REAL as NULL. (Turning a NaN that means "no value" into None is
    the row builders' job, not the run log's.)
    """
    nan = float("nan")
    row = {"symbol": "X", "action": "flat", "target_position": 0.0}
    log = RunLog(tmp_path)
    live = log.start_run(mode="live", strategy="s", params={})
    log.append(
        live,
        "ensemble_decisions",
        [
            {**row, "open_time": 0, "confidence": None, "probability": nan},
            {**row, "open_time": 1, "confidence": 0.5, "probability": 0.7},
        ],
    )
    log.append(
        live,
        "ensemble_decisions",
        pl.DataFrame([{**row, "open_time": 2, "confidence": None, "probability": nan}]),
    )
    conn = sqlite3.connect(tmp_path / SQLITE_NAME)
    stored = conn.execute(
        "SELECT typeof(confidence), typeof(probability) FROM ensemble_decisions ORDER BY rowid"
    ).fetchall()
    conn.close()
    assert stored == [("null", "null"), ("real", "real"), ("null", "null")]
    bt = log.start_run(mode="backtest", strategy="s", params={})
    frame = pl.DataFrame(
        {
            "symbol": ["X", "X"],
            "open_time": [0, 1],
            "action": ["flat", "flat"],
            "target_position": [0.0, 0.0],
            "confidence": [None, None],  # an all-null column (dtype Null) is cast to Float64
            "probability": [None, nan],
        }
    )
    log.write(bt, "ensemble_decisions", frame)
    log.finish_run(bt, status="ok")
    log.finish_run(live, status="stopped")
    parquet = pl.read_parquet(tmp_path / RUNS_DIR / bt / "ensemble_decisions.parquet")
    assert parquet.schema["confidence"] == pl.Float64
    assert parquet["confidence"].null_count() == 2
    assert parquet["probability"].is_null().to_list() == [True, False]
    assert parquet["probability"].is_nan().to_list() == [None, True]
    back = log.read(live, "ensemble_decisions")
    assert back["probability"].to_list() == [None, 0.7, None]
    assert log.read(bt, "ensemble_decisions")["probability"].is_nan().to_list() == [None, True]


def test_a_transaction_commits_its_rows_and_state_together_or_not_at_all(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="live", strategy="s", params={})
    row = {"symbol": "BTCUSDT", "open_time": 0, "action": "flat", "target_position": 0.0}
    with pytest.raises(RuntimeError), log.transaction():
        log.append(rid, "ensemble_decisions", row)
        log.save_state(rid, "checkpoint", '{"bar": 0}')
        raise RuntimeError("died inside")
    other = RunLog(tmp_path)  # another connection sees what is on disk
    assert other.read(rid, "ensemble_decisions").height == 0
    assert other.load_state(rid, "checkpoint") is None
    with log.transaction():
        log.append(rid, "ensemble_decisions", row)
        with log.transaction():  # nested: the outer one commits
            log.save_state(rid, "checkpoint", '{"bar": 0}')
        assert RunLog(tmp_path).load_state(rid, "checkpoint") is None  # not yet committed
    log.save_state(rid, "checkpoint", '{"bar": 1}')  # replaced, outside a transaction
    assert other.read(rid, "ensemble_decisions").height == 1
    assert other.load_state(rid, "checkpoint") == '{"bar": 1}'
    assert other.load_state(rid, "other") is None and other.load_state("nope", "checkpoint") is None
    log.finish_run(rid, status="ok")
    with pytest.raises(RunError, match="already finished"):
        log.save_state(rid, "checkpoint", "{}")


def test_deferred_wal_checkpoints_happen_only_when_asked(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    log.defer_wal_checkpoints()
    rid = log.start_run(mode="live", strategy="s", params={})
    db = log.sqlite_path
    empty = db.stat().st_size
    for i in range(1500):  # ~1,500 commits: past SQLite's automatic checkpoint (1,000 pages)
        log.append(rid, "ensemble_decisions", {"symbol": "BTCUSDT", "open_time": i * 300_000,
                                               "action": "flat", "target_position": 0.0,
                                               "rejection_reason": "x" * 3000})
    wal = db.with_name(db.name + "-wal").stat().st_size
    assert db.stat().st_size == empty and wal > 4_000_000  # every page still in the WAL
    log.wal_checkpoint()
    assert db.stat().st_size > 4_000_000  # copied into the database file
    assert RunLog(tmp_path).read(rid, "ensemble_decisions").height == 1500
    log.close()


def test_an_unsynced_transaction_commits_and_leaves_the_connection_synced(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    rid = log.start_run(mode="live", strategy="s", params={})
    db = log.store.conn()
    row = {"symbol": "BTCUSDT", "open_time": 0, "action": "flat", "target_position": 0.0}
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with log.transaction(synced=False):
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: no sync
        log.append(rid, "ensemble_decisions", row)
        log.save_state(rid, "checkpoint", '{"bar": 0}')
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    # committed: another connection (another process's view) sees both
    other = sqlite3.connect(log.sqlite_path)
    assert other.execute("SELECT count(*) FROM ensemble_decisions").fetchone()[0] == 1
    assert other.execute("SELECT doc FROM run_state").fetchone()[0] == '{"bar": 0}'
    with pytest.raises(RuntimeError), log.transaction(synced=False):
        log.append(rid, "ensemble_decisions", {**row, "open_time": 300_000})
        raise RuntimeError("dies inside")
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert other.execute("SELECT count(*) FROM ensemble_decisions").fetchone()[0] == 1
    other.close()
    log.close()
