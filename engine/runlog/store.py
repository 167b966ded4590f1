"""``runlog.sqlite``: the ``runs`` table of every mode and the rows appended one at a time (live).

The file is opened in WAL mode (readers never wait for the writer) with ``synchronous=FULL``
(an append is on disk when it returns) and brought to the current schema on open
(:mod:`engine.runlog.migrate`). One :class:`SqliteStore` holds one connection, shared by the
threads of its process under a lock. :meth:`SqliteStore.transaction` makes several appends
one commit (one sync, all or none of them on disk), and ``run_state`` keeps one JSON document
per run and name (live mode's checkpoint), written in the same transactions as the rows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.runlog import schema
from engine.runlog.migrate import Migration, check_version, ensure_schema

if TYPE_CHECKING:
    import polars as pl

SQLITE_NAME = "runlog.sqlite"
#: per-run state documents (not a run-log table: ``engine query`` does not show it)
STATE_TABLE = "run_state"


class SqliteStore:
    """The SQLite side of the run log at ``path``; the file is created on first write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._tx = False  # inside transaction(): writes commit at its end
        #: What opening the file migrated (None: it was up to date, or is not open yet).
        self.migration: Migration | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def conn(self) -> sqlite3.Connection:
        """The open connection; the first call opens the file and migrates it if needed."""
        with self.lock:
            if self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
                try:
                    check_version(conn, self.path)  # a newer file is refused before any change
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                    conn.execute("PRAGMA busy_timeout=30000")
                    self.migration = ensure_schema(conn, self.path)
                    conn.execute(
                        f'CREATE TABLE IF NOT EXISTS "{STATE_TABLE}" (run_id TEXT NOT NULL, '
                        "name TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (run_id, name))")
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return self._conn

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ writes

    @contextmanager
    def transaction(self, *, synced: bool = True) -> Iterator[None]:
        """Every write inside is one commit at the end (synced once; on an error, or a
        process killed inside, none of them is in the file). Other threads' writes wait.
        Nested: the outermost commits (with its ``synced``).

        ``synced=False``: the commit is not synced (``synchronous=NORMAL`` for it): it
        survives a killed process (the WAL is in the OS's cache) but a power loss may take
        it back, whole, together with the unsynced commits after the last synced one (the
        WAL is one file, synced whole by the next synced commit, which makes every commit
        before it durable too). For writes a restart can redo; live mode syncs what must be
        on disk before the exchange hears of it (an order's intent) and not the rest of a
        bar's bookkeeping (~0.5 ms a sync on this machine's disk)."""
        db = self.conn()
        with self.lock:
            if self._tx:
                yield
                return
            self._tx = True
            if not synced:
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                with db:
                    yield
            finally:
                self._tx = False
                if not synced:
                    db.execute("PRAGMA synchronous=FULL")

    def defer_wal_checkpoints(self) -> None:
        """Stop SQLite from copying the WAL into the database inside a commit (it does so
        when the WAL passes 1,000 pages: a commit then takes several ms); the owner calls
        :meth:`wal_checkpoint` when it is idle instead (live mode: after each bar)."""
        db = self.conn()
        with self.lock:
            db.execute("PRAGMA wal_autocheckpoint=0")

    def wal_checkpoint(self) -> None:
        """Copy what the WAL holds into the database, without waiting for readers (PASSIVE)."""
        db = self.conn()
        with self.lock:
            if not self._tx:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _write(self, sql: str, values: Sequence[tuple[Any, ...]]) -> None:
        db = self.conn()
        with self.lock:
            if self._tx:
                db.executemany(sql, values)
            else:
                with db:
                    db.executemany(sql, values)

    def insert(self, table: str, values: Sequence[tuple[Any, ...]]) -> None:
        """Insert rows given in ``table``'s column order; committed (and synced) on return,
        or at the end of the :meth:`transaction` it is in."""
        cols = schema.column_names(table)
        quoted = ", ".join(f'"{c}"' for c in cols)
        self._write(f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(cols))})',
                    values)

    def put_state(self, run_id: str, name: str, doc: str) -> None:
        """Replace the state document ``name`` of ``run_id`` (committed like :meth:`insert`)."""
        self._write(f'INSERT OR REPLACE INTO "{STATE_TABLE}" VALUES (?, ?, ?)',
                    [(run_id, name, doc)])

    def get_state(self, run_id: str, name: str) -> str | None:
        """The state document ``name`` of ``run_id``, or None."""
        if not self.exists():
            return None
        db = self.conn()
        with self.lock:
            row = db.execute(f'SELECT doc FROM "{STATE_TABLE}" WHERE run_id = ? AND name = ?',
                             (run_id, name)).fetchone()
        return None if row is None else str(row[0])

    def insert_run(self, row: dict[str, Any]) -> None:
        """Insert one ``runs`` row; an existing ``run_id`` raises UsageError."""
        cols = schema.column_names("runs")
        quoted = ", ".join(f'"{c}"' for c in cols)
        db = self.conn()
        with self.lock:
            try:
                with db:
                    db.execute(
                        f"INSERT INTO runs ({quoted}) VALUES ({', '.join('?' * len(cols))})",
                        [row.get(c) for c in cols],
                    )
            except sqlite3.IntegrityError:
                raise UsageError(
                    f"run_id {row['run_id']!r} already exists in {self.path}"
                ) from None

    def finish_run(
        self, run_id: str, *, status: str, finished_at: int, metrics_json: str | None
    ) -> None:
        db = self.conn()
        with self.lock, db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, metrics = ? WHERE run_id = ?",
                (status, finished_at, metrics_json, run_id),
            )

    # ------------------------------------------------------------------ reads

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The ``runs`` row of ``run_id`` (params/metrics parsed), or None."""
        rows = self._runs("WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def recent_runs(self, limit: int) -> list[dict[str, Any]]:
        return self._runs("ORDER BY started_at DESC, run_id DESC LIMIT ?", (limit,))

    def running_on_host(self, host: str) -> list[tuple[str, int | None]]:
        """``(run_id, pid)`` of every ``running`` run started on ``host``."""
        if not self.exists():
            return []
        db = self.conn()
        with self.lock:
            rows = db.execute(
                "SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?", (host,)
            ).fetchall()
        return [(str(r[0]), None if r[1] is None else int(r[1])) for r in rows]

    def read(self, table: str, run_id: str) -> pl.DataFrame | None:
        """One run's rows of ``table`` in append order, typed by the schema (None if none)."""
        if not self.exists():
            return None
        cols = schema.column_names(table)
        quoted = ", ".join(f'"{c}"' for c in cols)
        db = self.conn()
        with self.lock:
            rows = db.execute(
                f'SELECT {quoted} FROM "{table}" WHERE run_id = ? ORDER BY rowid', (run_id,)
            ).fetchall()
        return rows_to_polars(table, rows) if rows else None

    def _runs(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        cols = schema.column_names("runs")
        quoted = ", ".join(f'"{c}"' for c in cols)
        db = self.conn()
        with self.lock:
            rows = db.execute(f"SELECT {quoted} FROM runs {where}", args).fetchall()
        return [_parse_run(dict(zip(cols, r, strict=True))) for r in rows]


def _parse_run(row: dict[str, Any]) -> dict[str, Any]:
    import orjson

    for key in ("params", "metrics"):
        if row.get(key) is not None:
            row[key] = orjson.loads(row[key])
    return row


def rows_to_polars(table: str, rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """SQLite rows (in the schema's column order) as a frame typed by the schema."""
    import polars as pl

    cols = schema.columns(table)
    data = {c.name: [r[i] for r in rows] for i, c in enumerate(cols)}
    for c in cols:
        if c.type == "bool":
            data[c.name] = [None if v is None else bool(v) for v in data[c.name]]
        elif c.type == "f64":
            data[c.name] = [None if v is None else float(v) for v in data[c.name]]
    return pl.DataFrame(data, schema={c.name: c.polars_type() for c in cols}, strict=False)
