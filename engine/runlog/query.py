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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import paths
from engine.errors import UsageError
from engine.runlog import schema
from engine.runlog.log import PARTIAL_DIR, RUNS_DIR, SQLITE_NAME

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

#: Raw table -> view name (only ``orders`` is renamed: its view shows the latest states).
RAW_VIEW_NAME = {t: ("order_events" if t == "orders" else t) for t in schema.TABLES}


def view_names() -> list[str]:
    """Every view ``engine query`` offers, friendly ones first."""
    friendly = ["runs", "decisions", "trades", "orders", "equity", "predictions", "events"]
    raw = [v for v in RAW_VIEW_NAME.values() if v not in friendly]
    return friendly + raw


def _sqlite_arrow(db_path: Path, table: str) -> pa.Table:
    """All rows of one SQLite table as an Arrow table typed by the schema (empty if none)."""
    import sqlite3

    import pyarrow as pa

    cols = schema.columns(table)
    arrow_types = {
        "str": pa.string(),
        "json": pa.string(),
        "i64": pa.int64(),
        "f64": pa.float64(),
        "bool": pa.bool_(),
    }
    rows: list[tuple[Any, ...]] = []
    if db_path.exists():
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30.0)
        try:
            have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            if have:
                select = ", ".join(f'"{c.name}"' if c.name in have else "NULL" for c in cols)
                rows = conn.execute(f'SELECT {select} FROM "{table}" ORDER BY rowid').fetchall()
        finally:
            conn.close()
    data: dict[str, list[Any]] = {c.name: [] for c in cols}
    for r in rows:
        for c, v in zip(cols, r, strict=True):
            if v is not None and c.type == "bool":
                v = bool(v)
            elif v is not None and c.type == "f64":
                v = float(v)
            data[c.name].append(v)
    return pa.table(
        {c.name: pa.array(data[c.name], type=arrow_types[c.type]) for c in cols},
    )


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(results_dir: str | os.PathLike[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every run-log view defined over ``results_dir``."""
    import duckdb

    root = paths.results_dir(results_dir)
    db_path = root / SQLITE_NAME
    if db_path.exists() and os.access(db_path, os.W_OK):
        from engine.runlog.log import RunLog

        with RunLog(root) as log:  # crashed runs of this host become 'failed' before we read
            log.reap_abandoned()
    con = duckdb.connect(":memory:")
    for table in schema.TABLES:
        cols = schema.columns(table)
        sqlite_name = f"_sqlite_{table}"
        con.register(sqlite_name, _sqlite_arrow(db_path, table))
        sources = [f"SELECT * FROM {sqlite_name}"]
        if table != "runs":
            runs = root / RUNS_DIR
            if runs.exists() and any(
                p.parent.name != PARTIAL_DIR for p in runs.glob(f"*/{table}.parquet")
            ):
                pattern = str(runs / "*" / f"{table}.parquet")
                sources.insert(
                    0, f"SELECT * FROM read_parquet({_sql_str(pattern)}, union_by_name = true)"
                )
        union = " UNION ALL BY NAME ".join(sources)
        select = ", ".join(f'CAST("{c.name}" AS {c.duckdb_type}) AS "{c.name}"' for c in cols)
        con.execute(f'CREATE VIEW "{RAW_VIEW_NAME[table]}" AS SELECT {select} FROM ({union})')
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
