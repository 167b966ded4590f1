"""A next version of the run-log schema, applied at test time to show that old files keep working.

It does the three things later issues will do: a new column in the middle of a table
(``orders.algo_id``), a column whose type changes (``model_predictions.label``: i64 -> f64)
and a new table (``funding_payments``). :func:`apply` patches ``engine.runlog.schema`` in place;
tests pass ``monkeypatch.setattr`` (undone after the test), a subprocess passes ``setattr``::

    import future_schema; future_schema.apply(setattr)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.runlog import schema

NEW_COLUMN = ("orders", "algo_id")
RETYPED = ("model_predictions", "label")
NEW_TABLE = "funding_payments"


def future_tables() -> dict[str, tuple[schema.Column, ...]]:
    """The current tables plus the next version's changes."""
    tables = dict(schema.TABLES)
    orders = list(tables["orders"])
    at = [c.name for c in orders].index("client_order_id") + 1
    orders.insert(at, schema.Column("algo_id", "str", False, "the execution algorithm's id"))
    tables["orders"] = tuple(orders)
    tables["model_predictions"] = tuple(
        c._replace(type="f64") if c.name == "label" else c for c in tables["model_predictions"]
    )
    tables[NEW_TABLE] = (
        schema.RUN_ID,
        schema.Column("symbol", "str", True, "symbol"),
        schema.Column("time", "i64", True, "funding time (UTC ms)"),
        schema.Column("rate", "f64", False, "funding rate"),
        schema.Column("amount", "f64", True, "funding paid (negative) or received"),
    )
    return tables


def apply(set_attr: Callable[[Any, str, Any], None]) -> int:
    """Patch ``engine.runlog.schema`` to the next version; return that version."""
    tables = future_tables()
    version = schema.VERSION + 1
    set_attr(schema, "TABLES", tables)
    set_attr(schema, "RUN_TABLES", tuple(t for t in tables if t != "runs"))
    set_attr(schema, "VERSION", version)
    return version
