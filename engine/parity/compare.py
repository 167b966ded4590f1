"""Bar-by-bar comparison of two runs' decisions and fills (plain rows in, counts and
:class:`Mismatch` records out).

Decisions are matched by ``(symbol, open_time)``. On each pair:

- ``action`` differs, or the bar has a decision in one run only: a **decision** mismatch;
- same action, ``target_position`` differs by more than 1e-9: a **size** mismatch;
- same action and target, ``confidence`` or ``probability`` differs (NULL against a
  number, or more than 1e-9 apart): a **value** mismatch.

A live bar that closed while live mode was down is decided after the restart and not traded
(``risk_check = 'stale'``, its target the position kept): it is counted as **stale**, not
compared by action or target (the backtest traded it), only by its values (the features and
models saw the same bar). The positions after it may differ from the backtest's, so later
sizes and fills may too; the actions may not.

Fills (the filled orders, each order's final state) are matched by ``(symbol, open_time,
leg)``: the bar whose decision made the order (for a stop or a target, the bar whose prices
triggered it) and its leg. A fill in one run only, or a pair that differs in side,
quantity (1e-9), price, fee or time, is a **fill** difference:

- price: the venue reports an average fill price with the symbol's price precision + 3
  decimals (:func:`price_tolerance`); the backtest's is unrounded;
- fee: the run log keeps no fee per order (``trades`` rows carry a round trip's fees), so a
  fill's fee is ``quantity * price * rate`` at the run's own ``execution.taker_fee``
  (``maker_fee`` for a limit order), the amount both the simulator and live mode's book
  charge (:func:`fill_fee`); compared to the price's rounding times the quantity and rate;
- time: the backtest knows bars, not moments: it stamps a fill with the open time of the
  bar that filled it, where the venue's moment lies inside that bar (:func:`in_bar`).

>>> live = [{"symbol": "BTCUSDT", "open_time": 0, "action": "long", "target_position": 0.5,
...          "confidence": 1.0, "probability": None}]
>>> bt = [dict(live[0], action="flat", target_position=0.0)]
>>> out = compare_decisions(live, bt)
>>> out.decision, out.size, [(m.kind, m.field, m.live, m.backtest) for m in out.mismatches]
(1, 0, [('decision', 'action', 'long', 'flat')])
>>> compare_decisions([dict(live[0], risk_check="stale")], bt).stale
1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.runlog.schema import STALE_CHECK

#: the order in which kinds are listed (the first is the one that fails a parity check)
KINDS = ("decision", "size", "value", "fill")
#: numbers agree to this, unless a rounding rule says otherwise
TOL = 1e-9
#: decimals of a wallet amount the venue reports; the price digits of an unknown symbol
DEFAULT_DIGITS = 8
#: legs a position's protective orders fill on (their fill bar is the trigger bar)
RESTING_LEGS = ("stop", "target", "liquidation")

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Mismatch:
    """One difference: ``kind`` (see :data:`KINDS`), the bar (``open_time``) and symbol,
    the ``field`` that differs (``missing`` when one run has no such row), and both values."""

    kind: str
    symbol: str
    open_time: int
    field: str
    live: Any
    backtest: Any
    leg: str | None = None

    def sort_key(self) -> tuple[int, int, str, str]:
        return (self.open_time, KINDS.index(self.kind), self.symbol, self.leg or "")

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "symbol": self.symbol, "open_time": self.open_time,
               "field": self.field, "live": _plain(self.live), "backtest": _plain(self.backtest)}
        if self.leg is not None:
            out["leg"] = self.leg
        return out


@dataclass
class Tally:
    """Counts of one comparison and every mismatch found, in bar order."""

    compared: int = 0
    decision: int = 0
    size: int = 0
    value: int = 0
    fill: int = 0
    stale: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def add(self, m: Mismatch) -> None:
        self.mismatches.append(m)


def _plain(v: Any) -> Any:
    """A JSON-ready value (NaN -> None)."""
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def same(a: Any, b: Any, tol: float = TOL) -> bool:
    """NULL only equals NULL; numbers agree to ``tol``; anything else by ``==``.

    >>> same(None, None), same(None, 0.0), same(1.0, 1.0 + 1e-12), same("long", "long")
    (True, False, True, True)
    """
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= tol
    return bool(a == b)


def price_tolerance(digits: int) -> float:
    """How far an average fill price the venue rounded to ``digits`` decimals may be from
    the unrounded one (half a unit in the last place, plus float noise).

    >>> price_tolerance(2 + 3)
    5.001e-06
    """
    return 0.5 * 10.0**-digits + TOL


def in_bar(live_ms: int, bar_open: int, step_ms: int) -> bool:
    """A venue moment inside the bar opening at ``bar_open``: from its open up to and
    including its close (a market order fills at the open, a resting one by the close).

    >>> in_bar(300_000, 300_000, 300_000), in_bar(600_000, 300_000, 300_000), in_bar(600_001, 300_000, 300_000)
    (True, True, False)
    """
    return bar_open <= live_ms <= bar_open + step_ms


def fill_fee(row: Row, *, taker_fee: float, maker_fee: float) -> float:
    """A fill's fee in quote: quantity * price * rate (the maker rate for a limit order).

    >>> fill_fee({"type": "market", "quantity": 2.0, "price": 100.0}, taker_fee=0.0005, maker_fee=0.0002)
    0.1
    """
    rate = maker_fee if row.get("type") == "limit" else taker_fee
    return float(row["quantity"]) * float(row["price"]) * rate


# ---------------------------------------------------------------------------- decisions


def compare_decisions(live: Iterable[Row], backtest: Iterable[Row]) -> Tally:
    """Every ``(symbol, open_time)`` of either side (see the module docstring)."""
    a = {(str(r["symbol"]), int(r["open_time"])): r for r in live}
    b = {(str(r["symbol"]), int(r["open_time"])): r for r in backtest}
    out = Tally()
    for key in sorted(a.keys() | b.keys(), key=lambda k: (k[1], k[0])):
        out.compared += 1
        la, bb = a.get(key), b.get(key)
        sym, t = key
        if la is None or bb is None:
            out.decision += 1
            out.add(Mismatch("decision", sym, t, "missing",
                             None if la is None else la["action"],
                             None if bb is None else bb["action"]))
            continue
        stale = la.get("risk_check") == STALE_CHECK
        out.stale += stale
        if not stale and la["action"] != bb["action"]:
            out.decision += 1
            out.add(Mismatch("decision", sym, t, "action", la["action"], bb["action"]))
        elif not stale and not same(la["target_position"], bb["target_position"]):
            out.size += 1
            out.add(Mismatch("size", sym, t, "target_position", la["target_position"],
                             bb["target_position"]))
        else:
            bad = [c for c in ("confidence", "probability") if not same(la.get(c), bb.get(c))]
            if bad:
                out.value += 1
                for c in bad:
                    out.add(Mismatch("value", sym, t, c, la.get(c), bb.get(c)))
    return out


# ---------------------------------------------------------------------------- fills


@dataclass(frozen=True)
class FillRules:
    """What a fill comparison needs to know about the venue and the runs: the bar length,
    each symbol's price digits as the venue reports fills (price precision + 3), and each
    run's fee rates (``(taker, maker)``)."""

    step_ms: int
    digits: Mapping[str, int]
    live_fees: tuple[float, float]
    backtest_fees: tuple[float, float]

    def price_tol(self, symbol: str) -> float:
        return price_tolerance(self.digits.get(symbol, DEFAULT_DIGITS))


def fills(orders: Iterable[Row]) -> list[dict[str, Any]]:
    """The filled orders among final order states, as fill rows: ``symbol``, ``open_time``,
    ``leg``, ``type``, ``side``, ``time`` (the fill's ``updated_at``), ``quantity`` (filled)
    and ``price`` (average)."""
    out = []
    for o in orders:
        if o["status"] != "filled":
            continue
        qty = o.get("filled_quantity")
        price = o.get("avg_price")
        out.append({
            "symbol": str(o["symbol"]), "open_time": int(o["open_time"]), "leg": str(o["leg"]),
            "type": o["type"], "side": o["side"],
            "time": int(o.get("updated_at") or o["created_at"]),
            "quantity": float(qty if qty is not None else o["quantity"]),
            "price": float(price if price is not None else o["price"]),
        })
    return out


def compare_fills(live: Iterable[Row], backtest: Iterable[Row], rules: FillRules) -> Tally:
    """Fill rows (:func:`fills`) of both runs, pair by pair (see the module docstring)."""
    a = _by_key(live)
    b = _by_key(backtest)
    out = Tally()
    for key in sorted(a.keys() | b.keys(), key=lambda k: (k[1], k[0], k[2])):
        sym, t, leg = key
        out.compared += 1
        la, bb = a.get(key), b.get(key)
        if la is None or bb is None:
            out.fill += 1
            out.add(Mismatch("fill", sym, t, "missing", _brief(la), _brief(bb), leg=leg))
            continue
        bad = _fill_fields(la, bb, rules)
        if bad:
            out.fill += 1
            for c in bad:
                out.add(Mismatch("fill", sym, t, c, la[c], bb[c], leg=leg))
    return out


def _by_key(rows: Iterable[Row]) -> dict[tuple[str, int, str], dict[str, Any]]:
    out: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in rows:
        key = (str(r["symbol"]), int(r["open_time"]), str(r["leg"]))
        if key in out:  # two fills of one leg on one bar (a partial fill and its rest)
            prev = out[key]
            qty = prev["quantity"] + r["quantity"]
            price = (prev["price"] * prev["quantity"] + r["price"] * r["quantity"]) / qty
            out[key] = {**prev, "quantity": qty, "price": price, "time": max(prev["time"], r["time"])}
            continue
        out[key] = dict(r)
    return out


def _brief(r: Row | None) -> str | None:
    if r is None:
        return None
    return f"{r['side']} {r['quantity']:g} @ {r['price']:g}"


def _fill_fields(live: dict[str, Any], bt: dict[str, Any], rules: FillRules) -> list[str]:
    """The fields of a fill pair that differ (the fee is added to both rows first)."""
    tol = rules.price_tol(bt["symbol"])
    live["fee"] = fill_fee(live, taker_fee=rules.live_fees[0], maker_fee=rules.live_fees[1])
    bt["fee"] = fill_fee(bt, taker_fee=rules.backtest_fees[0], maker_fee=rules.backtest_fees[1])
    rate = max(rules.live_fees + rules.backtest_fees)
    bad = []
    if live["side"] != bt["side"]:
        bad.append("side")
    if not same(live["quantity"], bt["quantity"]):
        bad.append("quantity")
    if not same(live["price"], bt["price"], tol):
        bad.append("price")
    if not same(live["fee"], bt["fee"], abs(bt["quantity"]) * tol * rate + TOL):
        bad.append("fee")
    if not in_bar(live["time"], bt["time"], rules.step_ms):
        bad.append("time")
    return bad
