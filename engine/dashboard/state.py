"""What the dashboard shows, as streams of items and replaceable values, and the deltas a
client needs from where it stands.

A :class:`DashState` holds

* **streams** (append-only lists): ``equity`` (``[time, equity]``), ``candles`` (``[symbol,
  open_time, open, high, low, close]``), ``decisions`` (``ensemble_decisions`` rows),
  ``predictions`` (``model_predictions`` rows: each model's probability and weight),
  ``orders`` (``orders`` rows: every order state), ``trades`` (closed trades) and ``events``
  (warnings and errors). Each keeps at most ``cap`` items (the oldest are dropped; a client
  that had not seen them gets the stream again in full);
* **values** (replaced whole): ``run`` (id, mode, strategy, symbols, interval), ``account``
  (equity, PnL), ``positions``, ``breaker``, ``health`` (stream health), ``budget`` (the
  request budget). A value that did not change is not sent again.

Rows come from the run log (:meth:`DashState.add_rows`, one converter for a finished run
and a live one), so a backtest and its live twin look the same. A client's position is a
:class:`Cursor`; :meth:`DashState.delta` returns what it lacks and moves it. Because a
delta is computed when a client is ready to take it, a slow client simply gets fewer,
larger deltas: nothing queues up per client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STREAMS = ("equity", "candles", "decisions", "predictions", "orders", "trades", "events")
VALUES = ("run", "account", "positions", "breaker", "health", "budget")

#: the columns of each run-log table the page reads (nothing else is sent)
COLUMNS: dict[str, tuple[str, ...]] = {
    "decisions": (
        "symbol",
        "open_time",
        "action",
        "target_position",
        "confidence",
        "probability",
        "agreement",
        "uncertainty",
        "expected_value",
        "risk_check",
        "position_size",
        "rejection_reason",
        "price",
    ),
    "predictions": ("symbol", "open_time", "model", "probability", "calibrated", "weight"),
    "orders": (
        "client_order_id",
        "symbol",
        "side",
        "type",
        "quantity",
        "price",
        "status",
        "created_at",
        "open_time",
        "leg",
        "filled_quantity",
        "avg_price",
        "updated_at",
    ),
    "trades": (
        "symbol",
        "side",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "quantity",
        "pnl",
        "fees",
        "exit_reason",
    ),
    "events": ("time", "severity", "component", "message"),
}
#: run-log table -> stream
TABLES = {
    "ensemble_decisions": "decisions",
    "model_predictions": "predictions",
    "orders": "orders",
    "trades": "trades",
    "system_events": "events",
    "equity": "equity",
}


def clean(v: Any) -> Any:
    """A JSON-safe scalar: NaN and infinities become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class Cursor:
    """Where one client stands: the absolute count of each stream's items it has, the
    version of each value."""

    have: dict[str, int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    started: bool = False


class DashState:
    """The dashboard's state (see the module docstring)."""

    def __init__(self, *, cap: int = 20_000) -> None:
        self.cap = cap
        self.items: dict[str, list[Any]] = {k: [] for k in STREAMS}
        self.base: dict[str, int] = dict.fromkeys(STREAMS, 0)  # items dropped from the front
        self.values: dict[str, Any] = {}
        self.version: dict[str, int] = dict.fromkeys(VALUES, 0)
        self.seq = 0  # bumped on every change: a client at this seq has nothing to take

    # ------------------------------------------------------------------ writes

    def append(self, stream: str, items: Iterable[Any]) -> None:
        lst = self.items[stream]
        n = len(lst)
        lst.extend(items)
        if len(lst) == n:
            return
        over = len(lst) - self.cap
        if over > 0:
            del lst[:over]
            self.base[stream] += over
        self.seq += 1

    def set(self, name: str, value: Any) -> None:
        """Replace value ``name`` (nothing happens when it is equal to the one held)."""
        if self.values.get(name) == value:
            return
        self.values[name] = value
        self.version[name] += 1
        self.seq += 1

    def add_rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Run-log rows of ``table`` (``ensemble_decisions``, ``model_predictions``,
        ``orders``, ``trades``, ``system_events``, ``equity``) into their stream."""
        stream = TABLES[table]
        if stream == "equity":
            self.append("equity", ([int(r["time"]), clean(r["equity"])] for r in rows))
            return
        cols = COLUMNS[stream]
        if stream == "events":
            rows = (r for r in rows if r.get("severity") in ("warning", "error"))
        self.append(stream, ({c: clean(r.get(c)) for c in cols} for r in rows))

    def add_candles(
        self, symbol: str, rows: Iterable[tuple[int, float, float, float, float]]
    ) -> None:
        self.append(
            "candles",
            ([symbol, int(t), clean(o), clean(h), clean(lo), clean(c)] for t, o, h, lo, c in rows),
        )

    # ------------------------------------------------------------------ reads

    def delta(self, cur: Cursor) -> dict[str, Any] | None:
        """What client ``cur`` lacks (a ``snapshot`` the first time, then ``delta``s; None:
        nothing new), moving ``cur`` past it."""
        first = not cur.started
        append: dict[str, list[Any]] = {}
        reset: list[str] = []
        for s in STREAMS:
            lst, base = self.items[s], self.base[s]
            end = base + len(lst)
            have = cur.have.get(s, 0)
            if have == end and not first:
                continue
            if have < base or have > end:  # it lost items dropped from the front: all again
                reset.append(s)
                have = base
            if have < end or first:
                append[s] = lst[have - base :]
            cur.have[s] = end
        values = {}
        for name in VALUES:
            v = self.version[name]
            if cur.seen.get(name, 0) != v and name in self.values:
                values[name] = self.values[name]
            cur.seen[name] = v
        if not first and not append and not values:
            return None
        cur.started = True
        if first:
            return {"type": "snapshot", "append": append, "set": values}
        msg: dict[str, Any] = {"type": "delta", "append": append, "set": values}
        if reset:
            msg["reset"] = reset
        return msg
