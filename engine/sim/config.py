"""Simulator configuration: a frozen, validated dataclass and the scalar tuple kernels take."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from engine.errors import ConfigError
from engine.sim.enums import MarginMode, OrderType, Sizing


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


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How the portfolio simulator trades and how the risk manager sizes.

    Percent fields are in percent (``stop_loss_pct=2`` is 2 %); fees are rates
    (``taker_fee=0.0005`` is 0.05 %). ``None`` switches a feature off.

    Sizing: the risk manager commits a fraction ``f`` of equity as margin, so the target
    notional is ``f * equity * leverage``; ``f = fixed_fraction`` or, for Kelly,
    ``f = kelly_fraction * (p - (1 - p) / b)`` (zero when that edge is not positive). The
    notional is then capped by ``max_position_pct`` (per symbol, % of equity),
    ``max_leverage`` (per symbol notional / equity), ``max_exposure_pct`` (all symbols, %
    of equity), Binance's bracket limit for ``leverage`` and the available margin.

    Example
    -------
    >>> SimConfig(leverage=3, stop_loss_pct=2, take_profit_pct=4).leverage
    3.0
    """

    initial_cash: float = 10_000.0
    leverage: float = 1.0
    margin_mode: Literal["isolated", "cross"] = "isolated"
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage_bps: float = 0.0
    entry_order: Literal["market", "limit"] = "market"
    limit_offset_bps: float = 0.0
    stop_loss_pct: float | None = None
    take_profit_pct: float | None = None
    stop_loss_atr: float | None = None
    take_profit_atr: float | None = None
    sizing: Literal["fixed", "kelly"] = "fixed"
    fixed_fraction: float = 1.0
    kelly_fraction: float = 0.5
    payoff_ratio: float = 1.0
    max_position_pct: float | None = None
    max_leverage: float | None = None
    max_exposure_pct: float | None = None
    daily_loss_pct: float | None = None
    max_drawdown_pct: float | None = None
    max_loss_streak: int | None = None
    cooldown_bars: int = 288
    rebalance: bool = False
    close_at_end: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or isinstance(value, str) or value is None:
                continue
            if isinstance(value, int | float):
                if not math.isfinite(value):
                    _bad(f.name, "must be a finite number", value)
                if f.name not in ("max_loss_streak", "cooldown_bars"):
                    object.__setattr__(self, f.name, float(value))
        if self.initial_cash <= 0:
            _bad("initial_cash", "must be > 0", self.initial_cash)
        if not 1 <= self.leverage <= 125:
            _bad("leverage", "must be in [1, 125]", self.leverage)
        if self.margin_mode not in ("isolated", "cross"):
            _bad("margin_mode", "must be 'isolated' or 'cross'", self.margin_mode)
        if self.entry_order not in ("market", "limit"):
            _bad("entry_order", "must be 'market' or 'limit'", self.entry_order)
        if self.sizing not in ("fixed", "kelly"):
            _bad("sizing", "must be 'fixed' or 'kelly'", self.sizing)
        for name in ("taker_fee", "maker_fee"):
            if not -0.01 <= getattr(self, name) <= 0.01:
                _bad(
                    name, "must be a rate in [-0.01, 0.01] (0.0005 is 0.05 %)", getattr(self, name)
                )
        for name in ("slippage_bps", "limit_offset_bps"):
            if not 0 <= getattr(self, name) <= 1000:
                _bad(name, "must be in [0, 1000] bps", getattr(self, name))
        for name in (
            "stop_loss_pct",
            "take_profit_pct",
            "stop_loss_atr",
            "take_profit_atr",
            "max_position_pct",
            "max_leverage",
            "max_exposure_pct",
            "daily_loss_pct",
            "max_drawdown_pct",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                _bad(name, "must be > 0 (or null to switch it off)", value)
        if self.stop_loss_pct is not None and self.stop_loss_atr is not None:
            _bad(
                "stop_loss_atr",
                "give either stop_loss_pct or stop_loss_atr, not both",
                self.stop_loss_atr,
            )
        if self.take_profit_pct is not None and self.take_profit_atr is not None:
            _bad(
                "take_profit_atr",
                "give either take_profit_pct or take_profit_atr, not both",
                self.take_profit_atr,
            )
        if self.stop_loss_pct is not None and self.stop_loss_pct >= 100:
            _bad("stop_loss_pct", "must be < 100", self.stop_loss_pct)
        if not 0 < self.fixed_fraction <= 100:
            _bad("fixed_fraction", "must be in (0, 100]", self.fixed_fraction)
        if not 0 < self.kelly_fraction <= 1:
            _bad("kelly_fraction", "must be in (0, 1]", self.kelly_fraction)
        if self.payoff_ratio <= 0:
            _bad("payoff_ratio", "must be > 0", self.payoff_ratio)
        if self.max_leverage is not None and self.leverage > self.max_leverage:
            _bad("leverage", f"must not exceed max_leverage ({self.max_leverage:g})", self.leverage)
        if self.max_loss_streak is not None and (
            not isinstance(self.max_loss_streak, int) or self.max_loss_streak < 1
        ):
            _bad("max_loss_streak", "must be an integer >= 1", self.max_loss_streak)
        if not isinstance(self.cooldown_bars, int) or self.cooldown_bars < 1:
            _bad("cooldown_bars", "must be an integer >= 1", self.cooldown_bars)

    def to_params(self) -> SimParams:
        """The scalar tuple the kernels take."""

        def off(v: float | None) -> float:
            return math.nan if v is None else float(v)

        return SimParams(
            initial_cash=self.initial_cash,
            leverage=self.leverage,
            margin_mode=MarginMode.CROSS if self.margin_mode == "cross" else MarginMode.ISOLATED,
            taker_fee=self.taker_fee,
            maker_fee=self.maker_fee,
            slippage_bps=self.slippage_bps,
            entry_type=OrderType.LIMIT if self.entry_order == "limit" else OrderType.MARKET,
            limit_offset_bps=self.limit_offset_bps,
            stop_pct=off(self.stop_loss_pct),
            target_pct=off(self.take_profit_pct),
            stop_atr=off(self.stop_loss_atr),
            target_atr=off(self.take_profit_atr),
            sizing=Sizing.KELLY if self.sizing == "kelly" else Sizing.FIXED,
            fixed_fraction=self.fixed_fraction,
            kelly_fraction=self.kelly_fraction,
            payoff_ratio=self.payoff_ratio,
            max_position_pct=off(self.max_position_pct),
            max_leverage=off(self.max_leverage),
            max_exposure_pct=off(self.max_exposure_pct),
            daily_loss_pct=off(self.daily_loss_pct),
            max_drawdown_pct=off(self.max_drawdown_pct),
            max_loss_streak=0 if self.max_loss_streak is None else int(self.max_loss_streak),
            cooldown_bars=int(self.cooldown_bars),
            rebalance=bool(self.rebalance),
            close_at_end=bool(self.close_at_end),
        )


def _bad(name: str, what: str, value: object) -> None:
    raise ConfigError(f"{name}: {what}, got {value!r}", hint=f"fix the simulator option {name!r}")
