"""The strategy file's schema: frozen pydantic v2 models that reject unknown keys.

The ``risk`` and ``execution`` sections are the simulator's own settings models
(:mod:`engine.sim.settings`: units, defaults and ranges are written there, once). Times are
UTC milliseconds once validated (the file may give ISO dates; ``end`` given as a date means
the whole day).

Names in ``features`` and expressions in ``signals`` may reference params as ``{name}``;
they are kept as written here and resolved by :mod:`engine.strategy.params`.

Structural checks (types, ranges, unknown keys) live in these models. Checks that need
other parts of the engine (feature catalogue, exchangeInfo symbols, expression grammar) run
afterwards in :func:`engine.strategy.load.load_strategy`, with the same error format.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from engine.errors import UsageError
from engine.sim.settings import (
    Bool,
    ExecutionSettings,
    FrozenModel,
    Int,
    RiskSettings,
    Str,
    at,
    check_leverage_cap,
)
from engine.strategy.ml_config import (
    EnsembleConfig,
    LabelsConfig,
    MLSections,
    ModelList,
    TrainingConfig,
)
from engine.timeutil import INTERVALS, fmt_ms, interval_ms, parse_end, parse_time

ParamValue = int | float | str | bool

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _interval(v: Any) -> Any:
    if isinstance(v, str) and v not in INTERVALS:
        close = difflib.get_close_matches(v, INTERVALS, n=1, cutoff=0.5)
        extra = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown interval {v!r}{extra} (one of {', '.join(INTERVALS)})")
    return v


def _time(kind: str) -> Any:
    def conv(v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int | str) or hasattr(v, "year"):
            try:
                return parse_end(v, name=kind) if kind == "end" else parse_time(v, name=kind)
            except UsageError:
                raise ValueError(
                    f"cannot read {v!r} as a date (use 2024-01-31, 2024-01-31T12:00 or ms)"
                ) from None
        return v

    return BeforeValidator(conv)


Interval = Annotated[Str, BeforeValidator(_interval)]


class DataConfig(FrozenModel):
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
            raise at("start", f"start ({fmt_ms(self.start)}) is after end ({fmt_ms(self.end)})")
        return self


class SignalsConfig(FrozenModel):
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


class LogConfig(FrozenModel):
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


#: the ``params`` section (:class:`StrategyConfig`'s field; also validated alone by
#: ``engine.strategy.load.GraphVariants``)
Params = Annotated[dict[Str, ParamValue], BeforeValidator(_params)]


class StrategyConfig(FrozenModel):
    """A whole strategy file."""

    name: Annotated[Str, Field(min_length=1, max_length=100)]
    description: Str = ""
    params: Params = Field(default_factory=dict)
    data: DataConfig
    features: list[Str] = Field(default_factory=list)
    signals: SignalsConfig | None = None
    # the simulator's settings (engine.sim.settings): one model, defaults and ranges
    risk: RiskSettings = Field(default_factory=RiskSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
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
        check_leverage_cap(self.execution, self.risk)
        return self

    def ml(self) -> MLSections | None:
        """The four ML sections together, or None for a rule strategy."""
        if self.models is None:
            return None
        given = {
            k: v for k in ("labels", "training", "ensemble") if (v := getattr(self, k)) is not None
        }
        ens = given.get("ensemble") or EnsembleConfig()
        if ens.trade_cost_bps is None:  # the round trip's fees and slippage, from execution
            ex = self.execution
            cost = 2.0 * (float(ex.taker_fee) * 1e4 + float(ex.slippage_bps))
            given["ensemble"] = ens.model_copy(update={"trade_cost_bps": cost})
        return MLSections(models=self.models, **given)
