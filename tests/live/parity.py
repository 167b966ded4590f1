"""Compare a live run with the backtest over the same bars, every column of every table.

Through ``engine query``'s SQL views: ``ensemble_decisions`` (``decisions``), each order's
final state (``orders``), ``trades`` and ``equity``, row by row, NULL for NULL. Numbers
agree to 1e-9, except where the venue rounds what it reports (an order's average fill
price is a decimal string with the symbol's price precision + 3 digits, the wallet one
with 8): there, and in what is computed from them, to that precision. The moment a
stop or target filled is the venue's; the backtest knows only the bar that triggered it.

Columns that name the run and not the decision (``run_id``, the client order id derived
from it, the exchange's order id) are not compared.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.runlog.query import run_query
from engine.sim.specs import load_specs

IDENTITY = {"run_id", "client_order_id", "exchange_order_id"}
BAR_MS = 300_000  # the tests' 5m bars
#: digits of the average fill price the exchange reports (price precision + 3)
AVG_DIGITS = {sp.symbol: sp.price_precision + 3 for sp in load_specs(["BTCUSDT", "ETHUSDT"])}


def q(sql: str, results: Path) -> list[dict[str, Any]]:
    return run_query(sql, results_dir=results).to_pylist()


def _close(a: Any, b: Any, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= tol
    return bool(a == b)


def compare(table: str, live: list[dict[str, Any]], bt: list[dict[str, Any]],
            tol: dict[str, float] | None = None, *, tol_of: Any = None) -> None:
    """Every column of every row (identity columns aside); one assertion listing each
    differing cell. ``tol``: per-column tolerance (default 1e-9); ``tol_of(row, col)``
    overrides it per row."""
    assert len(live) == len(bt), f"{table}: live has {len(live)} rows, the backtest {len(bt)}"
    assert live, f"{table}: no rows to compare"
    cols = [c for c in bt[0] if c not in IDENTITY]
    assert set(cols) == {c for c in live[0] if c not in IDENTITY}, f"{table}: columns differ"
    bad = []
    for i, (a, b) in enumerate(zip(live, bt, strict=True)):
        for c in cols:
            t = (tol_of(b, c) if tol_of is not None else None) or (tol or {}).get(c, 1e-9)
            if callable(t):
                if not t(a[c], b[c]):
                    bad.append(f"row {i} {_key(b)} {c}: live {a[c]!r} backtest {b[c]!r}")
                continue
            if not _close(a[c], b[c], t):
                bad.append(f"row {i} {_key(b)} {c}: live {a[c]!r} backtest {b[c]!r}")
    assert not bad, f"{table}: {len(bad)} cell(s) differ:\n  " + "\n  ".join(bad[:20])


def _in_bar(live: int, bar_open: int) -> bool:
    """A venue time inside the bar opening at ``bar_open``: after its open, up to and
    including its close (the moment a price path ends; live mode maps a fill time to its
    bar the same way)."""
    return bar_open < live <= bar_open + BAR_MS


def _order_tol(row: dict[str, Any], col: str) -> Any:
    """Orders: rounded fill prices (:func:`_price_tol`), and the time a resting order (a
    stop, a target, a limit entry) filled: the venue's, inside the bar whose prices filled
    it, where the backtest (which knows bars, not moments) puts the bar's open time."""
    if col == "updated_at" and (row["leg"] in ("stop", "target") or row["type"] == "limit"):
        return _in_bar
    return _price_tol(row, col)


def _key(row: dict[str, Any]) -> str:
    keys = ("symbol", "open_time", "time", "leg", "type", "entry_time")
    return "(" + ", ".join(f"{k}={row[k]}" for k in keys if k in row) + ")"


def _price_tol(row: dict[str, Any], col: str) -> float | None:
    """Fill prices the exchange rounded, and money computed from them."""
    digits = AVG_DIGITS.get(row.get("symbol") or "", 8)
    if col in ("price", "avg_price", "entry_price", "exit_price"):
        return 0.5 * 10.0**-digits + 1e-9
    if col in ("pnl", "fees"):
        # qty * a price rounded at 10^-digits, twice (entry and exit), fees on both
        return 2.0 * abs(row.get("quantity") or 0.0) * 10.0**-digits + 1e-8
    return None


def compare_runs(live_id: str, bt_id: str, first_live: int, results: Path) -> dict[str, int]:
    """Decisions, final order states, trades and equity of a live run against its backtest
    (over the backtest's bars from ``first_live``). Returns the rows compared per table."""
    last = q(f"SELECT max(open_time) AS t FROM decisions WHERE run_id = '{bt_id}'", results)[0]["t"]

    def rows(table: str, where: str, order: str, run: str) -> list[dict[str, Any]]:
        return q(f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = '{run}' AND {where} "
                 f"ORDER BY {order}", results)

    span = f"open_time >= {first_live} AND open_time <= {last}"
    compare("decisions", rows("decisions", span, "open_time, symbol", live_id),
            rows("decisions", span, "open_time, symbol", bt_id), tol_of=_money_tol)
    # orders: the backtest logs its fills; live also logs the protective orders it canceled
    # and the limit entries that expired (no fill, no backtest row) and the orders of the
    # last bar (they fill after it)
    order_by = "open_time, symbol, leg DESC"
    live_orders = [o for o in rows("orders", f"{span} AND status = 'filled'", order_by, live_id)
                   if not (o["open_time"] == last and o["leg"] in ("entry", "exit"))]
    bt_orders = rows("orders", span, order_by, bt_id)
    compare("orders", live_orders, bt_orders, tol_of=_order_tol)
    unfilled = rows("orders", f"{span} AND status != 'filled'", order_by, live_id)
    for o in unfilled:  # the backtest logs fills only: what never filled has no row there
        assert (o["leg"] in ("stop", "target") and o["status"] in ("canceled", "new")
                or o["type"] == "limit" and o["status"] == "expired"
                or o["open_time"] == last), f"order not filled live: {o}"
    compare("trades",
            rows("trades", f"entry_time > {first_live} AND exit_time <= {last}", "exit_time, symbol", live_id),
            rows("trades", f"entry_time > {first_live} AND exit_time <= {last}", "exit_time, symbol", bt_id),
            tol_of=_price_tol)
    eq_span = f"time >= {first_live} AND time <= {last}"
    compare("equity", rows("equity", eq_span, "time", live_id), rows("equity", eq_span, "time", bt_id),
            tol_of=_money_tol)
    return {"decisions": last, "orders": len(bt_orders)}


def _money_tol(row: dict[str, Any], col: str) -> float | None:
    """The wallet the exchange reports (8 decimals) and what is computed from it."""
    if col in ("equity", "cash"):
        return 1e-8
    return None
