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

``runlog.sqlite`` brings itself to the current schema when it is opened
(:mod:`engine.runlog.migrate`); older Parquet runs read with the columns they lack as nulls.
The jobs live in their own modules: :mod:`~engine.runlog.store` (SQLite),
:mod:`~engine.runlog.parquet` (staging and publishing), :mod:`~engine.runlog.conform` (the
checks every row passes); this module is the facade that ties them to a run's life.

A run whose process dies without finishing stays ``running`` until the next
:meth:`RunLog.start_run` or query on the same host sees that its process is gone: it is then
marked ``failed``, an event says so, and whatever complete parts it had staged are published.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import __version__, paths
from engine.errors import RunError, UsageError
from engine.runlog import parquet, schema
from engine.runlog.conform import (
    conform_frame,
    conform_row,
    dumps_json,
    features_to_long,
    new_run_id,
    now_ms,
)
from engine.runlog.parquet import PARTIAL_DIR, RUNS_DIR
from engine.runlog.store import SQLITE_NAME, SqliteStore

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "PARTIAL_DIR",
    "RUNS_DIR",
    "SQLITE_NAME",
    "RunLog",
    "conform_frame",
    "conform_row",
    "dumps_json",
    "features_to_long",
    "new_run_id",
    "now_ms",
]


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
        self.store = SqliteStore(self.sqlite_path)
        self._lock = threading.RLock()  # guards _running
        self._running: set[str] = set()

    # ------------------------------------------------------------------ paths

    def run_dir(self, run_id: str) -> Path:
        """Where a finished run's Parquet tables are."""
        return parquet.run_dir(self.root, run_id)

    def staging_dir(self, run_id: str) -> Path:
        """Where a running run's Parquet parts are staged."""
        return parquet.staging_dir(self.root, run_id)

    # ------------------------------------------------------------------ sqlite

    def open(self) -> RunLog:
        """Open ``runlog.sqlite`` now (creating or migrating it); later calls do nothing.

        Every method opens it on first use; call this to fail early, for example on a file
        written by a newer engine (:class:`engine.runlog.migrate.NewerSchemaError`).
        """
        self.store.conn()
        return self

    def close(self) -> None:
        """Close the SQLite connection (reopened on next use)."""
        self.store.close()

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
        self.store.insert_run(row)
        with self._lock:
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
        parquet.publish(self.staging_dir(run_id), self.run_dir(run_id))
        self.store.finish_run(
            run_id,
            status=status,
            finished_at=now_ms(),
            metrics_json=dumps_json(dict(metrics)) if metrics is not None else None,
        )
        with self._lock:
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
        return self.store.get_run(run_id)

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most recently started runs, newest first."""
        return self.store.recent_runs(limit)

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
        parquet.stage_part(self.staging_dir(run_id), table, frame)

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
        if values:
            self.store.insert(table, values)

    def defer_wal_checkpoints(self) -> None:
        """SQLite's WAL checkpoints only when :meth:`wal_checkpoint` is called (a long-lived
        writer's idle moments), never inside a commit."""
        self.store.defer_wal_checkpoints()

    def wal_checkpoint(self) -> None:
        """Move the WAL's pages into the database file now (see
        :meth:`defer_wal_checkpoints`)."""
        self.store.wal_checkpoint()

    def transaction(self, *, synced: bool = True) -> contextlib.AbstractContextManager[None]:
        """Appends (and state) inside are one commit: all on disk at its end, or none;
        ``synced=False``: in the OS's cache at its end, on disk with the next synced commit
        (see :meth:`engine.runlog.store.SqliteStore.transaction`)."""
        return self.store.transaction(synced=synced)

    def save_state(self, run_id: str, name: str, doc: str) -> None:
        """Replace a running run's state document ``name`` (live mode's checkpoint), durably
        (or with the :meth:`transaction` it is in). Not a run-log table: not in queries."""
        self._require_running(run_id)
        self.store.put_state(run_id, name, doc)

    def load_state(self, run_id: str, name: str) -> str | None:
        """A run's state document ``name``, or None."""
        return self.store.get_state(run_id, name)

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
        """All rows of ``table`` for one run: its published Parquet, then its SQLite rows.

        Always the current schema's columns, typed: a column an older Parquet file lacks
        is null in its rows.
        """
        import polars as pl

        if table == "runs":
            raise UsageError("RunLog.read: use get_run() for the runs table")
        schema.columns(table)
        frames = [
            _current_columns(f, table)
            for f in (
                parquet.read_published(self.root, run_id, table),
                self.store.read(table, run_id),
            )
            if f is not None
        ]
        if not frames:
            return pl.DataFrame(schema=schema.polars_schema(table))
        return pl.concat(frames, how="vertical")

    # ------------------------------------------------------------------ crash recovery

    def reap_abandoned(self) -> list[str]:
        """Mark ``running`` runs of dead processes on this host ``failed``; return their ids."""
        host = socket.gethostname()
        reaped = []
        for rid, pid in self.store.running_on_host(host):
            if pid is None or _pid_alive(pid) or rid in self._running:
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


def _current_columns(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """``frame`` with exactly ``table``'s current columns, typed; the ones it lacks are null."""
    import polars as pl

    return frame.select(
        [
            pl.col(c.name).cast(c.polars_type())
            if c.name in frame.columns
            else pl.lit(None, dtype=c.polars_type()).alias(c.name)
            for c in schema.columns(table)
        ]
    )


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
