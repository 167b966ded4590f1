"""The run log: one schema for every mode, two stores, keyed by ``run_id``.

Storage layout under the results directory (``--results`` / ``$ENGINE_RESULTS`` / ``./results``)::

    runlog.sqlite                     SQLite in WAL mode: the ``runs`` table for every mode, and
                                      every other table for rows appended one at a time (live)
    runs/<run_id>/<table>.parquet     bulk rows of a finished run (backtests, sweeps)
    runs/.partial/<run_id>/...        a running run's bulk rows (invisible to queries)

Bulk writes (:meth:`RunLog.write`) go to the run's staging folder as complete Parquet parts
(each written to a temporary name and renamed); :meth:`RunLog.finish_run` merges each table's
parts into one file and renames the whole folder into ``runs/`` in one step, then records the
final status. A reader therefore never sees a half-written file: a run's bulk rows appear all
at once, when it finishes. Appends (:meth:`RunLog.append`) commit to SQLite (``synchronous=FULL``)
before they return, so live mode can write its intent before it acts.

A run whose process dies without finishing stays ``running`` until the next
:meth:`RunLog.start_run` or query on the same host sees that its process is gone: it is then
marked ``failed``, an event says so, and whatever complete parts it had staged are published.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import paths
from engine.errors import RunError, UsageError
from engine.runlog import schema

if TYPE_CHECKING:
    import polars as pl

SQLITE_NAME = "runlog.sqlite"
RUNS_DIR = "runs"
PARTIAL_DIR = ".partial"


def now_ms() -> int:
    """Wall-clock UTC ms (run start/finish stamps only; bar times come from the data)."""
    return time.time_ns() // 1_000_000


def new_run_id(strategy: str, *, at_ms: int | None = None) -> str:
    """A readable, unique run id: ``20261124T071500Z-ema_cross-3f2a1c``.

    >>> new_run_id("ema cross!", at_ms=0)[:26]
    '19700101T000000Z-ema_cross'
    """
    import datetime as dt

    at = now_ms() if at_ms is None else at_ms
    stamp = dt.datetime.fromtimestamp(at / 1000, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in strategy.strip())
    slug = "_".join(p for p in slug.split("_") if p)[:40] or "run"
    return f"{stamp}-{slug}-{secrets.token_hex(3)}"


def dumps_json(value: Any) -> str:
    """JSON text for a params/metrics/data value (numpy scalars ok; NaN/inf become null)."""
    import orjson

    return orjson.dumps(
        value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_json_default
    ).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):  # pydantic models
        return value.model_dump(mode="json")
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def features_to_long(wide: pl.DataFrame, *, symbol: str | None = None) -> pl.DataFrame:
    """Melt a wide features frame (``open_time`` + one column per feature) into ``snapshots`` rows.

    Parameters
    ----------
    wide
        ``open_time`` (Int64 ms), optionally ``symbol``, and one numeric column per feature.
    symbol
        The symbol of every row, when ``wide`` has no ``symbol`` column.

    Returns
    -------
    polars.DataFrame
        ``symbol, open_time, feature, value`` ready for ``RunLog.write(run_id, "snapshots", ...)``.

    Examples
    --------
    >>> import polars as pl
    >>> w = pl.DataFrame({"open_time": [0, 300000], "rsi_14": [50.0, 55.0]})
    >>> features_to_long(w, symbol="BTCUSDT").shape
    (2, 4)
    """
    import polars as pl

    index = ["open_time"] + (["symbol"] if "symbol" in wide.columns else [])
    if "symbol" not in wide.columns:
        if symbol is None:
            raise UsageError(
                "features_to_long: the frame has no 'symbol' column and no symbol= was given"
            )
    feats = [c for c in wide.columns if c not in index]
    long = wide.unpivot(on=feats, index=index, variable_name="feature", value_name="value")
    if "symbol" not in long.columns:
        long = long.with_columns(pl.lit(symbol, dtype=pl.Utf8).alias("symbol"))
    return long.select(
        pl.col("symbol"),
        pl.col("open_time").cast(pl.Int64),
        pl.col("feature"),
        pl.col("value").cast(pl.Float64),
    )


class RunLog:
    """Writer and reader of the run log under one results directory.

    Parameters
    ----------
    results_dir
        The results root; default ``$ENGINE_RESULTS`` or ``./results``.

    Examples
    --------
    >>> import polars as pl, tempfile
    >>> log = RunLog(tempfile.mkdtemp())
    >>> rid = log.start_run(mode="backtest", strategy="demo", params={"symbols": ["BTCUSDT"]})
    >>> log.write(rid, "equity", pl.DataFrame({"time": [0, 1], "equity": [100.0, 101.0]}))
    >>> log.finish_run(rid, status="ok", metrics={"total_return": 0.01})
    >>> log.get_run(rid)["status"]
    'ok'
    """

    def __init__(self, results_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = paths.results_dir(results_dir)
        self.sqlite_path = self.root / SQLITE_NAME
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._running: set[str] = set()

    # ------------------------------------------------------------------ paths

    def run_dir(self, run_id: str) -> Path:
        """Where a finished run's Parquet tables are."""
        return self.root / RUNS_DIR / run_id

    def staging_dir(self, run_id: str) -> Path:
        """Where a running run's Parquet parts are staged."""
        return self.root / RUNS_DIR / PARTIAL_DIR / run_id

    # ------------------------------------------------------------------ sqlite

    def _db(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self.root.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.sqlite_path, timeout=30.0, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
                with conn:
                    for table in schema.TABLES:
                        conn.execute(schema.sqlite_ddl(table))
                        _add_missing_columns(conn, table)
                        if table != "runs":
                            conn.execute(
                                f'CREATE INDEX IF NOT EXISTS "ix_{table}_run" ON "{table}" (run_id)'
                            )
                self._conn = conn
            return self._conn

    def close(self) -> None:
        """Close the SQLite connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        mode: str,
        strategy: str,
        params: Mapping[str, Any] | None = None,
        strategy_hash: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Register a new run (status ``running``) and return its ``run_id``.

        ``params`` is stored as JSON. The report reads these keys when present: ``symbols``
        (list), ``interval`` (base interval, e.g. ``"5m"``), ``start`` / ``end`` (ms or ISO),
        ``store`` (data store path), ``initial_equity``.
        """
        if mode not in schema.MODES:
            raise UsageError(f"run mode must be one of {', '.join(schema.MODES)}, got {mode!r}")
        from engine import __version__

        self.reap_abandoned()
        rid = run_id or new_run_id(strategy)
        row = {
            "run_id": rid,
            "mode": mode,
            "strategy": strategy,
            "strategy_hash": strategy_hash,
            "started_at": now_ms(),
            "finished_at": None,
            "status": "running",
            "params": dumps_json(dict(params or {})),
            "metrics": None,
            "engine_version": __version__,
            "parent_run_id": parent_run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        cols = schema.column_names("runs")
        db = self._db()
        with self._lock:
            try:
                with db:
                    db.execute(
                        f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols],
                    )
            except sqlite3.IntegrityError:
                raise UsageError(f"run_id {rid!r} already exists in {self.sqlite_path}") from None
            self._running.add(rid)
        return rid

    def finish_run(
        self, run_id: str, *, status: str, metrics: Mapping[str, Any] | None = None
    ) -> None:
        """Publish the run's bulk tables, then record its final ``status`` and ``metrics``.

        ``status`` is ``ok``, ``failed`` or ``stopped``. ``metrics`` (a dict, numpy scalars
        allowed; NaN/inf are stored as null) goes to ``runs.metrics``.
        """
        if status not in schema.FINAL_STATUSES:
            raise UsageError(
                f"finish_run: status must be one of {', '.join(schema.FINAL_STATUSES)}, got {status!r}"
            )
        self._require_running(run_id)
        self._publish(run_id)
        db = self._db()
        with self._lock, db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, metrics = ? WHERE run_id = ?",
                (
                    status,
                    now_ms(),
                    dumps_json(dict(metrics)) if metrics is not None else None,
                    run_id,
                ),
            )
            self._running.discard(run_id)

    @contextlib.contextmanager
    def run(
        self, *, mode: str, strategy: str, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Iterator[str]:
        """``with log.run(...) as run_id:`` start a run; an exception marks it ``failed``.

        The error is recorded in ``system_events`` and re-raised. If the block ends normally
        without calling :meth:`finish_run`, the run is finished ``ok`` without metrics.
        """
        rid = self.start_run(mode=mode, strategy=strategy, params=params, **kwargs)
        try:
            yield rid
        except BaseException as err:
            if self._is_running(rid):
                self.event(
                    rid,
                    severity="error",
                    component="runlog",
                    message=f"run failed: {type(err).__name__}: {err}",
                )
                self.finish_run(rid, status="failed")
            raise
        else:
            if self._is_running(rid):
                self.finish_run(rid, status="ok")

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The ``runs`` row of ``run_id`` as a dict (params/metrics parsed), or None."""
        if not self.sqlite_path.exists():
            return None
        db = self._db()
        with self._lock:
            cur = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        if row is None:
            return None
        return _parse_run(dict(zip(names, row, strict=True)))

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most recently started runs, newest first."""
        if not self.sqlite_path.exists():
            return []
        db = self._db()
        with self._lock:
            cur = db.execute(
                "SELECT * FROM runs ORDER BY started_at DESC, run_id DESC LIMIT ?", (limit,)
            )
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [_parse_run(dict(zip(names, r, strict=True))) for r in rows]

    def _is_running(self, run_id: str) -> bool:
        if run_id in self._running:
            return True
        run = self.get_run(run_id)
        return run is not None and run["status"] == "running"

    def _require_running(self, run_id: str) -> None:
        if run_id in self._running:
            return
        run = self.get_run(run_id)
        if run is None:
            raise RunError(
                f"unknown run_id {run_id!r} in {self.sqlite_path}",
                hint="start the run with RunLog.start_run(...) and use the run_id it returns",
            )
        if run["status"] != "running":
            raise RunError(
                f"run {run_id!r} is already finished (status {run['status']!r}); it cannot be written to",
                hint="start a new run for new rows",
            )
        self._running.add(run_id)

    # ------------------------------------------------------------------ bulk

    def write(self, run_id: str, table: str, df: pl.DataFrame) -> None:
        """Write a bulk frame of ``table`` rows for a running run (backtests).

        The frame has the table's columns (``run_id`` optional; optional columns may be left
        out). Columns are cast to the schema's types; an unknown or missing required column
        raises RunError. Rows become visible to queries when the run finishes. ``write`` may be
        called several times per table; the parts are concatenated in call order.
        """
        if table == "runs" or table not in schema.TABLES:
            raise RunError(
                f"RunLog.write: unknown table {table!r}",
                hint=f"tables: {', '.join(schema.RUN_TABLES)}",
            )
        self._require_running(run_id)
        frame = conform_frame(run_id, table, df)
        if frame.height == 0:
            return
        stage = self.staging_dir(run_id)
        stage.mkdir(parents=True, exist_ok=True)
        name = f"{table}-{time.time_ns():020d}-{secrets.token_hex(3)}.parquet"
        tmp = stage / f".{name}.tmp"
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, stage / name)

    def _publish(self, run_id: str) -> None:
        """Merge each table's staged parts into ``<table>.parquet`` and move the folder into runs/."""
        import pyarrow.parquet as pq

        stage = self.staging_dir(run_id)
        if not stage.exists():
            return
        for tmp in stage.glob(".*.tmp"):  # an interrupted write: never published
            tmp.unlink()
        for table in schema.RUN_TABLES:
            parts = sorted(stage.glob(f"{table}-*.parquet"))
            if not parts:
                continue
            target = stage / f"{table}.parquet"
            if len(parts) == 1:
                os.replace(parts[0], target)
                continue
            tmp = stage / f".{table}.parquet.tmp"
            writer: pq.ParquetWriter | None = None
            try:
                for part in parts:
                    pf = pq.ParquetFile(part)
                    for i in range(pf.num_row_groups):
                        rg = pf.read_row_group(i)
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, rg.schema, compression="zstd")
                        writer.write_table(rg)
            finally:
                if writer is not None:
                    writer.close()
            os.replace(tmp, target)
            for part in parts:
                part.unlink()
        final = self.run_dir(run_id)
        if final.exists():  # published before (should not happen): keep both, never overwrite
            for f in stage.iterdir():
                os.replace(f, final / f.name)
            shutil.rmtree(stage, ignore_errors=True)
        else:
            os.replace(stage, final)

    # ------------------------------------------------------------------ append

    def append(
        self,
        run_id: str,
        table: str,
        rows: Mapping[str, Any] | Sequence[Mapping[str, Any]] | pl.DataFrame,
    ) -> None:
        """Append rows durably to SQLite (live): committed and synced before this returns.

        ``rows`` is one dict, a sequence of dicts, or a polars DataFrame with the table's
        columns (``run_id`` optional). JSON columns accept dicts/lists.
        """
        if table == "runs" or table not in schema.TABLES:
            raise RunError(
                f"RunLog.append: unknown table {table!r}",
                hint=f"tables: {', '.join(schema.RUN_TABLES)}",
            )
        self._require_running(run_id)
        if isinstance(rows, Mapping):
            dict_rows: Sequence[Mapping[str, Any]] = [rows]
        elif hasattr(rows, "to_dicts"):
            dict_rows = rows.to_dicts()  # type: ignore[union-attr]
        else:
            dict_rows = rows  # type: ignore[assignment]
        values = [conform_row(run_id, table, r) for r in dict_rows]
        if not values:
            return
        cols = schema.column_names(table)
        sql = f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'
        db = self._db()
        with self._lock, db:
            db.executemany(sql, values)

    def event(
        self,
        run_id: str,
        *,
        severity: str,
        component: str,
        message: str,
        data: Mapping[str, Any] | None = None,
        time_ms: int | None = None,
    ) -> None:
        """Append one ``system_events`` row (durably); ``time_ms`` defaults to now."""
        self.append(
            run_id,
            "system_events",
            {
                "time": now_ms() if time_ms is None else time_ms,
                "severity": severity,
                "component": component,
                "message": message,
                "data": dict(data) if data is not None else None,
            },
        )

    # ------------------------------------------------------------------ read

    def read(self, run_id: str, table: str) -> pl.DataFrame:
        """All rows of ``table`` for one run: its published Parquet plus its SQLite rows."""
        import polars as pl

        if table == "runs":
            raise UsageError("RunLog.read: use get_run() for the runs table")
        schema.columns(table)
        frames = []
        path = self.run_dir(run_id) / f"{table}.parquet"
        if path.exists():
            frames.append(pl.read_parquet(path))
        if self.sqlite_path.exists():
            db = self._db()
            cols = schema.column_names(table)
            with self._lock:
                rows = db.execute(
                    f'SELECT {", ".join(cols)} FROM "{table}" WHERE run_id = ? ORDER BY rowid',
                    (run_id,),
                ).fetchall()
            if rows:
                frames.append(_rows_to_polars(table, rows))
        if not frames:
            return pl.DataFrame(schema=schema.polars_schema(table))
        out = pl.concat(frames, how="diagonal_relaxed")
        return out.select(
            [
                pl.col(c.name).cast(c.polars_type())
                if c.name in out.columns
                else pl.lit(None, dtype=c.polars_type()).alias(c.name)
                for c in schema.columns(table)
            ]
        )

    # ------------------------------------------------------------------ crash recovery

    def reap_abandoned(self) -> list[str]:
        """Mark ``running`` runs of dead processes on this host ``failed``; return their ids."""
        if not self.sqlite_path.exists():
            return []
        host = socket.gethostname()
        db = self._db()
        with self._lock:
            rows = db.execute(
                "SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?", (host,)
            ).fetchall()
        reaped = []
        for rid, pid in rows:
            if pid is None or _pid_alive(int(pid)) or rid in self._running:
                continue
            self._running.add(rid)
            self.event(
                rid,
                severity="error",
                component="runlog",
                message=f"run abandoned: process {pid} on {host} ended without finishing the run",
            )
            self.finish_run(rid, status="failed")
            reaped.append(rid)
        return reaped


# ---------------------------------------------------------------------- helpers


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _add_missing_columns(conn: sqlite3.Connection, table: str) -> None:
    have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
    for col in schema.columns(table):
        if col.name not in have:
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{col.name}" {col.sqlite_type}')


def _parse_run(row: dict[str, Any]) -> dict[str, Any]:
    import orjson

    for key in ("params", "metrics"):
        if row.get(key) is not None:
            row[key] = orjson.loads(row[key])
    return row


def _rows_to_polars(table: str, rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    import polars as pl

    cols = schema.columns(table)
    data = {c.name: [r[i] for r in rows] for i, c in enumerate(cols)}
    for c in cols:
        if c.type == "bool":
            data[c.name] = [None if v is None else bool(v) for v in data[c.name]]
        elif c.type == "f64":
            data[c.name] = [None if v is None else float(v) for v in data[c.name]]
    return pl.DataFrame(data, schema={c.name: c.polars_type() for c in cols}, strict=False)


def _check_values(table: str, column: str, values: Sequence[Any]) -> None:
    allowed = {
        ("ensemble_decisions", "action"): schema.ACTIONS,
        ("system_events", "severity"): schema.SEVERITIES,
    }
    ok = allowed.get((table, column))
    if ok is None:
        return
    bad = sorted({v for v in values if v is not None and v not in ok})
    if bad:
        raise RunError(
            f"{table}.{column}: values must be one of {', '.join(ok)}, got {', '.join(map(repr, bad[:5]))}"
        )


def conform_frame(run_id: str, table: str, df: pl.DataFrame) -> pl.DataFrame:
    """``df`` cast to ``table``'s schema (columns in order, ``run_id`` filled, JSON encoded)."""
    import polars as pl

    cols = schema.columns(table)
    names = [c.name for c in cols]
    unknown = [c for c in df.columns if c not in names]
    if unknown:
        raise RunError(
            f"{table}: unknown column(s) {', '.join(unknown)}",
            hint=f"{table} columns: {', '.join(names)} (see engine/runlog/schema.py)",
        )
    missing = [
        c.name for c in cols if c.required and c.name != "run_id" and c.name not in df.columns
    ]
    if missing:
        raise RunError(
            f"{table}: missing required column(s) {', '.join(missing)}",
            hint=f"{table} columns: {', '.join(names)} (see engine/runlog/schema.py)",
        )
    if "run_id" in df.columns:
        others = df.filter(pl.col("run_id") != run_id)["run_id"].unique().to_list()
        if others:
            raise RunError(f"{table}: rows carry run_id {others[0]!r}, expected {run_id!r}")
    exprs = []
    for c in cols:
        if c.name == "run_id":
            exprs.append(pl.lit(run_id, dtype=pl.Utf8).alias("run_id"))
            continue
        if c.name not in df.columns:
            exprs.append(pl.lit(None, dtype=c.polars_type()).alias(c.name))
            continue
        dtype = df.schema[c.name]
        expr = pl.col(c.name)
        if c.type == "json" and isinstance(dtype, pl.Struct):
            expr = expr.struct.json_encode()
        elif c.type == "json" and dtype != pl.Utf8 and dtype != pl.Null:
            raise RunError(f"{table}.{c.name}: expected JSON text or a struct column, got {dtype}")
        exprs.append(expr.cast(c.polars_type(), strict=True).alias(c.name))
    try:
        out = df.select(exprs)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as err:
        raise RunError(
            f"{table}: a column does not fit its type: {err}",
            hint=f"types: {', '.join(f'{c.name}={c.type}' for c in cols)}",
        ) from None
    for c in cols:
        if c.required and c.name != "run_id" and out[c.name].null_count():
            raise RunError(
                f"{table}.{c.name}: required, but {out[c.name].null_count()} row(s) are null"
            )
    for col in ("action", "severity"):
        if col in out.columns:
            _check_values(table, col, out[col].unique().to_list())
    return out


def conform_row(run_id: str, table: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """One row as a tuple in ``table``'s column order, values coerced to SQLite types."""
    cols = schema.columns(table)
    names = {c.name for c in cols}
    unknown = [k for k in row if k not in names]
    if unknown:
        raise RunError(
            f"{table}: unknown column(s) {', '.join(unknown)}",
            hint=f"{table} columns: {', '.join(c.name for c in cols)} (see engine/runlog/schema.py)",
        )
    out: list[Any] = []
    for c in cols:
        if c.name == "run_id":
            rid = row.get("run_id", run_id)
            if rid != run_id:
                raise RunError(f"{table}: row carries run_id {rid!r}, expected {run_id!r}")
            out.append(run_id)
            continue
        v = row.get(c.name)
        if v is None:
            if c.required:
                raise RunError(f"{table}.{c.name}: required, but missing or null in {dict(row)!r}")
            out.append(None)
            continue
        try:
            if c.type == "i64":
                v = int(v)
            elif c.type == "f64":
                v = float(v)
            elif c.type == "bool":
                v = int(bool(v))
            elif c.type == "json":
                v = v if isinstance(v, str) else dumps_json(v)
            else:
                v = str(v)
        except (TypeError, ValueError):
            raise RunError(f"{table}.{c.name}: expected {c.type}, got {v!r}") from None
        out.append(v)
    for col in ("action", "severity"):
        if col in names:
            _check_values(table, col, [out[[c.name for c in cols].index(col)]])
    return tuple(out)
