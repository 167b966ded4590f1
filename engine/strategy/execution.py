"""What a strategy's risk and execution sections mean to the simulator, and its hash.

:func:`sim_config` and :func:`symbol_specs` are what every runner (backtest, sweep, live)
hands the simulator's kernels; :func:`strategy_hash` names a resolved strategy in the log.
The sections need no translation: a strategy's ``execution`` and ``risk`` are the
simulator's settings models, so :func:`sim_config` only puts them together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from engine.sim import SimConfig, SymbolSpec, load_specs
from engine.strategy.graph import StrategyGraph


def sim_config(graph: StrategyGraph) -> SimConfig:
    """The simulator settings of a strategy: its ``execution`` and ``risk`` sections, which
    are the simulator's own models (:mod:`engine.sim.settings`), taken as they are."""
    return SimConfig(execution=graph.config.execution, risk=graph.config.risk)


UNFILTERED_GRID = 1e-8


def symbol_specs(graph: StrategyGraph, specs: list[SymbolSpec] | None = None) -> list[SymbolSpec]:
    """The exchange rules of the symbols: ``specs`` (live mode: the venue's own, read at
    start) or the shipped exchangeInfo snapshot's (the offline default of backtests). With
    ``execution.exchange_filters: false`` the filters are lifted (quantities and prices on a
    1e-8 grid, no min qty/notional, no max qty) while the leverage brackets (maintenance
    margin, liquidation) stay."""
    if specs is None:
        specs = load_specs(list(graph.symbols))
    if graph.config.execution.exchange_filters:
        return specs
    return [
        dataclasses.replace(
            sp,
            tick_size=UNFILTERED_GRID,
            step_size=UNFILTERED_GRID,
            min_qty=0.0,
            max_qty=np.inf,
            market_max_qty=np.inf,
            min_notional=0.0,
        )
        for sp in specs
    ]


def strategy_hash(graph: StrategyGraph) -> str:
    """A stable hash of the resolved strategy (config with params applied, rules resolved)."""
    resolved = graph.resolved()
    resolved.pop("source", None)
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
