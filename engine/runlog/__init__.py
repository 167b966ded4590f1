"""The run log: one schema for every mode (backtest, sweep, paper, live), keyed by ``run_id``.

Public API::

    RunLog(results_dir=None)
        .start_run(*, mode, strategy, params, strategy_hash=None, parent_run_id=None) -> run_id
        .write(run_id, table, polars.DataFrame)     bulk (backtests): Parquet, visible on finish
        .append(run_id, table, rows)                durable SQLite (WAL) append (live)
        .event(run_id, *, severity, component, message, data=None, time_ms=None)
        .finish_run(run_id, *, status, metrics=None)
        .run(*, mode, strategy, params) context manager: failed on exception
        .get_run(run_id), .recent_runs(limit), .read(run_id, table)
        .open()                                     open (create or migrate) runlog.sqlite now
    features_to_long(wide, *, symbol=None) -> snapshots rows
    new_run_id(strategy) -> "20261124T071500Z-ema_cross-3f2a1c"
    NewerSchemaError                                runlog.sqlite was written by a newer engine

Tables and columns: :mod:`engine.runlog.schema`. SQL over every run: :mod:`engine.runlog.query`.
A results folder written by an older version keeps working: :mod:`engine.runlog.migrate`.
"""

from engine.runlog.log import RunLog, features_to_long, new_run_id
from engine.runlog.migrate import NewerSchemaError

__all__ = ["NewerSchemaError", "RunLog", "features_to_long", "new_run_id"]
