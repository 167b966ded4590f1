"""Futures portfolio simulator and risk manager (numba step kernels).

Public API
----------
- :func:`simulate` — batch backtest over ``[n_bars, n_symbols]`` arrays -> :class:`SimResult`.
- :class:`SimConfig` — the validated settings: :class:`ExecutionSettings` (orders, leverage, margin
  mode, fees, slippage, stops, filters, cash) and :class:`RiskSettings` (sizing, caps, breaker),
  the strategy file's ``execution`` and ``risk`` sections (:mod:`engine.sim.settings`).
- :func:`load_specs` / :class:`SymbolSpec` — exchange filters and leverage brackets per symbol.
- Enums: :data:`FillKind`, :data:`OrderType`, :data:`Reason`, :data:`BreakerEvent`, :data:`MarginMode`, :data:`Sizing`.
- Step kernels for callers that drive one bar or one order at a time (the exchange simulator):
  :mod:`engine.sim.accounting` (pure formulas), :mod:`engine.sim.steps` (account updates),
  :mod:`engine.sim.risk` (sizing and breaker), :mod:`engine.sim.loop` (the bar phases).

Numba is imported by the kernel modules only; ``import engine.sim`` stays light and the
kernels compile (or load from cache) on the first :func:`simulate` call.
"""

from __future__ import annotations

from engine.sim.api import SimResult, simulate
from engine.sim.config import SimConfig, SimParams
from engine.sim.enums import (
    BreakerEvent,
    FillKind,
    MarginMode,
    OrderCheck,
    OrderType,
    Reason,
    Side,
    Sizing,
)
from engine.sim.settings import BreakerSettings, ExecutionSettings, RiskSettings, StopSettings
from engine.sim.specs import SpecArrays, SymbolSpec, load_specs, spec_arrays

__all__ = [
    "BreakerEvent",
    "BreakerSettings",
    "ExecutionSettings",
    "FillKind",
    "MarginMode",
    "OrderCheck",
    "OrderType",
    "Reason",
    "RiskSettings",
    "Side",
    "SimConfig",
    "SimParams",
    "SimResult",
    "Sizing",
    "SpecArrays",
    "StopSettings",
    "SymbolSpec",
    "load_specs",
    "simulate",
    "spec_arrays",
]
