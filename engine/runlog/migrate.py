"""Bring ``runlog.sqlite`` to the current schema when it is opened.

The file records the schema version it was brought to in ``PRAGMA user_version`` (a field of
the database header: reading it costs nothing, and writing it is part of a transaction). On
open:

- the same version as :data:`engine.runlog.schema.VERSION`: nothing to do;
- an older version (0 = written before versions were stored, or a new empty file): the file is
  migrated in ONE ``BEGIN IMMEDIATE`` transaction: missing tables are created from the
  schema's DDL, and existing tables are brought up to date with ``sqlite-utils``: missing
  columns added (``Table.add_column``; old rows read NULL) and columns whose type changed
  rebuilt (``Table.transform``; rows, rowids and indexes kept). The new version and a
  ``runlog_migrations`` row (from, to, when, by which engine, what changed) are written in the
  same transaction, so a crash leaves the old schema or the new one, never half of it;
- a newer version: :class:`NewerSchemaError`; the file is not touched.

The write lock of ``BEGIN IMMEDIATE`` makes concurrent openers take turns; each re-reads the
version under the lock, so the second finds the work done. Readers in WAL mode keep reading the
old snapshot while a migration runs. Columns the schema no longer names are kept (never
dropped): the readers select the schema's columns by name, so column order does not matter
and an added column simply sits at the end of the SQLite table.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine import __version__
from engine.errors import DataError
from engine.runlog import schema
from engine.runlog.conform import now_ms

if TYPE_CHECKING:
    import sqlite_utils

#: The table that records each migration of the file (not a run-log table).
MIGRATIONS_TABLE = "runlog_migrations"


class NewerSchemaError(DataError):
    """``runlog.sqlite`` was written by a newer engine whose schema this engine does not know."""


@dataclass(frozen=True)
class Migration:
    """What one migration did to a file."""

    from_version: int
    to_version: int
    created_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)  # "table.column"
    retyped_columns: list[str] = field(default_factory=list)  # "table.column: OLD -> NEW"

    def summary(self) -> str:
        parts = [f"version {self.from_version} -> {self.to_version}"]
        if self.created_tables:
            parts.append("created " + ", ".join(self.created_tables))
        if self.added_columns:
            parts.append("added " + ", ".join(self.added_columns))
        if self.retyped_columns:
            parts.append("retyped " + ", ".join(self.retyped_columns))
        return "; ".join(parts)


def stored_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file (0 when none was)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's stored version; raises :class:`NewerSchemaError` if it is newer than ours."""
    version = stored_version(conn)
    if version > schema.VERSION:
        by = _last_migrated_by(conn, version)
        raise NewerSchemaError(
            f"{path} has run-log schema version {version}{by}; this engine "
            f"({__version__}) knows schema version {schema.VERSION} and will not read or "
            "write a newer file (nothing was changed)",
            hint="upgrade the engine to the version that wrote this results folder, "
            "or use another --results folder",
        )
    return version


def ensure_schema(conn: sqlite3.Connection, path: Path) -> Migration | None:
    """Migrate the file behind ``conn`` to :data:`schema.VERSION`; None when it already was.

    ``conn`` must use Python's default transaction handling and have no open transaction.
    """
    if check_version(conn, path) == schema.VERSION:
        return None
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_version(conn, path)  # again, under the write lock
        if version == schema.VERSION:
            conn.rollback()
            return None
        migration = _migrate(conn, version)
        conn.execute(f"PRAGMA user_version = {int(schema.VERSION)}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return migration


def _migrate(conn: sqlite3.Connection, from_version: int) -> Migration:
    """Every step of one migration, inside the caller's transaction."""
    migration = Migration(from_version, schema.VERSION)
    existing = _declared_columns(conn)
    for table in schema.TABLES:
        if table not in existing:
            conn.execute(schema.sqlite_ddl(table))
            migration.created_tables.append(table)
    stale = [
        t
        for t in schema.TABLES
        if t in existing
        and any(existing[t].get(c.name) != c.sqlite_type for c in schema.columns(t))
    ]
    if stale:
        _alter(conn, stale, migration)
    for table in schema.TABLES:
        if table != "runs":
            conn.execute(f'CREATE INDEX IF NOT EXISTS "ix_{table}_run" ON "{table}" (run_id)')
    _record(conn, migration)
    return migration


def _declared_columns(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
    """``{table: {column: declared type}}`` of every table in the file."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {
        t: {r[1]: str(r[2]).upper() for r in conn.execute(f'PRAGMA table_info("{t}")')}
        for t in names
    }


def _alter(conn: sqlite3.Connection, tables: list[str], migration: Migration) -> None:
    """Bring the columns of existing ``tables`` up to date with sqlite-utils.

    sqlite-utils is imported here only (it takes seconds to import): a new or current file
    never needs it.
    """
    import sqlite_utils

    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    for table in tables:
        _add_columns(db, table, migration)
        _retype_columns(db, table, migration)


def _add_columns(db: sqlite_utils.Database, table: str, migration: Migration) -> None:
    t = db.table(table)
    have = {c.name for c in t.columns}
    for col in schema.columns(table):
        if col.name not in have:
            t.add_column(col.name, col.sqlite_type)  # NULL in every existing row
            migration.added_columns.append(f"{table}.{col.name}")


def _retype_columns(db: sqlite_utils.Database, table: str, migration: Migration) -> None:
    t = db.table(table)
    declared = {c.name: (c.type or "").upper() for c in t.columns}
    changes = {
        c.name: c.sqlite_type
        for c in schema.columns(table)
        if declared.get(c.name, c.sqlite_type) != c.sqlite_type
    }
    if not changes:
        return
    t.transform(types=changes)  # a rebuilt table: rows, rowids and indexes kept
    migration.retyped_columns.extend(
        f"{table}.{name}: {declared[name]} -> {new}" for name, new in changes.items()
    )


def _record(conn: sqlite3.Connection, migration: Migration) -> None:
    """One ``runlog_migrations`` row: from, to, when, by which engine, what changed."""
    import orjson

    conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{MIGRATIONS_TABLE}" ("from_version" INTEGER, '
        '"to_version" INTEGER, "migrated_at" INTEGER, "engine_version" TEXT, "changes" TEXT)'
    )
    changes = {
        "created_tables": migration.created_tables,
        "added_columns": migration.added_columns,
        "retyped_columns": migration.retyped_columns,
    }
    conn.execute(
        f'INSERT INTO "{MIGRATIONS_TABLE}" VALUES (?, ?, ?, ?, ?)',
        (
            migration.from_version,
            migration.to_version,
            now_ms(),
            __version__,
            orjson.dumps(changes).decode(),
        ),
    )


def _last_migrated_by(conn: sqlite3.Connection, version: int) -> str:
    """`` (written by engine X)`` when the file says which engine brought it to ``version``."""
    try:
        row = conn.execute(
            f'SELECT engine_version FROM "{MIGRATIONS_TABLE}" WHERE to_version = ? '
            "ORDER BY rowid DESC LIMIT 1",
            (version,),
        ).fetchone()
    except sqlite3.Error:  # no such table, or a layout this engine does not know
        return ""
    return f" (written by engine {row[0]})" if row and row[0] else ""
