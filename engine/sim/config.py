"""Simulator configuration: the validated settings and the scalar tuple kernels take."""

from __future__ import annotations

import math
from typing import NamedTuple

from pydantic import Field, model_validator

from engine.sim.enums import MarginMode, OrderType, Sizing
from engine.sim.settings import (
    Bool,
    ExecutionSettings,
    FrozenModel,
    RiskSettings,
    check_leverage_cap,
)


class SimParams(NamedTuple):
    """:class:`SimConfig` as numba-friendly scalars (NaN / 0 where a feature is off)."""

    initial_cash: float
    leverage: float
    margin_mode: int
    taker_fee: float
    maker_fee: float
    slippage_bps: float
    entry_type: int
    limit_offset_bps: float
    stop_pct: float
    target_pct: float
    stop_atr: float
    target_atr: float
    sizing: int
    fixed_fraction: float
    kelly_fraction: float
    payoff_ratio: float
    max_position_pct: float
    max_leverage: float
    max_exposure_pct: float
    daily_loss_pct: float
    max_drawdown_pct: float
    max_loss_streak: int
    cooldown_bars: int
    rebalance: bool
    close_at_end: bool


class SimConfig(FrozenModel):
    """How the portfolio simulator trades and how the risk manager sizes.

    The strategy file's ``execution`` and ``risk`` sections (:mod:`engine.sim.settings`, where
    every field, default and range is documented), plus ``rebalance``, which only code sets:
    re-size an open position to each bar's target instead of holding it.

    Example
    -------
    >>> cfg = SimConfig(execution=ExecutionSettings(leverage=3, stop_loss={"pct": 2}))
    >>> cfg.execution.leverage, cfg.risk.fraction, cfg.to_params().stop_pct
    (3.0, 0.1, 2.0)
    """

    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    rebalance: Bool = False

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        check_leverage_cap(self.execution, self.risk)
        return self

    def to_params(self) -> SimParams:
        """The scalar tuple the kernels take."""
        e, r = self.execution, self.risk
        sl, tp, br = e.stop_loss, e.take_profit, r.breaker
        return SimParams(
            initial_cash=float(e.initial_cash),
            leverage=float(e.leverage),
            margin_mode=MarginMode.CROSS if e.margin_mode == "cross" else MarginMode.ISOLATED,
            taker_fee=float(e.taker_fee),
            maker_fee=float(e.maker_fee),
            slippage_bps=float(e.slippage_bps),
            entry_type=OrderType.LIMIT if e.order_type == "limit" else OrderType.MARKET,
            limit_offset_bps=float(e.limit_offset_bps),
            stop_pct=_off(sl.pct if sl is not None else None),
            target_pct=_off(tp.pct if tp is not None else None),
            stop_atr=_off(sl.atr if sl is not None else None),
            target_atr=_off(tp.atr if tp is not None else None),
            sizing=Sizing.KELLY if r.sizing == "kelly" else Sizing.FIXED,
            fixed_fraction=float(r.fraction),
            kelly_fraction=float(r.kelly_fraction),
            payoff_ratio=float(r.payoff_ratio),
            max_position_pct=_off(r.max_position_pct),
            max_leverage=_off(r.max_leverage),
            max_exposure_pct=_off(r.max_exposure_pct),
            daily_loss_pct=_off(br.daily_loss_pct),
            max_drawdown_pct=_off(br.drawdown_pct),
            max_loss_streak=0 if br.max_consecutive_losses is None else br.max_consecutive_losses,
            cooldown_bars=br.cooldown_bars,
            rebalance=self.rebalance,
            close_at_end=e.close_at_end,
        )


def _off(v: float | None) -> float:
    """NaN for a switched-off feature (None), else the value as a float."""
    return math.nan if v is None else float(v)
