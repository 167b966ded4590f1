"""Backtests of strategy graphs over stored history, written to the run log.

Public API::

    run_backtest(graph, *, store=None, results=None, log=True, progress=None) -> BacktestResult
    load_market(symbols, interval, *, start, end, store, funding) -> Market
    decide(graph, market, *, results_dir=None, progress=None) -> (Decisions, features)
    client_order_id(run_id, symbol, open_time, leg) -> str
"""

from __future__ import annotations

from engine.backtest.decide import Decisions, decide, decide_symbol
from engine.backtest.market import Market, align, load_market
from engine.backtest.records import client_order_id
from engine.backtest.runner import BacktestResult, run_backtest, sim_config, symbol_specs

__all__ = [
    "BacktestResult",
    "Decisions",
    "Market",
    "align",
    "client_order_id",
    "decide",
    "decide_symbol",
    "load_market",
    "run_backtest",
    "sim_config",
    "symbol_specs",
]
