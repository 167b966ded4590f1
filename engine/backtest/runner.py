"""The backtest runner: graph + data -> decisions -> simulator -> run log -> metrics.

Order of work (nothing is written before every input has been read and checked):

1. candles of every symbol on one grid, funding (:mod:`engine.decisions.market`);
2. features, signals or the ML ensemble (:mod:`engine.decisions.decide`);
3. risk and execution: :func:`engine.sim.simulate` (a decision at the close of bar t fills
   at the open of bar t+1);
4. metrics (:func:`engine.metrics.compute_metrics`);
5. the run log: a ``runs`` row, then decisions, orders, trades, equity, events (and
   snapshots when ``log.snapshots``) in bulk; the run is published when it finishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import paths
from engine.decisions import records
from engine.decisions.decide import decide
from engine.decisions.market import Market, load_graph_market
from engine.decisions.types import Decisions
from engine.metrics import compute_metrics
from engine.ml.summary import event_rows, ml_info, models_metrics
from engine.progress import Progress, step
from engine.runlog import RunLog
from engine.sim import SimResult, simulate
from engine.strategy.execution import sim_config, strategy_hash, symbol_specs
from engine.strategy.graph import StrategyGraph
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import os

#: the steps a run reports through ``progress`` (for a progress bar's total)
STEPS = ("load data", "features and signals", "simulate", "metrics", "write run log")


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """What :func:`run_backtest` returns.

    ``run_id`` is None when the run was not logged (``log=False``).
    """

    run_id: str | None
    metrics: dict[str, Any]
    graph: StrategyGraph
    market: Market
    decisions: Decisions
    sim: SimResult
    timings: dict[str, float]


def simulate_graph(
    graph: StrategyGraph, market: Market, dec: Decisions, features: dict[str, Any]
) -> SimResult:
    """Risk and execution over the decisions (:func:`engine.sim.simulate`)."""

    e = graph.config.execution
    atr = None
    atr_stop = next(
        (s for s in (e.stop_loss, e.take_profit) if s is not None and s.atr is not None), None
    )
    if atr_stop is not None:
        name = f"atr_{atr_stop.atr_period}"
        atr = np.full((market.n_bars, len(market.symbols)), np.nan)
        for j, sym in enumerate(market.symbols):
            atr[market.rows[sym], j] = features[sym][name].to_numpy()
    prob = dec.probability if graph.config.risk.sizing == "kelly" else None
    payoff = dec.extra.get("payoff") if dec.extra else None
    return simulate(
        market.open,
        market.high,
        market.low,
        market.close,
        funding_rate=market.funding_rate if graph.config.data.funding else None,
        direction=dec.direction,
        prob=prob,
        payoff=payoff,
        atr=atr,
        open_time=market.open_time,
        specs=symbol_specs(graph),
        config=sim_config(graph),
    )


def run_backtest(
    graph: StrategyGraph,
    *,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    log: bool = True,
    progress: Progress | None = None,
) -> BacktestResult:
    """Run a strategy graph over stored history and log the run.

    Parameters
    ----------
    graph : from :func:`engine.strategy.load_strategy`.
    store : the data store (default ``$ENGINE_DATA`` or ``./data``).
    results : the results directory for the run log (default ``$ENGINE_RESULTS`` or ``./results``).
    log : write the run log (False: compute only, e.g. for benchmarks and sweeps' inner loops).
    progress : :class:`engine.progress.Progress`, told each step as it starts
        (``progress(step name, steps done, len(STEPS))``, see :data:`STEPS`).

    Raises
    ------
    DataError
        Missing data (the message names symbol, interval and span and how to get it).
    """

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    step(progress, STEPS[0], 0, len(STEPS))
    market = load_graph_market(graph, store=store, progress=progress)
    timings["load"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    step(progress, STEPS[1], 1, len(STEPS))
    dec, features = decide(graph, market, results_dir=results, progress=progress)
    timings["decide"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    step(progress, STEPS[2], 2, len(STEPS))
    res = simulate_graph(graph, market, dec, features)
    timings["simulate"] = time.perf_counter() - t2
    step(progress, STEPS[3], 3, len(STEPS))
    metrics = run_metrics(graph, market, res)
    if dec.ml is not None:
        metrics.update(ml_metrics(dec.ml))
    run_id = None
    if log:
        t3 = time.perf_counter()
        step(progress, STEPS[4], 4, len(STEPS))
        run_id = write_run(graph, market, dec, res, features, metrics, store=store, results=results)
        timings["log"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    return BacktestResult(
        run_id=run_id,
        metrics=metrics,
        graph=graph,
        market=market,
        decisions=dec,
        sim=res,
        timings=timings,
    )


def run_metrics(graph: StrategyGraph, market: Market, res: SimResult) -> dict[str, Any]:
    """Summary metrics of a simulation (:func:`engine.metrics.compute_metrics`)."""

    trades = records.trade_frame(market, res)
    eq = records.equity_frame(market, res)
    fees = float(res.fills["fee"].sum()) if res.fills.size else 0.0
    funding = -float(res.funding["amount"].sum()) if res.funding.size else 0.0
    return compute_metrics(
        times_ms=market.open_time,
        equity=res.equity,
        trades=trades if trades.height else None,
        bar_interval_ms=interval_ms(market.interval),
        exposure=eq["exposure"].to_numpy(),
        funding_total=funding,
        fees_total=fees,
        liquidations=res.liquidations,
    )


def ml_metrics(ml: Any) -> dict[str, Any]:
    """``models`` (per-model walk-forward scores, calibration curve, contribution) and ``ml``
    (versions fitted/reused, folds, timings) of an ML strategy's ensemble result."""

    return {"models": models_metrics(ml), "ml": ml_info(ml)}


def event_frame(market: Market, res: SimResult, dec: Decisions) -> Any:
    """``system_events``: the simulator's (breaker, liquidations) and the ML stage's."""
    import polars as pl


    sim_events = records.event_frame(market, res)
    if dec.ml is None:
        return sim_events

    schema = {
        "time": pl.Int64,
        "severity": pl.Utf8,
        "component": pl.Utf8,
        "message": pl.Utf8,
        "data": pl.Utf8,
    }
    ml_events = pl.DataFrame(event_rows(dec.ml), schema=schema)
    if sim_events.height:
        ml_events = pl.concat([sim_events.select(list(schema)).cast(schema), ml_events])  # type: ignore[arg-type]
    return ml_events.sort("time", maintain_order=True)


def run_params(graph: StrategyGraph, market: Market, *, store: Any) -> dict[str, Any]:
    """The ``runs.params`` document: what the report and a rerun need."""

    return {
        "symbols": list(market.symbols),
        "interval": market.interval,
        "start": int(market.open_time[0]),
        "end": int(market.open_time[-1]),
        "start_utc": fmt_ms(int(market.open_time[0])),
        "end_utc": fmt_ms(int(market.open_time[-1])),
        "bars": market.n_bars,
        "store": str(paths.store_dir(store).resolve()),
        "initial_equity": graph.config.execution.initial_cash,
        "params": dict(graph.config.params),
        "overrides": list(graph.overrides),
        "config": graph.resolved(),
    }


def write_run(
    graph: StrategyGraph,
    market: Market,
    dec: Decisions,
    res: SimResult,
    features: dict[str, Any],
    metrics: dict[str, Any],
    *,
    store: Any,
    results: Any,
) -> str:
    """Write one finished backtest to the run log; returns its ``run_id``."""

    with RunLog(results) as runlog:
        with runlog.run(
            mode="backtest",
            strategy=graph.name,
            params=run_params(graph, market, store=store),
            strategy_hash=strategy_hash(graph),
        ) as run_id:
            frames = {
                "ensemble_decisions": records.decision_frame(market, dec, res),
                "orders": records.order_frame(run_id, market, res),
                "trades": records.trade_frame(market, res),
                "equity": records.equity_frame(market, res),
                "system_events": event_frame(market, res, dec),
            }
            if dec.predictions is not None:
                frames["model_predictions"] = dec.predictions
            if graph.config.log.snapshots:
                frames["snapshots"] = records.snapshot_frame(market, features)
            for table, frame in frames.items():
                if frame.height:
                    runlog.write(run_id, table, frame)
            runlog.finish_run(run_id, status="ok", metrics=metrics)
    return run_id
