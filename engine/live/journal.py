"""Live mode's journal: every row it writes, built by the backtest's row builders.

Rows are durable before the engine acts on them (:meth:`engine.runlog.RunLog.append`
commits before it returns): an order's intent (``new``) is in the log before it is sent.
Every row comes from :mod:`engine.decisions.records` (one bar at a time), so a live run and
a backtest of the same bars give the same columns and the same NULLs.

A resumed run first reads what its log already holds (:meth:`Journal.resume`): a row the
restart would write again (the bar it was in the middle of) is skipped, so every bar keeps
exactly one decision row per symbol, one equity row, each trade once and each order state
once, across any number of crashes.

The journal also keeps what the run's summary metrics need (its equity rows, closed
trades, fees and funding), computed at the end by :func:`engine.metrics.compute_metrics`
as a backtest's are. Text it logs passes :func:`engine.live.options.redact`: the API key and
secret never reach the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from engine.decisions import records
from engine.decisions.records import OrderEvent
from engine.live.options import redact
from engine.live.telemetry import Telemetry
from engine.metrics import compute_metrics
from engine.runlog import RunLog


class Journal:
    """The run log of one live run (``run_id``), plus the totals for its metrics."""

    def __init__(self, log: RunLog, run_id: str, telemetry: Telemetry | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        self.log = log
        self.run_id = run_id
        self.telemetry = telemetry
        self.secrets = secrets
        self.equity_times: list[int] = []
        self.equity_values: list[float] = []
        self.exposure: list[float] = []
        self.trades: list[Any] = []  # trade frames
        self.fees_total = 0.0
        self.funding_total = 0.0  # + = received, as trades.funding
        self.liquidations = 0
        self.seen: dict[str, set[Any]] = {}  # keys of rows a resumed run's log already holds

    # ------------------------------------------------------------------ resume

    def resume(self) -> None:
        """Read what the run's log holds: the rows not to write twice, and the equity and
        trades its metrics are computed over."""
        read = self.log.read
        rid = self.run_id
        eq = read(rid, "equity").sort("time")
        self.equity_times = eq["time"].to_list()
        self.equity_values = eq["equity"].to_list()
        self.exposure = [float("nan") if x is None else x for x in eq["exposure"].to_list()]
        tr = read(rid, "trades")
        self.trades = [tr.drop("run_id")] if tr.height else []
        orders = read(rid, "orders")
        ev = read(rid, "system_events")
        self.seen = {
            "ensemble_decisions": set(read(rid, "ensemble_decisions")["open_time"].to_list()),
            "model_predictions": set(read(rid, "model_predictions")["open_time"].to_list()),
            "snapshots": set(read(rid, "snapshots")["open_time"].to_list()),
            "equity": set(self.equity_times),
            "trades": set(zip(tr["symbol"].to_list(), tr["entry_time"].to_list(),
                              tr["exit_time"].to_list(), strict=True)),
            "orders": set(zip(orders["client_order_id"].to_list(), orders["status"].to_list(),
                              strict=True)),
            "events": set(zip(ev["component"].to_list(), ev["time"].to_list(),
                              ev["message"].to_list(), strict=True)),
        }

    def totals(self) -> dict[str, float]:
        """The running totals a checkpoint keeps (fees, funding, liquidations)."""
        return {"fees": self.fees_total, "funding": self.funding_total,
                "liquidations": float(self.liquidations)}

    def restore_totals(self, totals: Mapping[str, float]) -> None:
        self.fees_total = float(totals.get("fees", 0.0))
        self.funding_total = float(totals.get("funding", 0.0))
        self.liquidations = int(totals.get("liquidations", 0))

    def _new(self, table: str, key: Any) -> bool:
        """False when a resumed run's log already holds this row."""
        return key not in self.seen.get(table, ())

    # ------------------------------------------------------------------ rows

    def event(self, severity: str, component: str, message: str,
              data: Mapping[str, Any] | None = None, time_ms: int | None = None, *,
              once: bool = False) -> None:
        """One ``system_events`` row; ``once``: not when a resumed run's log holds the same
        (component, time, message) already (a summary a restart writes again)."""
        if once and not self._new("events", (component, time_ms, message)):
            return
        if self.secrets:
            message = redact(message, self.secrets)
            text = json.dumps(dict(data), default=str) if data is not None else ""
            if any(s and len(s) >= 4 and s in text for s in self.secrets):  # as redact()
                data = {"redacted": redact(text, self.secrets)}
        self.log.event(self.run_id, severity=severity, component=component, message=message,
                       data=data, time_ms=time_ms)

    def order(self, ev: OrderEvent) -> None:
        """One order state (the intent before it is sent, then each later state)."""
        if not self._new("orders", (ev.client_order_id, ev.status)):
            return
        if ev.message and self.secrets:
            ev = ev.to(ev.status, ev.updated_at, message=redact(ev.message, self.secrets))
        self.log.append(self.run_id, "orders",
                        records.table_rows("orders", records.order_event_columns([ev])))
        if self.telemetry is not None:
            self.telemetry.orders.labels(symbol=ev.symbol, status=ev.status).inc()

    def frame(self, table: str, frame: Any) -> None:
        """Rows of a builder's frame (nothing for an empty one)."""
        if frame.height:
            self.log.append(self.run_id, table, records.rows(frame))

    def decisions(self, t: int, rows: list[dict[str, Any]]) -> bool:
        """Bar ``t``'s ``ensemble_decisions`` rows; False when the log already had them."""
        if not rows or not self._new("ensemble_decisions", t):
            return False
        self.log.append(self.run_id, "ensemble_decisions", rows)
        return True

    def per_bar(self, table: str, t: int, rows: Callable[[], list[dict[str, Any]]]) -> None:
        """``model_predictions`` or ``snapshots`` rows of bar ``t`` (once per bar): ``rows()``
        makes them, only when the log does not hold them (a resumed run replays its bars)."""
        if self._new(table, t) and len(made := rows()):
            self.log.append(self.run_id, table, made)

    def booked(self, recs: dict[str, np.ndarray], symbols: tuple[str, ...], time_ms: int) -> None:
        """What the book recorded over one bar: closed trades (logged), fees and funding
        (kept for the metrics), breaker events (logged, at the bar's open time)."""
        import polars as pl

        trades = records.trade_rows(symbols, recs["trades"], None)
        if trades.height and self.seen.get("trades"):
            keys = list(zip(trades["symbol"].to_list(), trades["entry_time"].to_list(),
                            trades["exit_time"].to_list(), strict=True))
            trades = trades.filter(pl.Series([k not in self.seen["trades"] for k in keys]))
        if trades.height:
            self.frame("trades", trades)
            self.trades.append(trades)
        if recs["fills"].size:
            self.fees_total += float(recs["fills"]["fee"].sum())
        if recs["funding"].size:
            self.funding_total -= float(recs["funding"]["amount"].sum())
        ev = recs["events"]
        for row in records.breaker_event_rows(ev, np.full(ev.size, time_ms, dtype=np.int64)):
            if self._new("events", ("risk", row["time"], row["message"])):
                self.log.append(self.run_id, "system_events", row)

    def equity(self, time_ms: int, equity: float, wallet: float, position: np.ndarray,
               last_close: np.ndarray) -> None:
        """The ``equity`` row at a close (the backtest's builder over a one-row grid)."""
        if not self._new("equity", time_ms):
            return
        frame = records.equity_rows(np.array([time_ms]), np.array([equity]), np.array([wallet]),
                                    position[None, :], last_close[None, :])
        self.frame("equity", frame)
        self.equity_times.append(time_ms)
        self.equity_values.append(equity)
        self.exposure.append(float(frame["exposure"][0]))

    def filled_orders(self) -> int:
        """Orders of the whole run (every process of it) that reached ``filled``."""
        import polars as pl

        orders = self.log.read(self.run_id, "orders")
        return int(orders.filter(pl.col("status") == "filled")["client_order_id"].n_unique())

    def metrics(self, bar_interval_ms: int) -> dict[str, Any]:
        """:func:`engine.metrics.compute_metrics` over the rows logged so far (as a backtest's);
        empty before the first bar."""
        if not self.equity_times:
            return {}
        import polars as pl

        trades = pl.concat(self.trades) if self.trades else None
        return compute_metrics(
            times_ms=np.array(self.equity_times, dtype=np.int64),
            equity=np.array(self.equity_values, dtype=np.float64),
            trades=trades, bar_interval_ms=bar_interval_ms,
            exposure=np.array(self.exposure, dtype=np.float64),
            funding_total=self.funding_total, fees_total=self.fees_total,
            liquidations=self.liquidations,
        )
