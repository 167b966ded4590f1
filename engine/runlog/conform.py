"""Rows into the schema's shape: run ids and stamps, JSON values, and the checks every row passes.

:func:`conform_frame` (bulk, polars) and :func:`conform_row` (one row, SQLite) are the doors of
the run log: unknown columns, missing required columns, values that do not fit their type and
unknown ``action`` / ``severity`` values raise :class:`~engine.errors.RunError` before anything
is written. Optional columns left out are null. A float column takes None (stored as null) and
NaN as given: Parquet keeps NaN, while SQLite itself stores a NaN as NULL.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import RunError, UsageError
from engine.runlog import schema

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "conform_frame",
    "conform_row",
    "dumps_json",
    "features_to_long",
    "new_run_id",
    "now_ms",
]


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
