"""Backtests of strategy graphs over stored history, written to the run log.

Public API::

    run_backtest(graph, *, store=None, results=None, log=True, progress=None) -> BacktestResult

The parts a backtest shares with sweeps and live mode live below it: the market grid,
features and decisions in :mod:`engine.decisions`, the simulator settings in
:mod:`engine.strategy.execution`.
"""

from __future__ import annotations

from engine.backtest.runner import BacktestResult, run_backtest

__all__ = ["BacktestResult", "run_backtest"]
