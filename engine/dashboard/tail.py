"""The rows a running run added to ``runlog.sqlite`` since the last look (live mode).

:class:`RowTail` keeps the last ``rowid`` it read of each table and reads only newer rows of
one run, with its own read-only SQLite connection (WAL: it never blocks the writer). Live mode
calls :meth:`RowTail.read` in a worker thread once a bar is done, so the dashboard shows
exactly what the run log holds (the same rows ``engine dashboard RUN_ID`` reads later).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from engine.dashboard.state import TABLES


class RowTail:
    """New rows of run ``run_id`` in ``sqlite_path``, table by table."""

    def __init__(self, sqlite_path: str | Path, run_id: str) -> None:
        self.path = Path(sqlite_path)
        self.run_id = run_id
        self.last: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
        return self._conn

    def read(self) -> dict[str, list[dict[str, Any]]]:
        """``{table: new rows}`` (tables with none left out)."""
        conn = self._connect()
        out: dict[str, list[dict[str, Any]]] = {}
        for table in TABLES:
            try:
                rows = conn.execute(
                    f"SELECT rowid AS _rowid, * FROM {table} "  # noqa: S608
                    "WHERE run_id = ? AND rowid > ? ORDER BY rowid",
                    (self.run_id, self.last[table]),
                ).fetchall()
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    continue
                raise
            if rows:
                self.last[table] = int(rows[-1]["_rowid"])
                out[table] = [dict(r) for r in rows]
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
