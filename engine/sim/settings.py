"""The simulator's settings, typed once: the ``execution`` and ``risk`` sections.

These frozen pydantic models are the one place where the simulator's options (fees, margin
mode, sizing, leverage, exchange filters, slippage, stops and targets, the circuit breaker,
the initial cash), their defaults and their ranges are written down. A strategy file's
``execution:`` and ``risk:`` sections ARE these models (:mod:`engine.strategy.config`
composes them), and :class:`engine.sim.config.SimConfig` is built straight from them, so the
YAML a user writes and the simulator the backtest and live mode run cannot drift apart.

Units: ``*_pct`` fields are percent (``5`` means 5 %), ``*_bps`` basis points, fees and
``fraction`` plain fractions (``0.0005`` is 5 bp). ``None`` switches an optional feature off.

Every range lives in a field's type (an ``Annotated`` constraint, :func:`between`), so a bad
value is reported with the field's path and the allowed range; checks across fields raise
:func:`at` errors that name the field they are about. Numbers are strict: ``"5"`` is not 5.

Example
-------
>>> ExecutionSettings(leverage=3, stop_loss={"pct": 2}).stop_loss.pct
2.0
>>> RiskSettings().fraction, ExecutionSettings().margin_mode
(0.1, 'cross')
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.errors import ConfigError

Num = Annotated[float, Strict()]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


def fmt_num(x: float) -> str:
    """A number as a user wrote it: ``5`` for 5.0, ``0.0005`` otherwise."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def between(
    lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False
) -> Any:
    """An AfterValidator asserting ``lo (<|<=) v (<|<=) hi`` with a readable message.

    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(Annotated[Num, between(0, 1, lo_open=True)]).validate_python(0.5)
    0.5
    """
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    low = "-inf" if lo is None else fmt_num(lo)
    high = "inf" if hi is None else fmt_num(hi)
    text = f"must be in {left}{low}, {high}{right}"
    if lo is not None and hi is None:
        text = f"must be {'>' if lo_open else '>='} {fmt_num(lo)}"

    def check(v: float) -> float:
        ok = True
        if lo is not None:
            ok = ok and (v > lo if lo_open else v >= lo)
        if hi is not None:
            ok = ok and (v < hi if hi_open else v <= hi)
        if not ok:
            raise ValueError(text)
        return v

    return AfterValidator(check)


AT_FIELD = "at_field"
"""The pydantic error type of :func:`at`; its context holds ``field`` and ``message``."""


def at(field: str, message: str) -> PydanticCustomError:
    """An error for a model validator that points at one of the model's fields.

    pydantic gives a model validator's error the model's own location; this error carries
    the field's dotted path (relative to the model) in its context, so the strategy error
    formatter (:mod:`engine.strategy.errors`) extends the location and the user sees
    ``execution.take_profit.atr_period: ...``; a direct caller reads the same path in the
    message.

    >>> at("leverage", "too high").message()
    'leverage: too high'
    """
    return PydanticCustomError(AT_FIELD, "{field}: {message}", {"field": field, "message": message})


class FrozenModel(BaseModel):
    """Frozen, and an unknown key is an error (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------ constrained types

Pct = Annotated[Num, between(0, 100, lo_open=True)]
"""A percentage in (0, 100]."""
PctOfEquity = Annotated[Num, between(0, 12500, lo_open=True)]
"""A notional as a percentage of equity: up to 125x leverage, (0, 12500]."""
Fraction = Annotated[Num, between(0, 1, lo_open=True)]
Leverage = Annotated[Num, between(1, 125)]
Bps = Annotated[Num, between(0, 1000)]
TakerFee = Annotated[Num, between(0, 0.01)]
MakerFee = Annotated[Num, between(-0.001, 0.01)]
"""A negative maker fee is a rebate."""
AtrMultiple = Annotated[Num, between(0, 100, lo_open=True)]
PayoffRatio = Annotated[Num, between(0, 100, lo_open=True)]
Cash = Annotated[Num, between(0, None, lo_open=True)]
Count = Annotated[Int, between(1, None)]
AtrPeriod = Annotated[Int, between(1, 1000)]

MarginModeName = Literal["isolated", "cross"]
OrderTypeName = Literal["market", "limit"]
SizingName = Literal["fixed", "kelly"]


# ------------------------------------------------------------------ the sections


class StopSettings(FrozenModel):
    """A stop-loss or take-profit distance: ``pct`` of the entry price or ``atr`` multiples
    of the ATR at the decision bar (``atr_period`` names the ``atr_N`` feature that feeds it)."""

    pct: Pct | None = None
    atr: AtrMultiple | None = None
    atr_period: AtrPeriod = 14

    @model_validator(mode="after")
    def _one(self) -> StopSettings:
        if (self.pct is None) == (self.atr is None):
            raise ValueError("give exactly one of pct or atr")
        return self


class BreakerSettings(FrozenModel):
    """Circuit breaker: halt new entries for ``cooldown_bars`` after a trip (a UTC day's loss,
    a drawdown from the peak, or a streak of losing trades)."""

    daily_loss_pct: Pct | None = None
    drawdown_pct: Pct | None = None
    max_consecutive_losses: Count | None = None
    cooldown_bars: Count = 288


class RiskSettings(FrozenModel):
    """Position sizing and limits.

    ``fixed``: each new position's margin is ``fraction`` of equity (notional = margin x
    leverage). ``kelly``: ``kelly_fraction`` x the Kelly fraction ``p - (1 - p) / b`` from the
    model's probability p and the payoff ratio b (needs probabilities; zero without an
    edge). The notional is then capped by ``max_position_pct`` (per symbol, % of equity),
    ``max_leverage`` (per symbol notional / equity), ``max_exposure_pct`` (all symbols, % of
    equity), Binance's bracket limit for the leverage and the available margin.
    """

    sizing: SizingName = "fixed"
    fraction: Fraction = 0.1
    kelly_fraction: Fraction = 0.5
    payoff_ratio: PayoffRatio = 1.0
    max_position_pct: PctOfEquity | None = None
    max_leverage: Leverage | None = None
    max_exposure_pct: PctOfEquity | None = None
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    def describe(self) -> str:
        """One line for ``engine validate``'s graph listing."""
        sizing = (
            f"fixed {self.fraction:g} of equity"
            if self.sizing == "fixed"
            else f"kelly x {self.kelly_fraction:g}"
        )
        caps = _join(
            f"position <= {self.max_position_pct:g}%" if self.max_position_pct is not None else "",
            f"exposure <= {self.max_exposure_pct:g}%" if self.max_exposure_pct is not None else "",
            f"leverage <= {self.max_leverage:g}" if self.max_leverage is not None else "",
        )
        br = self.breaker
        trips = _join(
            f"daily loss {br.daily_loss_pct:g}%" if br.daily_loss_pct is not None else "",
            f"drawdown {br.drawdown_pct:g}%" if br.drawdown_pct is not None else "",
            f"{br.max_consecutive_losses} losses" if br.max_consecutive_losses is not None else "",
        )
        breaker = f"breaker: {trips}, cooldown {br.cooldown_bars} bars" if trips else "no breaker"
        return f"{sizing}; {caps or 'no caps'}; {breaker}"


class ExecutionSettings(FrozenModel):
    """How decisions become orders and what they cost.

    Market entries fill at the next bar's open (plus ``slippage_bps`` against the trader,
    ``taker_fee``); ``limit`` entries rest ``limit_offset_bps`` inside the decision bar's close
    for one bar and fill at ``maker_fee`` when touched. ``exchange_filters: false`` lifts the
    symbols' tick/step/min-notional filters (the leverage brackets stay). ``close_at_end``
    closes what is open at the last bar. ``margin_mode`` defaults to cross, as every contract
    does on Binance until it is switched (and as the exchange simulator starts).
    """

    order_type: OrderTypeName = "market"
    limit_offset_bps: Bps = 0.0
    leverage: Leverage = 1.0
    margin_mode: MarginModeName = "cross"
    taker_fee: TakerFee = 0.0005
    maker_fee: MakerFee = 0.0002
    slippage_bps: Bps = 0.0
    stop_loss: StopSettings | None = None
    take_profit: StopSettings | None = None
    initial_cash: Cash = 10_000.0
    exchange_filters: Bool = True
    close_at_end: Bool = False

    @model_validator(mode="after")
    def _check(self) -> ExecutionSettings:
        sl, tp = self.stop_loss, self.take_profit
        if sl is not None and sl.pct is not None and sl.pct >= 100:
            raise at(
                "stop_loss.pct",
                f"must be below 100 (a long's stop would sit at price 0), got {fmt_num(sl.pct)}",
            )
        if sl is not None and tp is not None and sl.atr is not None and tp.atr is not None:
            if sl.atr_period != tp.atr_period:
                raise at(
                    "take_profit.atr_period",
                    f"must equal stop_loss.atr_period ({sl.atr_period}): one ATR feeds both",
                )
        if self.order_type == "market" and self.limit_offset_bps:
            raise at("limit_offset_bps", "only applies to order_type: limit")
        return self

    def describe(self) -> str:
        """One line for ``engine validate``'s graph listing."""
        order = self.order_type + (
            f" (offset {self.limit_offset_bps:g} bp)" if self.order_type == "limit" else ""
        )
        stops = []
        for label, s in (("stop", self.stop_loss), ("target", self.take_profit)):
            if s is not None:
                stops.append(
                    f"{label} {s.pct:g}%"
                    if s.pct is not None
                    else f"{label} {s.atr:g} x atr_{s.atr_period}"
                )
        return (
            f"{order}, {self.margin_mode} x{self.leverage:g}, fees taker {self.taker_fee:g} "
            f"maker {self.maker_fee:g}, slippage {self.slippage_bps:g} bp, "
            f"cash {self.initial_cash:g}"
            + (f"; {', '.join(stops)}" if stops else "")
            + ("" if self.exchange_filters else "; exchange filters OFF")
        )


def check_leverage_cap(execution: ExecutionSettings, risk: RiskSettings) -> None:
    """Raise (pointing at ``execution.leverage``) when the leverage is above
    ``risk.max_leverage``; the one check that spans both sections."""
    cap = risk.max_leverage
    if cap is not None and execution.leverage > cap:
        raise at(
            "execution.leverage",
            f"{fmt_num(execution.leverage)} is above risk.max_leverage ({fmt_num(cap)})",
        )


def settings_error(err: ValidationError, *, where: str) -> ConfigError:
    """A ConfigError listing each problem of a failed settings validation as ``path: what,
    got value``, for callers that build settings from options rather than from a strategy
    file (whose errors :mod:`engine.strategy.errors` formats with file:line)."""
    lines = []
    for e in err.errors(include_url=False):
        ctx = e.get("ctx") or {}
        loc = [str(p) for p in e["loc"]]
        if e["type"] == AT_FIELD:
            loc, text = [*loc, str(ctx["field"])], str(ctx["message"])
        else:
            text = f"{str(e['msg']).removeprefix('Value error, ')}, got {e.get('input')!r}"
        lines.append(f"{'.'.join(loc)}: {text}")
    return ConfigError(
        f"{where}: {'; '.join(lines)}", hint="see engine/sim/settings.py for the ranges"
    )


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)
