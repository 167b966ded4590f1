"""The one run-log schema: every table, its ordered columns and their types in each store.

Every mode (backtest, sweep, paper, live) writes the same tables with the same columns, keyed
by ``run_id``. A column has a logical type that maps to polars (Parquet), DuckDB (queries) and
SQLite (live appends):

======  ==========  ========  =======
type    polars      DuckDB    SQLite
======  ==========  ========  =======
str     Utf8        VARCHAR   TEXT
i64     Int64       BIGINT    INTEGER
f64     Float64     DOUBLE    REAL
bool    Boolean     BOOLEAN   INTEGER
json    Utf8        VARCHAR   TEXT    (a JSON document; query it with DuckDB's json functions)
======  ==========  ========  =======

All times are UTC milliseconds (``i64``). ``open_time`` is a bar's OPEN time, so the decision
logged at ``open_time = t`` was made at the close of that bar. Required columns must be given
by the writer; optional ones may be left out and are stored as null.

``snapshots`` is long (one row per feature per bar): one schema for any feature set, and
``PIVOT`` in DuckDB gives the wide form back. :func:`engine.runlog.features_to_long` melts a
wide features frame.

The columns evolve: :data:`VERSION` numbers them. ``runlog.sqlite`` stores the version it was
brought to (``PRAGMA user_version``) and :mod:`engine.runlog.migrate` brings an older file up to
date when it is opened; older Parquet runs read with the new columns null. Bump
:data:`VERSION` whenever a table or column is added or a column's type changes (a test pins
each version's columns: ``tests/runlog/fixtures/schema_v<N>.json``). Columns are added, never
renamed or dropped in place: a rename is a new column.

``orders`` is an append-only log of order states: the intent is written (status ``new``)
before the order is sent, and each later state (``filled``, ``canceled``, ...) is another
row with a later ``updated_at``. The ``orders`` view of ``engine query`` shows each order's
latest state; ``order_events`` shows every row.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

#: The schema's version; ``runlog.sqlite`` records the version it was migrated to.
VERSION: Final = 3

LOGICAL_TYPES: Final = ("str", "i64", "f64", "bool", "json")

_DUCKDB = {"str": "VARCHAR", "i64": "BIGINT", "f64": "DOUBLE", "bool": "BOOLEAN", "json": "VARCHAR"}
_SQLITE = {"str": "TEXT", "i64": "INTEGER", "f64": "REAL", "bool": "INTEGER", "json": "TEXT"}


class Column(NamedTuple):
    """One column of a run-log table."""

    name: str
    type: str
    required: bool
    doc: str

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB[self.type]

    @property
    def sqlite_type(self) -> str:
        return _SQLITE[self.type]

    def polars_type(self) -> Any:  # a polars DataType (polars is imported lazily)
        import polars as pl

        return {
            "str": pl.Utf8,
            "i64": pl.Int64,
            "f64": pl.Float64,
            "bool": pl.Boolean,
            "json": pl.Utf8,
        }[self.type]

    def arrow_type(self) -> Any:  # a pyarrow DataType (pyarrow is imported lazily)
        import pyarrow as pa

        return {
            "str": pa.string(),
            "i64": pa.int64(),
            "f64": pa.float64(),
            "bool": pa.bool_(),
            "json": pa.string(),
        }[self.type]


def _c(name: str, type_: str, doc: str, *, required: bool = False) -> Column:
    assert type_ in LOGICAL_TYPES, type_
    return Column(name, type_, required, doc)


RUN_ID = _c("run_id", "str", "the run this row belongs to", required=True)

TABLES: Final[dict[str, tuple[Column, ...]]] = {
    "runs": (
        RUN_ID,
        _c("mode", "str", "'backtest' | 'sweep' | 'paper' | 'live'", required=True),
        _c("strategy", "str", "strategy name", required=True),
        _c("strategy_hash", "str", "hash of the resolved strategy config (null if not given)"),
        _c("started_at", "i64", "UTC ms when the run started", required=True),
        _c("finished_at", "i64", "UTC ms when the run finished (null while running)"),
        _c("status", "str", "'running' | 'ok' | 'failed' | 'stopped'", required=True),
        _c("params", "json", "the run's parameters (symbols, interval, start, end, store, ...)"),
        _c("metrics", "json", "summary metrics written by finish_run (models under 'models')"),
        _c("engine_version", "str", "engine package version"),
        _c("parent_run_id", "str", "the sweep run that started this run, if any"),
        _c("host", "str", "host name of the process that ran it"),
        _c("pid", "i64", "process id that ran it (used to mark crashed runs failed)"),
    ),
    "snapshots": (
        RUN_ID,
        _c("symbol", "str", "symbol, e.g. BTCUSDT", required=True),
        _c("open_time", "i64", "bar open time (UTC ms)", required=True),
        _c("feature", "str", "feature name, e.g. rsi_14", required=True),
        _c("value", "f64", "feature value at the close of the bar (NaN while warming up)"),
    ),
    "model_predictions": (
        RUN_ID,
        _c("symbol", "str", "symbol", required=True),
        _c(
            "open_time",
            "i64",
            "bar open time (UTC ms); predicted at the bar's close",
            required=True,
        ),
        _c("model", "str", "model node name, e.g. lightgbm", required=True),
        _c(
            "model_version", "str", "version id of the trained model (its training cutoff and hash)"
        ),
        _c(
            "probability",
            "f64",
            "P(up) from the model (raw, before calibration); null where a remote member "
            "abstained (its server failed: weight 0, the reason in system_events)",
        ),
        _c("calibrated", "f64", "P(up) after calibration (null if not calibrated)"),
        _c(
            "weight", "f64", "the model's weight in the fusion at this bar (null if not applicable)"
        ),
        _c("label", "i64", "realised label once known (1 up, 0 down; null unknown or flat)"),
        _c(
            "latency_ms",
            "f64",
            "live: milliseconds from the bar's features to this prediction (null in backtests)",
        ),
        _c(
            "endpoint",
            "str",
            "the model server that answered, for a remote member (null for in-process models)",
        ),
    ),
    "ensemble_decisions": (
        RUN_ID,
        _c("symbol", "str", "symbol", required=True),
        _c("open_time", "i64", "bar open time (UTC ms); decided at the bar's close", required=True),
        _c("action", "str", "'long' | 'short' | 'flat'", required=True),
        _c("target_position", "f64", "signed target position in base units", required=True),
        _c("confidence", "f64", "confidence in [0, 1] (rule strategies: 1 or null)"),
        _c("probability", "f64", "fused, calibrated P(up)"),
        _c("agreement", "f64", "fraction of models agreeing with the fused side"),
        _c("uncertainty", "f64", "uncertainty from disagreement and entropy"),
        _c("expected_value", "f64", "expected value per unit risked from p and payoff ratio"),
        _c(
            "expected_edge_bps",
            "f64",
            "expected net return of the decided trade in basis points of notional, after the "
            "configured fees and slippage (what gate.min_edge_bps compares; null for rule graphs)",
        ),
        _c("risk_check", "str", "'pass' or the name of the check that changed the size"),
        _c("position_size", "f64", "fraction of equity allotted by the risk manager"),
        _c("rejection_reason", "str", "why an entry was not taken (null when taken)"),
        _c("price", "f64", "close price of the bar the decision was made on"),
    ),
    "orders": (
        RUN_ID,
        _c("client_order_id", "str", "idempotent id from (run, symbol, bar, leg)", required=True),
        _c("symbol", "str", "symbol", required=True),
        _c("side", "str", "'buy' | 'sell'", required=True),
        _c(
            "type",
            "str",
            "'market' | 'limit' | 'stop_market' | 'take_profit_market'",
            required=True,
        ),
        _c("quantity", "f64", "order quantity in base units", required=True),
        _c("price", "f64", "limit/stop price, or the fill price of a market order"),
        _c(
            "status",
            "str",
            "'new' | 'partially_filled' | 'filled' | 'canceled' | 'rejected' | 'expired'",
            required=True,
        ),
        _c("created_at", "i64", "UTC ms when the order intent was created", required=True),
        _c("open_time", "i64", "open time of the bar whose decision made the order"),
        _c("leg", "str", "'entry' | 'exit' | 'stop' | 'target' | ..."),
        _c("exchange_order_id", "str", "the exchange's order id once known"),
        _c("filled_quantity", "f64", "filled quantity in base units"),
        _c("avg_price", "f64", "average fill price"),
        _c("reduce_only", "bool", "reduce-only flag"),
        _c("updated_at", "i64", "UTC ms of this state (defaults to created_at)"),
        _c("message", "str", "exchange message or reject reason"),
    ),
    "trades": (
        RUN_ID,
        _c("symbol", "str", "symbol", required=True),
        _c("side", "str", "'long' | 'short'", required=True),
        _c("entry_time", "i64", "fill time of the entry (UTC ms)", required=True),
        _c("exit_time", "i64", "fill time of the exit (UTC ms; null while open)"),
        _c("entry_price", "f64", "average entry price", required=True),
        _c("exit_price", "f64", "average exit price (null while open)"),
        _c("quantity", "f64", "position size in base units (positive)", required=True),
        _c("pnl", "f64", "realised PnL in quote, NET of fees and funding", required=True),
        _c("fees", "f64", "fees paid in quote (positive = paid)"),
        _c("funding", "f64", "funding in quote (positive = received, negative = paid)"),
        _c("exit_reason", "str", "'signal' | 'stop' | 'target' | 'liquidation' | 'end' | ..."),
    ),
    "equity": (
        RUN_ID,
        _c(
            "time", "i64", "bar open time (UTC ms); equity marked at the bar's close", required=True
        ),
        _c("equity", "f64", "account equity in quote (cash + unrealised PnL)", required=True),
        _c("cash", "f64", "wallet balance in quote"),
        _c("exposure", "f64", "gross notional of open positions in quote"),
    ),
    "system_events": (
        RUN_ID,
        _c("time", "i64", "UTC ms", required=True),
        _c("severity", "str", "'debug' | 'info' | 'warning' | 'error' | 'critical'", required=True),
        _c("component", "str", "who logged it, e.g. risk, broker, stream, backtest", required=True),
        _c("message", "str", "what happened", required=True),
        _c("data", "json", "structured details"),
    ),
}

#: Tables written per run (everything but ``runs``, which is one row per run).
RUN_TABLES: Final = tuple(t for t in TABLES if t != "runs")

SEVERITIES: Final = ("debug", "info", "warning", "error", "critical")
MODES: Final = ("backtest", "sweep", "paper", "live")
FINAL_STATUSES: Final = ("ok", "failed", "stopped")
ACTIONS: Final = ("long", "short", "flat")
#: ``ensemble_decisions.risk_check`` of a live bar that closed while live mode was down: decided
#: after the restart, logged and not traded (its target is the position kept).
STALE_CHECK: Final = "stale"


def columns(table: str) -> tuple[Column, ...]:
    """The ordered columns of ``table``; raises ValueError naming the known tables."""
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown run-log table {table!r}; tables: {', '.join(TABLES)}") from None


def column_names(table: str) -> list[str]:
    """The ordered column names of ``table``."""
    return [c.name for c in columns(table)]


def polars_schema(table: str) -> dict[str, Any]:
    """``{column: polars dtype}`` for ``table``, in order."""
    return {c.name: c.polars_type() for c in columns(table)}


def describe() -> dict[str, list[list[str]]]:
    """``{table: [[column, logical type], ...]}``: what :data:`VERSION` pins.

    >>> describe()["equity"][:2]
    [['run_id', 'str'], ['time', 'i64']]
    """
    return {t: [[c.name, c.type] for c in cols] for t, cols in TABLES.items()}


def sqlite_ddl(table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``table`` in SQLite (same columns, same order)."""
    cols = ", ".join(f'"{c.name}" {c.sqlite_type}' for c in columns(table))
    key = ", PRIMARY KEY (run_id)" if table == "runs" else ""
    return f'CREATE TABLE IF NOT EXISTS "{table}" ({cols}{key})'
