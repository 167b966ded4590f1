"""Every run-log row both modes write: decisions, orders, trades, equity, events.

One builder per table, over arrays: a backtest calls it once over whole runs
(``[n_bars, n_symbols]`` grids, the simulator's record arrays), live mode once per closed
bar (one-row grids, the records its mirror of the simulator's account wrote for that bar).
Both get the same columns in the same order with the same types, and the same
missing-value rule: a value that does not exist (a rule strategy's probability, the
position size of a zero equity, a price a market order never had) is NULL, never NaN, in
every mode and every table (:func:`table_frame`).

Times: a bar's ``open_time`` names the decision made at its close. The simulator's record
arrays count bars; ``bar_time`` maps a bar to its open time (a backtest passes its grid's
``open_time``; live mode books its records with the bar's open time as the bar, and passes
None).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.decisions.codes import ACTION, EXIT_REASON, LEG, ORDER_TYPE, REASON, client_order_id
from engine.runlog import features_to_long
from engine.runlog.schema import TABLES
from engine.sim.enums import BreakerEvent, FillKind, Reason, names
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import polars as pl

    from engine.decisions.market import Market
    from engine.decisions.types import Decisions
    from engine.sim import SimResult

#: reasons that mean "the strategy wanted a position and risk said no"
REJECTING = (Reason.BREAKER, Reason.FILTER, Reason.EDGE)
#: reason code -> its name (None for NONE), for vectorised lookups
REASON_OR_NONE = np.array([None] + [REASON.get(i, str(i)) for i in range(1, max(REASON) + 1)],
                          dtype=object)


def table_frame(table: str, columns: dict[str, Any]) -> pl.DataFrame:
    """The rows of ``table`` (``run_id`` aside) from equal-length columns.

    Every column of the schema, in its order and type: one not given is NULL throughout, a
    NaN in a float column is NULL (the missing-value rule), and so is a NaN in a float array
    given for an integer column (labels). Unknown names are an error.

    >>> table_frame("equity", {"time": [0], "equity": [1.0], "cash": [float("nan")]}).row(0)
    (0, 1.0, None, None)
    """
    import polars as pl

    cols = _columns_of(table, columns)
    n = len(next(iter(columns.values()))) if columns else 0
    series = []
    for c in cols:
        dtype = c.polars_type()
        v = columns.get(c.name)
        if v is None:
            s = pl.Series(c.name, [None] * n, dtype=dtype)
        elif c.type == "f64" or (c.type == "i64" and isinstance(v, np.ndarray) and v.dtype.kind == "f"):
            # a float column, or integers carried as floats with NaN for missing (labels)
            s = pl.Series(c.name, np.asarray(v, dtype=np.float64), dtype=pl.Float64,
                          nan_to_null=True).cast(dtype)
        else:
            if isinstance(v, np.ndarray) and v.dtype == object:
                v = v.tolist()
            s = pl.Series(c.name, v, dtype=dtype, strict=False)
        series.append(s)
    return pl.DataFrame(series)


def _columns_of(table: str, columns: dict[str, Any]) -> list[Any]:
    """The schema columns of ``table`` but ``run_id``; an unknown name in ``columns`` is an
    error."""
    cols = [c for c in TABLES[table] if c.name != "run_id"]
    unknown = set(columns) - {c.name for c in cols}
    if unknown:
        raise ValueError(f"{table}: no such column(s) {sorted(unknown)}")
    return cols


_DECISION_COLUMNS = frozenset(c.name for c in TABLES["ensemble_decisions"])
_ACTION_NAMES = np.array([ACTION[-1], ACTION[0], ACTION[1]], dtype=object)
_REASON_NAMES = np.array(["pass"] + [REASON.get(i, str(i)) for i in range(1, max(REASON) + 1)],
                         dtype=object)

#: a value of each logical type as :func:`table_frame`'s column gives it back (None stays)
_PY = {"str": str, "json": str, "i64": int, "bool": bool}


def table_rows(table: str, columns: dict[str, Any]) -> list[dict[str, Any]]:
    """``table_frame(table, columns).to_dicts()`` without building a frame: live mode's
    few rows per bar (a polars frame costs ~0.5 ms to build whatever its length). The same
    rules: every schema column in order, NULL when not given, a NaN float is NULL
    (``tests/decisions/test_records.py`` holds the two equal).

    >>> table_rows("equity", {"time": [0], "equity": [1.0], "cash": [float("nan")]})
    [{'time': 0, 'equity': 1.0, 'cash': None, 'exposure': None}]
    """
    cols = _columns_of(table, columns)
    n = len(next(iter(columns.values()))) if columns else 0
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for c in cols:
        v = columns.get(c.name)
        if v is None:
            for r in out:
                r[c.name] = None
            continue
        vals = v.tolist() if isinstance(v, np.ndarray) else list(v)
        if c.type == "f64":
            for r, x in zip(out, vals, strict=True):
                r[c.name] = None if x is None or x != x else float(x)
        elif c.type == "i64":
            for r, x in zip(out, vals, strict=True):
                r[c.name] = None if x is None or x != x else int(x)
        else:
            cast = _PY[c.type]
            for r, x in zip(out, vals, strict=True):
                r[c.name] = None if x is None else cast(x)
    return out


def rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as dicts (what :meth:`engine.runlog.RunLog.append` takes)."""
    return frame.to_dicts()


# ---------------------------------------------------------------------------- decisions


def decision_columns(
    symbols: Sequence[str],
    open_time: np.ndarray,
    has_bar: np.ndarray,
    close: np.ndarray,
    dec: Decisions,
    target: np.ndarray,
    reason: np.ndarray,
    equity: np.ndarray,
) -> dict[str, np.ndarray]:
    """``ensemble_decisions`` columns: one row per bar and symbol that has a bar, symbol by
    symbol (empty: no symbol had a bar).

    Grids are ``[n, S]`` (``open_time``/``equity`` ``[n]``): the decisions, the risk
    manager's ``target`` and ``reason`` codes and the equity at each close. A backtest makes
    a frame of them (:func:`decision_frame`), live mode a bar's rows (:func:`table_rows`).
    """
    if not len(symbols):
        return {}
    # symbol by symbol: a grid's [n, S] values in the order of its transpose's rows
    mask = has_bar.T
    syms, rows = np.nonzero(mask)

    def pick(a: np.ndarray) -> np.ndarray:
        return a.T[mask]

    tgt, st, rs = pick(target), pick(dec.state).astype(np.int64), pick(reason)
    eq, px = equity[rows], pick(close)
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.where(eq > 0, np.abs(tgt) * px / eq, np.nan)
    rejected = (st != 0) & np.isin(rs, REJECTING) & (tgt == 0)
    cols: dict[str, Any] = {
        "symbol": np.array(symbols, dtype=object)[syms],
        "open_time": open_time[rows],
        "action": _ACTION_NAMES[st + 1],
        "target_position": tgt,
        "confidence": pick(dec.confidence),
        "probability": pick(dec.probability),
        "risk_check": _REASON_NAMES[rs],
        "position_size": size,
        "rejection_reason": np.where(rejected, REASON_OR_NONE[rs], None),
        "price": px,
    }
    for name, arr in dec.extra.items():
        # only the log's own columns (the Kelly payoff feeds the simulator, not the log); an
        # extra named like a column wins: the ML slot logs the fused P(up) as
        # ``probability`` while the simulator's Kelly p is the chosen side's probability
        if name in _DECISION_COLUMNS:
            cols[name] = pick(arr)
    return cols


def decision_frame(market: Market, dec: Decisions, res: SimResult) -> pl.DataFrame:
    """A backtest's ``ensemble_decisions`` (:func:`decision_columns` over the whole grid)."""
    import polars as pl

    cols = decision_columns(market.symbols, market.open_time, market.has_bar, market.close, dec,
                            res.target_qty, res.reason, res.equity)
    return table_frame("ensemble_decisions", cols) if cols else pl.DataFrame()


# ---------------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One state of one order: a row of the append-only ``orders`` log.

    ``open_time`` is the bar whose close decided the order (for stop and target fills: the
    bar that triggered them); ``created_at`` when its intent was made, ``updated_at`` when
    it reached this ``status``.
    """

    client_order_id: str
    symbol: str
    side: str
    type: str
    quantity: float
    status: str
    created_at: int
    open_time: int
    leg: str
    reduce_only: bool
    updated_at: int
    price: float | None = None
    exchange_order_id: str | None = None
    filled_quantity: float | None = None
    avg_price: float | None = None
    message: str | None = None

    def to(self, status: str, updated_at: int, **changes: Any) -> OrderEvent:
        """The same order in a later state."""
        return dataclasses.replace(self, status=status, updated_at=updated_at, **changes)


_ORDER_FIELDS = tuple(f.name for f in dataclasses.fields(OrderEvent))


def order_event_columns(events: Sequence[OrderEvent]) -> dict[str, list[Any]]:
    """``orders`` columns of order events (live mode: :func:`table_rows` of them)."""
    return {k: [getattr(e, k) for e in events] for k in _ORDER_FIELDS}


def _decision_bar(market: Market, fill_bar: np.ndarray, sym_idx: np.ndarray) -> np.ndarray:
    """The bar whose close made an entry/exit order: the symbol's previous bar before the fill."""
    out = np.empty_like(fill_bar)
    for k in range(fill_bar.size):
        j, b = int(sym_idx[k]), int(fill_bar[k]) - 1
        while b > 0 and not market.has_bar[b, j]:
            b -= 1
        out[k] = max(b, 0)
    return out


def _protective(kind: np.ndarray) -> np.ndarray:
    return (kind == FillKind.STOP) | (kind == FillKind.TARGET)


def _armed_at(fill_time: np.ndarray, sym: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """When each fill's stop/target order was placed: at the symbol's last entry fill
    before it (an entry arms new levels; live mode places the orders right after it)."""
    out = fill_time.copy()
    last: dict[int, int] = {}
    for k in range(fill_time.size):
        s = int(sym[k])
        if kind[k] == FillKind.ENTRY:
            last[s] = int(fill_time[k])
        elif kind[k] in (FillKind.STOP, FillKind.TARGET):
            out[k] = last.get(s, int(fill_time[k]))
    return out


def order_frame(run_id: str, market: Market, res: SimResult) -> pl.DataFrame:
    """A backtest's ``orders``: one filled order per simulator fill, with its client id."""
    import polars as pl

    f = res.fills
    if f.size == 0:
        return pl.DataFrame()
    step = interval_ms(market.interval)
    kind = f["kind"]
    on_decision = (kind == FillKind.ENTRY) | (kind == FillKind.EXIT)
    dbar = np.where(on_decision, _decision_bar(market, f["bar"], f["symbol"]), f["bar"])
    fill_time = market.open_time[f["bar"]]
    # decision fills are sent at the close of the decision bar (= open of the next bar);
    # stop/target/liquidation orders trigger inside the fill bar (its open time stands for it)
    created = np.where(on_decision, market.open_time[dbar] + step, fill_time)
    created = np.where(kind == FillKind.END, market.open_time[f["bar"]] + step, created)
    created = np.where(_protective(kind), _armed_at(fill_time, f["symbol"], kind), created)
    symbols = np.array(market.symbols, dtype=object)[f["symbol"]]
    legs = [LEG[int(k)] for k in kind]
    dtimes = market.open_time[dbar]
    ids = [client_order_id(run_id, s, t, leg) for s, t, leg in zip(symbols, dtimes, legs, strict=True)]
    return table_frame("orders", {
        "client_order_id": ids,
        "symbol": symbols.tolist(),
        "side": np.where(f["side"] > 0, "buy", "sell").tolist(),
        "type": [ORDER_TYPE[int(t)] for t in f["order_type"]],
        "quantity": f["qty"],
        "price": f["price"],
        "status": ["filled"] * f.size,
        "created_at": created,
        "open_time": dtimes,
        "leg": legs,
        "filled_quantity": f["qty"],
        "avg_price": f["price"],
        "reduce_only": (kind != FillKind.ENTRY),
        "updated_at": np.maximum(fill_time, created),
    })


# ---------------------------------------------------------------------------- trades, equity


def trade_rows(symbols: Sequence[str], trades: np.ndarray, bar_time: np.ndarray | None) -> pl.DataFrame:
    """``trades``: closed round trips from the simulator's trade records (``TRADE_DTYPE``);
    funding's sign flipped to the log's "+ = received"."""
    import polars as pl

    if trades.size == 0:
        return pl.DataFrame()
    t = trades

    def when(bars: np.ndarray) -> np.ndarray:
        return bars if bar_time is None else bar_time[bars]

    return table_frame("trades", {
        "symbol": np.array(symbols, dtype=object)[t["symbol"]].tolist(),
        "side": np.where(t["side"] > 0, "long", "short").tolist(),
        "entry_time": when(t["entry_bar"]),
        "exit_time": when(t["exit_bar"]),
        "entry_price": t["entry_price"],
        "exit_price": t["exit_price"],
        "quantity": t["qty"],
        "pnl": t["pnl"],
        "fees": t["fees"],
        "funding": -t["funding"],
        "exit_reason": [EXIT_REASON[int(k)] for k in t["exit_kind"]],
    })


def trade_frame(market: Market, res: SimResult) -> pl.DataFrame:
    """A backtest's ``trades`` (:func:`trade_rows` over the run's trade records)."""
    return trade_rows(market.symbols, res.trades, market.open_time)


def equity_rows(
    times: np.ndarray, equity: np.ndarray, wallet: np.ndarray, position: np.ndarray,
    close: np.ndarray,
) -> pl.DataFrame:
    """``equity``: equity, wallet and gross exposure (``sum |position| * last close``) at
    each close; ``position``/``close`` are ``[n, S]`` (a NaN close: the symbol's last one)."""
    exposure = np.nansum(np.abs(position) * _ffill(close), axis=1)
    return table_frame("equity", {"time": times, "equity": equity, "cash": wallet,
                                  "exposure": exposure})


def equity_frame(market: Market, res: SimResult) -> pl.DataFrame:
    """A backtest's ``equity`` (:func:`equity_rows` over every bar)."""
    return equity_rows(market.open_time, res.equity, res.wallet, res.position, market.close)


# ---------------------------------------------------------------------------- events


def breaker_event_rows(events: np.ndarray, bar_time: np.ndarray) -> list[dict[str, Any]]:
    """``system_events`` of the circuit breaker's trips and resets (``EVENT_DTYPE`` records;
    ``bar_time[k]``: the open time of event k's bar)."""
    out: list[dict[str, Any]] = []
    code_names = names(BreakerEvent)
    for e, t in zip(events, bar_time, strict=True):
        code, t = int(e["code"]), int(t)
        what = code_names.get(code, str(code))
        if code == BreakerEvent.RESET:
            msg, sev = f"circuit breaker reset at {fmt_ms(t)}: new entries allowed", "info"
        else:
            msg = (f"circuit breaker tripped ({what}, {float(e['value']):.4g}) at {fmt_ms(t)}: "
                   "new entries halted")
            sev = "warning"
        out.append({"time": t, "severity": sev, "component": "risk", "message": msg,
                    "data": json.dumps({"event": what, "value": float(e["value"]),
                                        "bar": int(e["bar"])})})
    return out


def event_frame(market: Market, res: SimResult) -> pl.DataFrame:
    """A backtest's ``system_events``: breaker trips/resets and liquidations."""
    import polars as pl

    ev = res.events
    bars = np.minimum(ev["bar"], market.n_bars - 1) if ev.size else np.empty(0, dtype=np.int64)
    out = breaker_event_rows(ev, market.open_time[bars])
    f = res.fills
    for k in np.flatnonzero(f["kind"] == FillKind.LIQUIDATION) if f.size else []:
        sym = market.symbols[int(f["symbol"][k])]
        qty, price = float(f["qty"][k]), float(f["price"][k])
        out.append({
            "time": int(market.open_time[int(f["bar"][k])]), "severity": "warning",
            "component": "sim", "message": f"{sym} position of {qty:g} liquidated at {price:g}",
            "data": json.dumps({"symbol": sym, "qty": qty, "price": price}),
        })
    if not out:
        return pl.DataFrame()
    return pl.DataFrame(out).sort("time", maintain_order=True)


def snapshot_frame(market: Market, features: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """``snapshots`` (long form): every feature of every bar (opt-in: ``log.snapshots: true``)."""
    import polars as pl

    parts = [features_to_long(df, symbol=sym) for sym, df in features.items() if df.width > 1]
    return pl.concat(parts) if parts else pl.DataFrame()


def _ffill(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    for j in range(out.shape[1]):
        col = out[:, j]
        mask = np.isnan(col)
        if mask.any():
            idx = np.where(~mask, np.arange(col.size), 0)
            np.maximum.accumulate(idx, out=idx)
            col[:] = col[idx]
    return out
