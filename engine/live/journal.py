"""Live mode's journal: every row it writes, built by the backtest's row builders.

Rows are durable before the engine acts on them (:meth:`engine.runlog.RunLog.append`
commits before it returns): an order's intent (``new``) is in the log before it is sent.
Every row comes from :mod:`engine.decisions.records` (one bar at a time), so a live run and
a backtest of the same bars give the same columns and the same NULLs.

The journal also keeps what the run's summary metrics need (its equity rows, closed
trades, fees and funding), computed at the end by :func:`engine.metrics.compute_metrics`
as a backtest's are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.decisions import records
from engine.decisions.records import OrderEvent
from engine.live.telemetry import Telemetry
from engine.metrics import compute_metrics
from engine.runlog import RunLog


class Journal:
    """The run log of one live run (``run_id``), plus the totals for its metrics."""

    def __init__(self, log: RunLog, run_id: str, telemetry: Telemetry | None = None) -> None:
        self.log = log
        self.run_id = run_id
        self.telemetry = telemetry
        self.equity_times: list[int] = []
        self.equity_values: list[float] = []
        self.exposure: list[float] = []
        self.trades: list[Any] = []  # trade frames
        self.fees_total = 0.0
        self.funding_total = 0.0  # + = received, as trades.funding
        self.liquidations = 0

    def event(self, severity: str, component: str, message: str,
              data: Mapping[str, Any] | None = None, time_ms: int | None = None) -> None:
        self.log.event(self.run_id, severity=severity, component=component, message=message,
                       data=data, time_ms=time_ms)

    def order(self, ev: OrderEvent) -> None:
        """One order state (the intent before it is sent, then each later state)."""
        self.log.append(self.run_id, "orders", records.rows(records.order_event_frame([ev])))
        if self.telemetry is not None:
            self.telemetry.orders.labels(symbol=ev.symbol, status=ev.status).inc()

    def frame(self, table: str, frame: Any) -> None:
        """Rows of a builder's frame (nothing for an empty one)."""
        if frame.height:
            self.log.append(self.run_id, table, records.rows(frame))

    def predictions(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.log.append(self.run_id, "model_predictions", rows)

    def booked(self, recs: dict[str, np.ndarray], symbols: tuple[str, ...], time_ms: int) -> None:
        """What the book recorded over one bar: closed trades (logged), fees and funding
        (kept for the metrics), breaker events (logged, at the bar's open time)."""
        trades = records.trade_rows(symbols, recs["trades"], None)
        if trades.height:
            self.frame("trades", trades)
            self.trades.append(trades)
        if recs["fills"].size:
            self.fees_total += float(recs["fills"]["fee"].sum())
        if recs["funding"].size:
            self.funding_total -= float(recs["funding"]["amount"].sum())
        ev = recs["events"]
        for row in records.breaker_event_rows(ev, np.full(ev.size, time_ms, dtype=np.int64)):
            self.log.append(self.run_id, "system_events", row)

    def equity(self, time_ms: int, equity: float, wallet: float, position: np.ndarray,
               last_close: np.ndarray) -> None:
        """The ``equity`` row at a close (the backtest's builder over a one-row grid)."""
        frame = records.equity_rows(np.array([time_ms]), np.array([equity]), np.array([wallet]),
                                    position[None, :], last_close[None, :])
        self.frame("equity", frame)
        self.equity_times.append(time_ms)
        self.equity_values.append(equity)
        self.exposure.append(float(frame["exposure"][0]))

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
