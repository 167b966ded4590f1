"""Everything a report shows about one run, gathered from the run log and the data store."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import EngineError, UsageError

if TYPE_CHECKING:
    import polars as pl

    from engine.runlog import RunLog


@dataclass
class PriceSeries:
    """Price of one symbol for the chart, and where it came from."""

    symbol: str
    times: np.ndarray  # open_time ms
    close: np.ndarray
    source: str  # "store 5m candles" or "decision prices (close at each decision)"


@dataclass
class RunData:
    """The run's row and tables (polars frames in the run-log schema)."""

    run: dict[str, Any]
    equity: pl.DataFrame
    trades: pl.DataFrame
    decisions: pl.DataFrame
    predictions: pl.DataFrame
    events: pl.DataFrame
    metrics: dict[str, Any]
    metrics_source: str
    prices: list[PriceSeries] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return self.run.get("params") or {}

    @property
    def symbols(self) -> list[str]:
        syms = self.params.get("symbols")
        if isinstance(syms, list) and syms:
            return [str(s) for s in syms]
        seen: list[str] = []
        for frame in (self.trades, self.decisions):
            if frame.height:
                for s in frame["symbol"].unique(maintain_order=True).to_list():
                    if s not in seen:
                        seen.append(s)
        return seen


def unknown_run_error(log: RunLog, run_id: str) -> UsageError:
    """The error for an unknown run id, listing the most recent ones."""
    recent = log.recent_runs(10)
    listing = ", ".join(f"{r['run_id']} ({r['mode']}, {r['status']})" for r in recent)
    return UsageError(
        f"unknown run_id {run_id!r} in {log.sqlite_path}",
        hint=(
            f"recent runs: {listing}"
            if recent
            else "the run log is empty: run `engine backtest ...` first"
        )
        + '; list them all with: engine query "SELECT run_id, mode, status FROM runs ORDER BY started_at DESC"',
    )


def _interval_ms(data: RunData) -> int | None:
    from engine.timeutil import interval_ms

    interval = data.params.get("interval")
    if isinstance(interval, str):
        try:
            return interval_ms(interval)
        except UsageError:
            return None
    t = data.equity["time"].to_numpy()
    if t.size > 1:
        d = np.diff(t)
        return int(np.median(d)) if np.all(d > 0) else None
    return None


def _metrics(data: RunData) -> tuple[dict[str, Any], str]:
    stored = data.run.get("metrics")
    if isinstance(stored, dict) and stored:
        return stored, "runs.metrics"
    bar = _interval_ms(data)
    if data.equity.height and bar:
        from engine.metrics import compute_metrics

        eq = data.equity.sort("time")
        exposure = eq["exposure"].to_numpy() if eq["exposure"].null_count() == 0 else None
        closed = data.trades
        fees = float(closed["fees"].fill_null(0).sum()) if closed.height else 0.0
        funding = float(closed["funding"].fill_null(0).sum()) if closed.height else 0.0
        liq = int((closed["exit_reason"] == "liquidation").sum()) if closed.height else 0
        m = compute_metrics(
            times_ms=eq["time"].to_numpy(),
            equity=eq["equity"].to_numpy(),
            trades=closed if closed.height else None,
            bar_interval_ms=bar,
            exposure=exposure,
            funding_total=funding,
            fees_total=fees,
            liquidations=liq,
        )
        return m, "computed from the logged equity and trades (the run stored no metrics)"
    return {}, "none: the run stored no metrics and logged no equity"


def _load_prices(data: RunData, store: str | os.PathLike[str] | None) -> None:
    """Close prices per symbol: from the data store if it has them, else the decision prices."""
    params = data.params
    interval = params.get("interval")
    start, end = params.get("start"), params.get("end")
    if start is None and data.equity.height:
        start = int(data.equity["time"].min())  # type: ignore[arg-type]
    if end is None and data.equity.height:
        end = int(data.equity["time"].max())  # type: ignore[arg-type]
    store_path = store if store is not None else params.get("store")
    for sym in data.symbols:
        reason = ""
        if isinstance(interval, str):
            try:
                from engine.data import load_candles

                candles = load_candles(sym, interval, start=start, end=end, store=store_path)
                data.prices.append(
                    PriceSeries(
                        sym,
                        candles["open_time"].to_numpy(),
                        candles["close"].to_numpy(),
                        f"store {interval} candles ({store_path or 'default store'})",
                    )
                )
                continue
            except EngineError as err:
                reason = err.message
            except ImportError as err:  # the data package is not installed/importable
                reason = str(err)
        else:
            reason = "the run's params name no interval"
        dec = data.decisions.filter(data.decisions["symbol"] == sym).drop_nulls("price")
        if dec.height:
            dec = dec.sort("open_time")
            data.prices.append(
                PriceSeries(
                    sym,
                    dec["open_time"].to_numpy(),
                    dec["price"].to_numpy(),
                    "decision prices (close of each decision bar)",
                )
            )
            data.notes.append(
                f"{sym}: candles not loaded from the store ({reason}); the chart uses the close "
                "prices recorded with the decisions."
            )
        else:
            data.notes.append(
                f"{sym}: no price chart: candles not loaded from the store ({reason}) and the "
                "decisions recorded no prices."
            )


def load_run(
    run_id: str,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
) -> RunData:
    """Gather one run for the report; unknown ``run_id`` raises UsageError listing recent runs."""
    from engine.runlog import RunLog

    with RunLog(results_dir) as log:
        if log.sqlite_path.exists():
            log.reap_abandoned()
        run = log.get_run(run_id)
        if run is None:
            raise unknown_run_error(log, run_id)
        data = RunData(
            run=run,
            equity=log.read(run_id, "equity").sort("time"),
            trades=log.read(run_id, "trades").sort("entry_time"),
            decisions=log.read(run_id, "ensemble_decisions"),
            predictions=log.read(run_id, "model_predictions"),
            events=log.read(run_id, "system_events").sort("time"),
            metrics={},
            metrics_source="",
        )
    data.metrics, data.metrics_source = _metrics(data)
    _load_prices(data, store)
    return data


def finite_or_none(x: Any) -> Any:
    """NaN/inf floats as None (for tables)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
