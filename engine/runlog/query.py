"""SQL over every run: DuckDB views that union the Parquet run tables with the SQLite log.

Each run-log table is a view under its own name (``runs``, ``snapshots``, ``model_predictions``,
``ensemble_decisions``, ``trades``, ``equity``, ``system_events``; the raw ``orders`` log is
``order_events``), with the schema's columns and types. Friendly views on top:

- ``decisions``    = ``ensemble_decisions``
- ``predictions``  = ``model_predictions``
- ``events``       = ``system_events``
- ``orders``       = each order's latest state (``order_events`` keeps every state row)

DuckDB's SQLite extension would have to be downloaded, so the SQLite tables are read with
Python's ``sqlite3`` into Arrow and registered; the Parquet side is read where it lies
(``runs/*/<table>.parquet``). A missing or empty results directory gives empty views.

Every view has the current schema's columns and types whatever the age of the files under it:
a column an older Parquet file (or a read-only, unmigrated SQLite file) lacks reads as NULL.
A ``runlog.sqlite`` written by a newer engine is refused
(:class:`engine.runlog.migrate.NewerSchemaError`).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import paths
from engine.errors import UsageError
from engine.runlog import schema
from engine.runlog.log import RunLog
from engine.runlog.migrate import check_version
from engine.runlog.parquet import PARTIAL_DIR, RUNS_DIR
from engine.runlog.store import SQLITE_NAME

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

#: Friendly views: name -> SQL over the raw views.
FRIENDLY_VIEWS: dict[str, str] = {
    "decisions": "SELECT * FROM ensemble_decisions",
    "predictions": "SELECT * FROM model_predictions",
    "events": "SELECT * FROM system_events",
    "orders": (
        "SELECT * FROM order_events QUALIFY row_number() OVER ("
        "PARTITION BY run_id, client_order_id "
        "ORDER BY coalesce(updated_at, created_at) DESC, "
        "CASE status WHEN 'new' THEN 0 WHEN 'partially_filled' THEN 1 ELSE 2 END DESC) = 1"
    ),
}


def raw_view_name(table: str) -> str:
    """The view of a run-log table: its own name, but ``orders`` -> ``order_events``."""
    return "order_events" if table == "orders" else table


def view_names() -> list[str]:
    """Every view ``engine query`` offers, friendly ones first."""
    friendly = ["runs", "decisions", "trades", "orders", "equity", "predictions", "events"]
    raw = [raw_view_name(t) for t in schema.TABLES if raw_view_name(t) not in friendly]
    return friendly + raw


def _typed_arrow(table: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    """Rows in the schema's column order as an Arrow table with every column, typed."""
    import pyarrow as pa

    cols = schema.columns(table)
    data: dict[str, list[Any]] = {c.name: [] for c in cols}
    for r in rows:
        for c, v in zip(cols, r, strict=True):
            if v is not None and c.type == "bool":
                v = bool(v)
            elif v is not None and c.type == "f64":
                v = float(v)
            data[c.name].append(v)
    return pa.table({c.name: pa.array(data[c.name], type=c.arrow_type()) for c in cols})


def _sqlite_rows(db_path: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of one SQLite table in the schema's column order (NULL for absent columns).

    Read-only: a file this process may not write is not migrated, so a column or table it
    lacks reads as NULL / no rows. A file from a newer engine is refused.
    """
    if not db_path.exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
    try:
        check_version(conn, db_path)
        have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
        if not have:
            return []
        cols = schema.columns(table)
        select = ", ".join(f'"{c.name}"' if c.name in have else "NULL" for c in cols)
        return conn.execute(f'SELECT {select} FROM "{table}" ORDER BY rowid').fetchall()
    finally:
        conn.close()


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _has_parquet(root: Path, table: str) -> bool:
    runs = root / RUNS_DIR
    return runs.exists() and any(
        p.parent.name != PARTIAL_DIR for p in runs.glob(f"*/{table}.parquet")
    )


def connect(results_dir: str | os.PathLike[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every run-log view defined over ``results_dir``.

    Each view has the current schema's columns, typed, whatever the age of the files under it:
    a zero-row typed table heads each union (``UNION ALL BY NAME``), so a column that no
    Parquet file has yet (every run is older) is still there, NULL.
    """
    import duckdb

    root = paths.results_dir(results_dir)
    db_path = root / SQLITE_NAME
    if db_path.exists() and os.access(db_path, os.W_OK):
        with RunLog(root) as log:  # migrate; crashed runs of this host become 'failed'
            log.reap_abandoned()
    con = duckdb.connect(":memory:")
    for table in schema.TABLES:
        cols = schema.columns(table)
        con.register(f"_schema_{table}", _typed_arrow(table, []))
        con.register(f"_sqlite_{table}", _typed_arrow(table, _sqlite_rows(db_path, table)))
        sources = [f"SELECT * FROM _schema_{table}"]
        if table != "runs" and _has_parquet(root, table):
            pattern = _sql_str(str(root / RUNS_DIR / "*" / f"{table}.parquet"))
            sources.append(f"SELECT * FROM read_parquet({pattern}, union_by_name = true)")
        sources.append(f"SELECT * FROM _sqlite_{table}")
        union = " UNION ALL BY NAME ".join(sources)
        select = ", ".join(f'CAST("{c.name}" AS {c.duckdb_type}) AS "{c.name}"' for c in cols)
        con.execute(f'CREATE VIEW "{raw_view_name(table)}" AS SELECT {select} FROM ({union})')
    for name, sql in FRIENDLY_VIEWS.items():
        con.execute(f'CREATE VIEW "{name}" AS {sql}')
    return con


def run_query(sql: str, *, results_dir: str | os.PathLike[str] | None = None) -> pa.Table:
    """Run ``sql`` over the run-log views and return the result as an Arrow table.

    Raises
    ------
    UsageError
        The SQL failed (the message names DuckDB's error; the hint lists the views).

    Examples
    --------
    >>> import tempfile
    >>> run_query("SELECT count(*) AS n FROM runs", results_dir=tempfile.mkdtemp()).to_pylist()
    [{'n': 0}]
    """
    import duckdb

    if not sql.strip():
        raise UsageError(
            "query: the SQL is empty", hint='for example: engine query "SELECT * FROM runs"'
        )
    con = connect(results_dir)
    try:
        rel = con.sql(sql)
        if rel is None:  # a statement without a result (CREATE, SET, ...)
            import pyarrow as pa

            return pa.table({})
        return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    except duckdb.Error as err:
        raise UsageError(
            f"query failed: {err}",
            hint=f"views: {', '.join(view_names())}; "
            'see columns with: engine query "DESCRIBE <view>"',
        ) from None
    finally:
        con.close()


# ---------------------------------------------------------------------- output


def _json_default(value: Any) -> Any:
    import datetime as dt
    import decimal

    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


def to_json(table: pa.Table) -> str:
    """One JSON array of row objects (ints stay ints; NaN/inf print as null)."""
    import orjson

    return orjson.dumps(table.to_pylist(), default=_json_default).decode()


def to_csv(table: pa.Table) -> str:
    """CSV with a header row; nulls are empty fields, floats keep full precision."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else _csv_cell(v) for v in row.values()])
    return buf.getvalue()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        import orjson

        return orjson.dumps(value, default=_json_default).decode()
    return value


def format_cell(value: Any) -> str:
    """A value as table text: floats to 10 significant digits, nulls empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, dict | list):
        return _csv_cell(value)
    return str(value)
