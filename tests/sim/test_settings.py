"""The simulator's settings: one typed model, shared with the strategy file's sections."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from engine.sim import ExecutionSettings, MarginMode, OrderType, RiskSettings, SimConfig, Sizing
from engine.strategy import StrategyConfig, load_strategy_text
from engine.strategy.execution import sim_config

RULES = "name: t\ndata: {symbols: [BTCUSDT]}\nsignals: {long: close > 1}\n"


def test_the_strategy_sections_are_the_simulators_models() -> None:
    fields = StrategyConfig.model_fields
    assert fields["execution"].annotation is ExecutionSettings
    assert fields["risk"].annotation is RiskSettings


def test_defaults_are_the_same_from_yaml_and_from_code() -> None:
    graph = load_strategy_text(RULES)
    assert sim_config(graph) == SimConfig()
    assert sim_config(graph).to_params() == SimConfig().to_params()
    e, r = SimConfig().execution, SimConfig().risk
    # what a strategy without execution/risk sections has always got
    assert (e.margin_mode, e.leverage, e.taker_fee, e.maker_fee, e.initial_cash) == (
        "cross",
        1.0,
        0.0005,
        0.0002,
        10_000.0,
    )
    assert (r.sizing, r.fraction, r.kelly_fraction, r.breaker.cooldown_bars) == (
        "fixed",
        0.1,
        0.5,
        288,
    )


def test_sim_config_takes_the_sections_as_they_are() -> None:
    graph = load_strategy_text(
        RULES
        + "execution: {leverage: 3, margin_mode: isolated, stop_loss: {atr: 2, atr_period: 21},"
        " take_profit: {pct: 4}, order_type: limit, limit_offset_bps: 5}\n"
        "risk: {fraction: 0.3, max_leverage: 5, breaker: {drawdown_pct: 20,"
        " max_consecutive_losses: 4, cooldown_bars: 12}}\n"
    )
    cfg = sim_config(graph)
    assert cfg.execution is graph.config.execution and cfg.risk is graph.config.risk
    p = cfg.to_params()
    assert (p.leverage, p.margin_mode, p.entry_type, p.limit_offset_bps) == (
        3.0,
        MarginMode.ISOLATED,
        OrderType.LIMIT,
        5.0,
    )
    assert (p.stop_atr, p.target_pct) == (2.0, 4.0)
    assert math.isnan(p.stop_pct) and math.isnan(p.target_atr)
    assert (p.sizing, p.fixed_fraction, p.max_leverage) == (Sizing.FIXED, 0.3, 5.0)
    assert (p.max_drawdown_pct, p.max_loss_streak, p.cooldown_bars) == (20.0, 4, 12)
    assert math.isnan(p.daily_loss_pct) and math.isnan(p.max_position_pct)
    assert p.rebalance is False and p.close_at_end is False


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"execution": {"leverage": 126}}, "execution.leverage\n  Value error, must be in [1, 125]"),
        ({"execution": {"taker_fee": -0.0001}}, "must be in [0, 0.01]"),
        ({"execution": {"maker_fee": -0.002}}, "must be in [-0.001, 0.01]"),
        ({"risk": {"fraction": 1.5}}, "risk.fraction\n  Value error, must be in (0, 1]"),
        ({"risk": {"kelly_fraction": 0}}, "must be in (0, 1]"),
        ({"risk": {"breaker": {"cooldown_bars": 0}}}, "risk.breaker.cooldown_bars"),
        ({"execution": {"leverage": "3"}}, "Input should be a valid number"),
        ({"execution": {"leverge": 3}}, "execution.leverge\n  Extra inputs are not permitted"),
        ({"execution": {"stop_loss": {"pct": 100}}}, "stop_loss.pct: must be below 100"),
        (
            {"execution": {"leverage": 5}, "risk": {"max_leverage": 2}},
            "execution.leverage: 5 is above risk.max_leverage (2)",
        ),
        (
            {"execution": {"stop_loss": {"atr": 2}, "take_profit": {"atr": 3, "atr_period": 7}}},
            "take_profit.atr_period: must equal stop_loss.atr_period (14)",
        ),
        ({"execution": {"limit_offset_bps": 5}}, "limit_offset_bps: only applies to order_type"),
    ],
)
def test_bad_settings_name_the_field_and_the_range(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        SimConfig(**kwargs)
    assert fragment in str(err.value)


def test_settings_are_frozen() -> None:
    cfg = SimConfig()
    with pytest.raises(ValidationError):
        cfg.execution.leverage = 3  # type: ignore[misc]


def test_describe_lines() -> None:
    e = ExecutionSettings(
        order_type="limit", limit_offset_bps=5, stop_loss={"atr": 2}, exchange_filters=False
    )
    assert e.describe() == (
        "limit (offset 5 bp), cross x1, fees taker 0.0005 maker 0.0002, slippage 0 bp, "
        "cash 10000; stop 2 x atr_14; exchange filters OFF"
    )
    assert RiskSettings().describe() == "fixed 0.1 of equity; no caps; no breaker"
