"""A results folder written by an older schema keeps working: real SQLite, Parquet and DuckDB.

The committed folder ``fixtures/results_v1`` was made by the engine before it stored a schema
version (see ``make_fixtures.py``); ``future_schema.py`` is a next version applied at test
time (a new column, a retyped column, a new table).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import future_schema  # noqa: E402
from make_fixtures import BACKTEST_ID, LIVE_ID, RESULTS_V1, schema_columns  # noqa: E402

from engine.runlog import RunLog, schema  # noqa: E402
from engine.runlog.migrate import MIGRATIONS_TABLE, NewerSchemaError  # noqa: E402
from engine.runlog.query import run_query  # noqa: E402

HERE = Path(__file__).parent
# the console script installed beside this interpreter (a venv's bin need not be on PATH)
_BESIDE = Path(sys.executable).with_name("engine")
ENGINE = str(_BESIDE) if _BESIDE.is_file() else shutil.which("engine") or "engine"
FUTURE = f"import sys; sys.path.insert(0, {str(HERE)!r}); import future_schema; "
FUTURE += "future_schema.apply(setattr)\n"


def _sqlite(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "runlog.sqlite")


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    return {r[1]: r[2] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def _user_version(root: Path) -> int:
    conn = _sqlite(root)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(params=[0, 1], ids=["unversioned", "stamped-v1"])
def old(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A copy of the version-1 folder: as the engine wrote it (user_version 0), or stamped 1."""
    root = tmp_path / "results"
    shutil.copytree(RESULTS_V1, root)
    if request.param:
        conn = _sqlite(root)
        conn.execute(f"PRAGMA user_version = {request.param}")
        conn.close()
    return root


@pytest.fixture
def future(monkeypatch: pytest.MonkeyPatch) -> int:
    """The next schema version, patched into engine.runlog.schema for one test."""
    return future_schema.apply(monkeypatch.setattr)


def test_schema_version_pins_the_columns() -> None:
    """Changing a table or column without bumping schema.VERSION fails here."""
    for v in range(1, schema.VERSION + 1):
        assert (HERE / "fixtures" / f"schema_v{v}.json").exists(), f"schema_v{v}.json missing"
    pinned = schema_columns(schema.VERSION)
    assert schema.describe() == pinned, (
        f"the run-log columns differ from schema version {schema.VERSION}: bump "
        "engine/runlog/schema.py VERSION, then run python tests/runlog/make_fixtures.py --snapshot"
    )


def test_fixture_is_what_the_unversioned_engine_wrote() -> None:
    # immutable: a read-only WAL reader would leave -wal/-shm files in the source tree
    conn = sqlite3.connect(f"file:{RESULTS_V1 / 'runlog.sqlite'}?immutable=1", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        for table, cols in schema_columns(1).items():
            assert list(_columns(conn, table)) == [n for n, _ in cols]
    finally:
        conn.close()
    assert sorted(p.name for p in (RESULTS_V1 / "runs").iterdir()) == [BACKTEST_ID]
    header = (RESULTS_V1 / "runlog.sqlite").read_bytes()[:20]
    assert header[18:20] == b"\x02\x02"  # the file format bytes of a WAL database
    assert sorted(p.name for p in RESULTS_V1.iterdir()) == ["runlog.sqlite", "runs"]


def test_a_new_or_current_file_does_not_import_sqlite_utils(tmp_path: Path) -> None:
    """sqlite-utils (slow to import) is loaded only to alter the tables of an older file."""
    code = (
        "import sys\n"
        "from engine.runlog import RunLog\n"
        "for _ in range(2):\n"
        "    log = RunLog(sys.argv[1]).open()\n"
        "    print(log.store.migration is not None, 'sqlite_utils' in sys.modules)\n"
        "    log.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False", "False"]


def test_current_engine_opens_the_old_folder(old: Path) -> None:
    stamped = _user_version(old)
    with RunLog(old) as log:
        log.open()
        migration = log.store.migration
        if stamped == schema.VERSION:
            assert migration is None
        else:
            assert migration is not None and migration.from_version == stamped
        assert (log.get_run(BACKTEST_ID) or {}).get("status") == "ok"
        assert log.read(LIVE_ID, "orders")["status"].to_list() == ["new", "filled"]
        assert log.read(BACKTEST_ID, "equity")["equity"].to_list() == [1000.0, 1000.0, 1000.9]
    assert _user_version(old) == schema.VERSION


def test_old_sqlite_file_migrates_to_the_next_schema(old: Path, future: int) -> None:
    before = _user_version(old)
    with RunLog(old) as log:
        log.open()
        m = log.store.migration
        assert m is not None and (m.from_version, m.to_version) == (before, future)
        assert m.created_tables == [future_schema.NEW_TABLE]
        # the columns added since version 1 (the fixture's), then the future one
        v1 = {t: [n for n, _ in cols] for t, cols in schema_columns(1).items()}
        added = [
            f"{t}.{c.name}" for t, cols in schema.TABLES.items() if t in v1 for c in cols
            if c.name not in v1[t]
        ]
        assert "orders.algo_id" in added and m.added_columns == added
        assert m.retyped_columns == ["model_predictions.label: INTEGER -> REAL"]
    conn = _sqlite(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == future
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert "algo_id" in _columns(conn, "orders")
    assert _columns(conn, "model_predictions")["label"] == "REAL"
    assert list(_columns(conn, future_schema.NEW_TABLE)) == schema.column_names("funding_payments")
    # old rows kept, in order, the new column NULL; the retyped column's values carried over
    assert conn.execute("SELECT status, algo_id FROM orders ORDER BY rowid").fetchall() == [
        ("new", None),
        ("filled", None),
    ]
    assert conn.execute("SELECT label, typeof(label) FROM model_predictions").fetchall() == [
        (0.0, "real")
    ]
    indexes = {r[1] for r in conn.execute("SELECT type, name FROM sqlite_master")}
    assert {f"ix_{t}_run" for t in schema.RUN_TABLES} <= indexes
    history = conn.execute(f'SELECT from_version, to_version, changes FROM "{MIGRATIONS_TABLE}"')
    (row,) = history.fetchall()
    assert row[:2] == (before, future)
    assert json.loads(row[2])["added_columns"] == added
    conn.close()


def test_new_rows_set_the_new_column_and_old_runs_read_it_null(old: Path, future: int) -> None:
    log = RunLog(old)
    rid = log.start_run(mode="live", strategy="ema_cross", params={"symbols": ["ETHUSDT"]})
    order = {
        "client_order_id": "c1",
        "algo_id": "twap-7",
        "symbol": "ETHUSDT",
        "side": "buy",
        "type": "limit",
        "quantity": 0.1,
        "price": 2300.0,
        "status": "new",
        "created_at": 1,
    }
    log.append(rid, "orders", order)
    log.append(rid, "funding_payments", {"symbol": "ETHUSDT", "time": 2, "amount": -0.01})
    log.append(rid, "model_predictions", {**_pred(), "label": 0.25})
    bt = log.start_run(mode="backtest", strategy="ema_cross", params={})
    log.write(bt, "orders", pl.DataFrame([{**order, "algo_id": "vwap-1"}]))
    log.finish_run(bt, status="ok")
    log.finish_run(rid, status="stopped")
    # RunLog.read (what engine report reads): every current column, whatever the file's age
    for run_id in (rid, bt, LIVE_ID, BACKTEST_ID):
        for table in schema.RUN_TABLES:
            assert log.read(run_id, table).columns == schema.column_names(table), (run_id, table)
    assert log.read(rid, "orders")["algo_id"].to_list() == ["twap-7"]
    assert log.read(bt, "orders")["algo_id"].to_list() == ["vwap-1"]
    assert log.read(LIVE_ID, "orders")["algo_id"].to_list() == [None, None]
    assert log.read(BACKTEST_ID, "orders")["algo_id"].to_list() == [None]  # old Parquet
    assert log.read(rid, "funding_payments")["amount"].to_list() == [-0.01]
    assert log.read(BACKTEST_ID, "funding_payments").height == 0
    labels = log.read(BACKTEST_ID, "model_predictions")["label"]
    assert labels.dtype == pl.Float64 and labels.to_list() == [1.0, 0.0, None]
    assert log.read(rid, "model_predictions")["label"].to_list() == [0.25]
    assert log.read(LIVE_ID, "ensemble_decisions")["action"].to_list() == ["short", "flat"]
    log.close()


def _pred() -> dict[str, object]:
    return {"symbol": "ETHUSDT", "open_time": 0, "model": "m", "probability": 0.5}


def test_views_over_the_old_folder_have_every_current_column(old: Path, future: int) -> None:
    for table in schema.TABLES:
        view = "order_events" if table == "orders" else table
        described = run_query(f'DESCRIBE "{view}"', results_dir=old).to_pylist()
        got = [(r["column_name"], r["column_type"]) for r in described]
        assert got == [(c.name, c.duckdb_type) for c in schema.columns(table)], view
    rows = run_query(
        "SELECT run_id, status, algo_id FROM order_events ORDER BY run_id, updated_at",
        results_dir=old,
    ).to_pylist()
    assert [(r["run_id"], r["status"], r["algo_id"]) for r in rows] == [
        (BACKTEST_ID, "filled", None),
        (LIVE_ID, "new", None),
        (LIVE_ID, "filled", None),
    ]
    labels = run_query(
        f"SELECT label FROM predictions WHERE run_id = '{BACKTEST_ID}' ORDER BY open_time",
        results_dir=old,
    ).column("label")
    assert labels.to_pylist() == [1.0, 0.0, None]
    assert run_query("SELECT count(*) AS n FROM funding_payments", results_dir=old).to_pylist() == [
        {"n": 0}
    ]


def test_view_over_only_old_parquet_files(tmp_path: Path, future: int) -> None:
    """No SQLite file at all: the columns still come from the schema, typed, NULL."""
    shutil.copytree(RESULTS_V1 / "runs", tmp_path / "runs")
    out = run_query("SELECT * FROM order_events", results_dir=tmp_path)
    assert out.column_names == schema.column_names("orders")
    assert out.column("algo_id").to_pylist() == [None]
    assert str(out.schema.field("algo_id").type) == "string"
    assert out.column("client_order_id").to_pylist() == ["bt-entry-1"]
    assert not (tmp_path / "runlog.sqlite").exists()  # a reader creates nothing


def test_engine_query_cli_over_the_old_folder(old: Path) -> None:
    """The real `engine` executable, current schema: every column, and the file migrated."""
    out = subprocess.run(
        [ENGINE, "query", "--results", str(old), "--format", "json", "SELECT * FROM order_events"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 3 and all(list(r) == schema.column_names("orders") for r in rows)
    assert _user_version(old) == schema.VERSION


def test_engine_query_cli_with_the_next_schema(old: Path) -> None:
    """The CLI in a fresh process running the next schema over the old folder."""
    code = FUTURE + (
        "from engine.cli import main\n"
        f"main(['query', '--results', {str(old)!r}, '--format', 'json',\n"
        "      'SELECT run_id, algo_id, status FROM orders ORDER BY run_id'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {"run_id": BACKTEST_ID, "algo_id": None, "status": "filled"},
        {"run_id": LIVE_ID, "algo_id": None, "status": "filled"},
    ]
    assert _user_version(old) == schema.VERSION + 1


def test_opening_twice_migrates_once(old: Path, future: int) -> None:
    with RunLog(old) as first:
        first.open()
        assert first.store.migration is not None
    conn = _sqlite(old)
    cookie = conn.execute("PRAGMA schema_version").fetchone()[0]  # bumped by any DDL
    conn.close()
    for _ in range(2):
        with RunLog(old) as again:
            again.open()
            assert again.store.migration is None
            assert (again.get_run(LIVE_ID) or {}).get("status") == "stopped"
    conn = _sqlite(old)
    assert conn.execute("PRAGMA schema_version").fetchone()[0] == cookie
    assert conn.execute(f'SELECT count(*) FROM "{MIGRATIONS_TABLE}"').fetchone()[0] == 1
    conn.close()


def test_concurrent_openers_migrate_once(old: Path) -> None:
    """Four processes open the old file at once under the next schema: one migrates."""
    code = FUTURE + (
        "from engine.runlog import RunLog\n"
        "log = RunLog(sys.argv[1]).open()\n"
        "print('migrated' if log.store.migration else 'current')\n"
        "log.close()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(old)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["current"] * 3 + ["migrated"]
    conn = _sqlite(old)
    assert conn.execute(f'SELECT count(*) FROM "{MIGRATIONS_TABLE}"').fetchone()[0] == 1
    assert "algo_id" in _columns(conn, "orders")
    conn.close()


def _snapshot(root: Path) -> tuple[int, dict[str, dict[str, str]]]:
    conn = _sqlite(root)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        return version, {t: _columns(conn, t) for t in sorted(tables)}
    finally:
        conn.close()


def test_a_crash_mid_migration_leaves_the_old_schema(old: Path, future: int) -> None:
    """The process dies after every change was made, before the migration commits."""
    before = _snapshot(old)
    code = FUTURE + (
        "import os\n"
        "from engine.runlog import RunLog, migrate\n"
        "def crash(conn, migration):\n"
        "    cols = conn.execute('PRAGMA table_info(orders)').fetchall()\n"
        "    new = conn.execute(\"SELECT name FROM sqlite_master WHERE name = 'funding_payments'\")\n"
        "    print(cols[-1][1], new.fetchone() is not None, flush=True)\n"
        "    os._exit(9)\n"
        "migrate._record = crash\n"
        "RunLog(sys.argv[1]).open()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(old)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 9, out.stderr
    assert out.stdout.split() == ["algo_id", "True"]  # it had made the changes when it died
    assert _snapshot(old) == before
    with RunLog(old) as log:  # a later open migrates the whole way
        log.open()
        assert log.store.migration is not None
    assert "funding_payments" in _snapshot(old)[1]


def test_a_failed_migration_rolls_back_and_closes(
    old: Path, future: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlite_utils.db import Table

    before = _snapshot(old)

    def broken(self: Table, **kwargs: object) -> Table:
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    with monkeypatch.context() as m:
        m.setattr(Table, "transform", broken)
        log = RunLog(old)
        with pytest.raises(sqlite3.OperationalError, match="simulated"):
            log.open()
        assert log.store._conn is None  # nothing half-open left behind
    assert _snapshot(old) == before
    log.open()
    assert log.store.migration is not None and _user_version(old) == future
    log.close()


def test_readers_keep_reading_during_a_migration(old: Path, future: int) -> None:
    """WAL: a reader inside a read transaction sees the old snapshot; the migration proceeds."""
    reader = sqlite3.connect(old / "runlog.sqlite", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM orders").fetchone()[0] == 2
    with RunLog(old) as log:
        log.open()  # does not wait for the reader (busy timeout would make this slow)
    assert reader.execute("SELECT count(*) FROM orders").fetchone()[0] == 2
    reader.execute("COMMIT")
    assert "algo_id" in _columns(reader, "orders")
    reader.close()


def test_a_file_from_a_newer_engine_is_refused(
    old: Path, future: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    RunLog(old).open().close()  # a newer engine (the next schema) migrates the folder ...
    monkeypatch.undo()  # ... then this engine opens it
    assert schema.VERSION == future - 1
    before = (old / "runlog.sqlite").read_bytes()
    with pytest.raises(NewerSchemaError) as err:
        RunLog(old).open()
    text = str(err.value)
    assert f"schema version {future} (written by engine" in text
    assert f"knows schema version {future - 1}" in text and "upgrade the engine" in text
    assert err.value.exit_code == 1
    with pytest.raises(NewerSchemaError):
        RunLog(old).recent_runs()
    with pytest.raises(NewerSchemaError):
        run_query("SELECT * FROM runs", results_dir=old)
    out = subprocess.run(
        [ENGINE, "query", "--results", str(old), "SELECT * FROM runs"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 1
    said = " ".join((out.stdout + out.stderr).split())
    assert f"schema version {future}" in said and "upgrade the engine" in said, said
    assert (old / "runlog.sqlite").read_bytes() == before  # not touched
