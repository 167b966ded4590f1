"""The strategy file's schema: frozen pydantic v2 models that reject unknown keys.

Units: ``*_pct`` fields are percent (``5`` means 5 %), ``*_bps`` basis points, fees and
``fraction`` plain fractions (``0.0005`` is 5 bp). Times are UTC milliseconds once validated
(the file may give ISO dates; ``end`` given as a date means the whole day).

Names in ``features`` and expressions in ``signals`` may reference params as ``{name}``;
they are kept as written here and resolved by :mod:`engine.strategy.params`.

Structural checks (types, ranges, unknown keys) live in these models. Checks that need
other parts of the engine (feature catalogue, exchangeInfo symbols, expression grammar) run
afterwards in :func:`engine.strategy.load.load_strategy`, with the same error format.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from engine.strategy.ml_config import EnsembleConfig, LabelsConfig, MLSections, ModelList, TrainingConfig
from engine.timeutil import INTERVALS, interval_ms, parse_end, parse_time

Num = Annotated[float, Strict()]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

ParamValue = int | float | str | bool

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _between(
    lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False
) -> Any:
    """An AfterValidator asserting ``lo (<|<=) v (<|<=) hi`` with a readable message."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    text = f"must be in {left}{'-inf' if lo is None else _fmt(lo)}, {'inf' if hi is None else _fmt(hi)}{right}"
    if lo is not None and hi is None:
        text = f"must be {'>' if lo_open else '>='} {_fmt(lo)}"

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


def at(field: str, message: str) -> ValueError:
    """A ValueError for a model validator that points at one of the model's fields.

    pydantic gives a model validator's error the model's own location; the error formatter
    in :mod:`engine.strategy.load` reads the ``@field@`` prefix and extends the path.
    """
    return ValueError(f"@{field}@{message}")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _interval(v: Any) -> Any:
    if isinstance(v, str) and v not in INTERVALS:
        import difflib

        close = difflib.get_close_matches(v, INTERVALS, n=1, cutoff=0.5)
        extra = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown interval {v!r}{extra} (one of {', '.join(INTERVALS)})")
    return v


def _time(kind: str) -> Any:
    def conv(v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int | str) or hasattr(v, "year"):
            from engine.errors import UsageError

            try:
                return parse_end(v, name=kind) if kind == "end" else parse_time(v, name=kind)
            except UsageError:
                raise ValueError(
                    f"cannot read {v!r} as a date (use 2024-01-31, 2024-01-31T12:00 or ms)"
                ) from None
        return v

    return BeforeValidator(conv)


Interval = Annotated[Str, BeforeValidator(_interval)]
Pct = Annotated[Num, _between(0, 100, lo_open=True)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Model):
    """Which bars the graph runs on."""

    symbols: Annotated[list[Str], Field(min_length=1)]
    interval: Interval = "5m"
    higher_timeframes: list[Interval] = Field(default_factory=list)
    start: Annotated[Int | None, _time("start")] = None
    end: Annotated[Int | None, _time("end")] = None
    market: Literal["usdm"] = "usdm"
    funding: Bool = True

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if len(set(self.symbols)) != len(self.symbols):
            raise at("symbols", f"each symbol once, got {self.symbols}")
        base = interval_ms(self.interval)
        for tf in self.higher_timeframes:
            ms = interval_ms(tf)
            if ms <= base or ms % base:
                raise at(
                    "higher_timeframes",
                    f"{tf!r} is not a whole multiple above the base interval {self.interval!r}",
                )
        if self.start is not None and self.end is not None and self.start > self.end:
            from engine.timeutil import fmt_ms

            raise at("start", f"start ({fmt_ms(self.start)}) is after end ({fmt_ms(self.end)})")
        return self


class SignalsConfig(_Model):
    """Rule expressions. Either ``long``/``short`` (hold while true) or the entry/exit pairs."""

    long: Str | None = None
    short: Str | None = None
    long_entry: Str | None = None
    long_exit: Str | None = None
    short_entry: Str | None = None
    short_exit: Str | None = None

    @model_validator(mode="after")
    def _check(self) -> SignalsConfig:
        for side in ("long", "short"):
            hold, entry, exit_ = (
                getattr(self, side),
                getattr(self, f"{side}_entry"),
                getattr(self, f"{side}_exit"),
            )
            if hold is not None and (entry is not None or exit_ is not None):
                raise at(side, f"give either {side!r} or {side}_entry/{side}_exit, not both")
            if exit_ is not None and entry is None:
                raise at(f"{side}_exit", f"{side}_exit needs a {side}_entry")
        hold = [k for k in ("long", "short") if getattr(self, k) is not None]
        events = [k for k in ("long_entry", "short_entry") if getattr(self, k) is not None]
        if hold and events:
            raise at(
                events[0],
                f"mixes styles with {hold[0]!r}: use long/short (held while true) or "
                "long_entry/long_exit/short_entry/short_exit for both sides",
            )
        if all(getattr(self, f) is None for f in type(self).model_fields):
            raise ValueError("no rule given: set long and/or short (or long_entry/short_entry)")
        return self

    def rules(self) -> dict[str, str]:
        """The rules that are set, by field name."""
        return {f: v for f in type(self).model_fields if (v := getattr(self, f)) is not None}


class BreakerConfig(_Model):
    """Circuit breaker: halt new entries for ``cooldown_bars`` after a trip."""

    daily_loss_pct: Pct | None = None
    drawdown_pct: Pct | None = None
    max_consecutive_losses: Annotated[Int, _between(1, None)] | None = None
    cooldown_bars: Annotated[Int, _between(1, None)] = 288


class RiskConfig(_Model):
    """Position sizing and limits.

    ``fixed``: each new position's margin is ``fraction`` of equity (notional = margin x
    leverage). ``kelly``: ``kelly_fraction`` x the Kelly fraction from the model's probability
    and the payoff ratio (needs an ensemble; a rule signal has confidence 1).
    """

    sizing: Literal["fixed", "kelly"] = "fixed"
    fraction: Annotated[Num, _between(0, 1, lo_open=True)] = 0.1
    kelly_fraction: Annotated[Num, _between(0, 1, lo_open=True)] = 0.5
    payoff_ratio: Annotated[Num, _between(0, 100, lo_open=True)] = 1.0
    max_position_pct: Annotated[Num, _between(0, 12500, lo_open=True)] | None = None
    max_leverage: Annotated[Num, _between(1, 125)] | None = None
    max_exposure_pct: Annotated[Num, _between(0, 12500, lo_open=True)] | None = None
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class StopConfig(_Model):
    """A stop-loss or take-profit distance: ``pct`` of the entry price or ``atr`` multiples."""

    pct: Pct | None = None
    atr: Annotated[Num, _between(0, 100, lo_open=True)] | None = None
    atr_period: Annotated[Int, _between(1, 1000)] = 14

    @model_validator(mode="after")
    def _one(self) -> StopConfig:
        if (self.pct is None) == (self.atr is None):
            raise ValueError("give exactly one of pct or atr")
        return self


class ExecutionConfig(_Model):
    """How decisions become orders and what they cost."""

    order_type: Literal["market", "limit"] = "market"
    limit_offset_bps: Annotated[Num, _between(0, 1000)] = 0.0
    leverage: Annotated[Num, _between(1, 125)] = 1.0
    margin_mode: Literal["isolated", "cross"] = "cross"
    taker_fee: Annotated[Num, _between(0, 0.01)] = 0.0005
    maker_fee: Annotated[Num, _between(-0.001, 0.01)] = 0.0002
    slippage_bps: Annotated[Num, _between(0, 1000)] = 0.0
    stop_loss: StopConfig | None = None
    take_profit: StopConfig | None = None
    initial_cash: Annotated[Num, _between(0, None, lo_open=True)] = 10_000.0
    exchange_filters: Bool = True
    close_at_end: Bool = False

    @model_validator(mode="after")
    def _check(self) -> ExecutionConfig:
        sl, tp = self.stop_loss, self.take_profit
        if sl is not None and tp is not None and sl.atr is not None and tp.atr is not None:
            if sl.atr_period != tp.atr_period:
                raise at(
                    "take_profit.atr_period",
                    f"must equal stop_loss.atr_period ({sl.atr_period}): one ATR feeds both",
                )
        if self.order_type == "market" and self.limit_offset_bps:
            raise at("limit_offset_bps", "only applies to order_type: limit")
        return self


class LogConfig(_Model):
    """What the run log keeps beyond decisions, orders, trades, equity and events."""

    snapshots: Bool = False


def _params(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    for k, x in v.items():
        if not isinstance(k, str) or not _IDENT.match(k):
            raise ValueError(f"param name {k!r} must be a plain identifier (letters, digits, _)")
        if x is None or isinstance(x, list | dict) or not isinstance(x, ParamValue):
            raise ValueError(f"param {k!r} must be a number, string or boolean, got {x!r}")
    return v


class StrategyConfig(_Model):
    """A whole strategy file."""

    name: Annotated[Str, Field(min_length=1, max_length=100)]
    description: Str = ""
    params: Annotated[dict[Str, ParamValue], BeforeValidator(_params)] = Field(default_factory=dict)
    data: DataConfig
    features: list[Str] = Field(default_factory=list)
    signals: SignalsConfig | None = None
    risk: RiskConfig = Field(default_factory=RiskConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    # the ML sections (schema owned by engine.strategy.ml_config); ``models`` makes it an ML strategy
    labels: LabelsConfig | None = None
    training: TrainingConfig | None = None
    models: ModelList | None = None
    ensemble: EnsembleConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> StrategyConfig:
        ml_keys = [k for k in ("labels", "training", "ensemble") if getattr(self, k) is not None]
        if self.models is None and ml_keys:
            raise at(
                "models",
                f"required when {', '.join(ml_keys)} is given (the model nodes of the ensemble)",
            )
        if self.models is not None and self.signals is not None:
            raise at("signals", "give either signals (rules) or models (an ML ensemble), not both")
        if self.signals is None and self.models is None:
            raise at("signals", "required section missing (the rules that say long, short or flat)")
        if self.risk.sizing == "kelly" and self.models is None:
            raise at(
                "risk.sizing",
                "'kelly' needs a model probability (a models/ensemble section); rule signals have none, use 'fixed'",
            )
        if self.risk.max_leverage is not None and self.execution.leverage > self.risk.max_leverage:
            raise at(
                "execution.leverage",
                f"{_fmt(self.execution.leverage)} is above risk.max_leverage ({_fmt(self.risk.max_leverage)})",
            )
        return self

    def ml(self) -> MLSections | None:
        """The four ML sections together, or None for a rule strategy."""
        if self.models is None:
            return None
        given = {
            k: v for k in ("labels", "training", "ensemble") if (v := getattr(self, k)) is not None
        }
        return MLSections(models=self.models, **given)
