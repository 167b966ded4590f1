"""What a strategy's risk and execution sections mean to the simulator, and its hash.

:func:`sim_config` and :func:`symbol_specs` are what every runner (backtest, sweep, live)
hands the simulator's kernels; :func:`strategy_hash` names a resolved strategy in the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np

from engine.strategy.graph import StrategyGraph

if TYPE_CHECKING:
    from engine.sim import SimConfig, SymbolSpec


def sim_config(graph: StrategyGraph) -> SimConfig:
    """The simulator options a strategy's risk and execution sections stand for."""
    from engine.sim import SimConfig

    r, e = graph.config.risk, graph.config.execution
    sl, tp = e.stop_loss, e.take_profit
    return SimConfig(
        initial_cash=e.initial_cash,
        leverage=e.leverage,
        margin_mode=e.margin_mode,
        taker_fee=e.taker_fee,
        maker_fee=e.maker_fee,
        slippage_bps=e.slippage_bps,
        entry_order=e.order_type,
        limit_offset_bps=e.limit_offset_bps,
        stop_loss_pct=sl.pct if sl is not None else None,
        stop_loss_atr=sl.atr if sl is not None else None,
        take_profit_pct=tp.pct if tp is not None else None,
        take_profit_atr=tp.atr if tp is not None else None,
        sizing=r.sizing,
        fixed_fraction=r.fraction,
        kelly_fraction=r.kelly_fraction,
        payoff_ratio=r.payoff_ratio,
        max_position_pct=r.max_position_pct,
        max_leverage=r.max_leverage,
        max_exposure_pct=r.max_exposure_pct,
        daily_loss_pct=r.breaker.daily_loss_pct,
        max_drawdown_pct=r.breaker.drawdown_pct,
        max_loss_streak=r.breaker.max_consecutive_losses,
        cooldown_bars=r.breaker.cooldown_bars,
        close_at_end=e.close_at_end,
    )


UNFILTERED_GRID = 1e-8


def symbol_specs(graph: StrategyGraph) -> list[SymbolSpec]:
    """The exchange rules of the symbols; with ``execution.exchange_filters: false`` the
    filters are lifted (quantities and prices on a 1e-8 grid, no min qty/notional, no max
    qty) while the leverage brackets (maintenance margin, liquidation) stay."""
    from engine.sim import load_specs

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
