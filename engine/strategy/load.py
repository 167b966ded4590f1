"""Load a strategy file into a :class:`StrategyGraph`, checking everything at the door.

Order of checks (each failure is a ConfigError, exit 2, naming ``file:line`` and the YAML
path; nothing is written anywhere):

1. YAML syntax, empty file, duplicate keys (:mod:`engine.strategy.yamlio`);
2. ``--set`` overrides and ``--symbols/--start/--end`` (:mod:`engine.strategy.params`);
3. the schema: types, ranges, unknown keys with the closest valid one (:mod:`.config`);
4. params resolved in feature names and rules; rules compiled (:mod:`.expr`);
5. feature names against the catalogue (``engine.features.check_names``);
6. symbols against the shipped exchangeInfo snapshot (``engine.sim.specs``), unless the
   venue checks them (live mode: ``venue_symbols``).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import ConfigError
from engine.sim.specs import EXCHANGE_INFO, load_specs
from engine.strategy.config import StrategyConfig
from engine.strategy.errors import config_error
from engine.strategy.expr import PRICE_COLUMNS, CompiledExpr, compile_expr
from engine.strategy.graph import RULE_KEYS, StrategyGraph
from engine.strategy.params import apply_overrides, substitute
from engine.strategy.yamlio import SourceMap, format_path, load_yaml_file, load_yaml_text
from engine.timeutil import INTERVALS


def load_strategy(
    path: str | Path,
    *,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    venue_symbols: bool = False,
) -> StrategyGraph:
    """Read, validate and compile a strategy file.

    Parameters
    ----------
    path : the YAML file.
    overrides : ``--set`` items (``["fast=12", "risk.fraction=0.2"]``) or a mapping.
    symbols, start, end : command-line replacements for ``data.symbols/start/end``.
    venue_symbols : the symbols are checked by the venue the graph trades on (live mode
        reads its exchangeInfo at start and stops before sending anything on a symbol it
        does not list), not against the shipped exchangeInfo snapshot, the offline default
        of backtests that lists only the shipped data's symbols.

    Examples
    --------
    >>> g = load_strategy("strategies/ema_cross.yaml", overrides=["fast=12"])  # doctest: +SKIP
    >>> g.rules["long"].text  # doctest: +SKIP
    'ema_12 > ema_50'
    """
    raw, smap = load_yaml_file(path)
    return build_graph(raw, smap, overrides=overrides, symbols=symbols, start=start, end=end,
                       venue_symbols=venue_symbols)


def load_strategy_text(text: str, *, file: str = "<string>", **kwargs: Any) -> StrategyGraph:
    """Like :func:`load_strategy` for YAML text (tests, sweeps)."""
    raw, smap = load_yaml_text(text, file=file)
    return build_graph(raw, smap, **kwargs)


def build_graph(
    raw: Any,
    smap: SourceMap,
    *,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
    venue_symbols: bool = False,
) -> StrategyGraph:
    """Validate a parsed document (see :func:`load_strategy`)."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{smap.where(())}: a strategy file must be a mapping of sections, got {type(raw).__name__} {_short(raw)}",
            hint="start with 'name: my_strategy' and add data:, features:, signals: ...",
        )
    override_list = (
        [f"{k}={v}" for k, v in overrides.items()]
        if isinstance(overrides, Mapping)
        else list(overrides)
    )
    # 2. --set overrides and the command line's --symbols/--start/--end
    doc, origins = apply_overrides(raw, overrides, schema=StrategyConfig)
    _apply_cli(doc, origins, symbols=symbols, start=start, end=end)
    # 3. the schema
    try:
        config = StrategyConfig.model_validate(doc)
    except ValidationError as err:
        raise config_error(err, schema=StrategyConfig, smap=smap, origins=origins) from None
    where = _locator(smap, origins)
    # 4. params in feature names and rules; compile the rules
    found = _Features()
    rules = _compile_rules(config, where, found)
    _model_and_stop_features(config, where, found)
    # 5. feature names against the catalogue; 6. symbols against the exchangeInfo snapshot
    _check_features([f for f in found.names if f not in PRICE_COLUMNS], found.where, config)
    if not venue_symbols:
        _check_symbols(config, where)
    return StrategyGraph(
        config=config,
        source=smap.file,
        overrides=tuple(override_list),
        features=tuple(found.names),
        rules=rules,
    )


Where = Callable[[tuple[str | int, ...]], str]


def _apply_cli(
    doc: dict[str, Any],
    origins: dict[Any, str],
    *,
    symbols: list[str] | None,
    start: str | int | None,
    end: str | int | None,
) -> None:
    """Put ``--symbols/--start/--end`` into the document's data section, remembering the
    option each came from (its errors then name the option, not a line)."""
    cli: dict[str, tuple[str, Any]] = {}
    if symbols is not None:
        cli["symbols"] = ("--symbols", list(symbols))
    if start is not None:
        cli["start"] = ("--start", start)
    if end is not None:
        cli["end"] = ("--end", end)
    for key, (label, value) in cli.items():
        data = doc.setdefault("data", {})
        if not isinstance(data, dict):
            return  # the schema reports the bad data section
        data[key] = value
        shown = value if not isinstance(value, list) else ",".join(value)
        origins[("data", key)] = f"{label} {shown}"


def _locator(smap: SourceMap, origins: dict[Any, str]) -> Where:
    """``file:line: path`` of a YAML path, or ``--set ...: path`` when an override set it."""

    def where(p: tuple[str | int, ...]) -> str:
        for op, label in origins.items():
            if tuple(p[: len(op)]) == tuple(op):
                return f"{label}: {format_path(p)}"
        return f"{smap.where(p)}: {format_path(p)}"

    return where


class _Features:
    """Feature names in first-seen order, each with where it was first asked for."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.where: dict[str, str] = {}

    def add(self, name: str, where: str) -> None:
        if name not in self.where:
            self.names.append(name)
            self.where[name] = where


def _compile_rules(
    config: StrategyConfig, where: Where, found: _Features
) -> dict[str, CompiledExpr]:
    """Listed features (params resolved), then each rule compiled and the features it reads."""
    params = config.params
    for i, name in enumerate(config.features):
        w = where(("features", i))
        found.add(substitute(name, params, where=w), w)
    rules: dict[str, CompiledExpr] = {}
    for key in RULE_KEYS if config.signals is not None else ():
        text = getattr(config.signals, key)
        if text is None:
            continue
        w = where(("signals", key))
        rule = compile_expr(substitute(text, params, where=w), where=w)
        rules[key] = rule
        for name in sorted(rule.names):
            if name in params and name not in found.where:
                raise ConfigError(
                    f"{w}: {name!r} is a param; in a rule, write it as {{{name}}}",
                    hint=f"e.g. '... < {{{name}}}'; bare names in rules are features",
                )
            found.add(name, w)
    return rules


def _model_and_stop_features(config: StrategyConfig, where: Where, found: _Features) -> None:
    """The model nodes' features and the ``atr_N`` an ATR stop or target reads."""
    for m, model in enumerate(config.models or ()):
        for i, name in enumerate(model.features or ()):
            w = where(("models", m, "features", i))
            found.add(substitute(name, config.params, where=w), w)
    for label, stop in (
        ("stop_loss", config.execution.stop_loss),
        ("take_profit", config.execution.take_profit),
    ):
        if stop is not None and stop.atr is not None:
            found.add(f"atr_{stop.atr_period}", where(("execution", label, "atr")))


def _check_features(names: list[str], where: dict[str, str], config: StrategyConfig) -> None:
    from engine.features import check_names  # lazy: engine.features loads numba

    for name in names:
        w = where[name]
        try:
            check_names([name], where=w, interval=config.data.interval)
        except ConfigError as err:
            message = err.message.replace(f"{w}[0]", w, 1)
            if not message.startswith(w):
                message = f"{w}: {message}"
            raise ConfigError(message, hint=err.hint) from None
    _check_timeframes(names, where, config)


def _check_timeframes(names: list[str], where: dict[str, str], config: StrategyConfig) -> None:
    """A higher-timeframe feature (``*_1h``) needs its timeframe in data.higher_timeframes."""
    declared = set(config.data.higher_timeframes)
    for name in names:
        suffix = name.rsplit("_", 1)[-1] if "_" in name else ""
        if suffix in INTERVALS and suffix != config.data.interval and suffix not in declared:
            raise ConfigError(
                f"{where[name]}: feature {name!r} reads the {suffix} timeframe, which is not in data.higher_timeframes",
                hint=f"add {suffix} to data.higher_timeframes (now {sorted(declared) or '[]'})",
            )


def _check_symbols(config: StrategyConfig, where: Where) -> None:
    for i, symbol in enumerate(config.data.symbols):
        try:
            load_specs([symbol])
        except ConfigError as err:
            known = [s["symbol"] for s in json.loads(EXCHANGE_INFO.read_text()).get("symbols", [])]
            close = difflib.get_close_matches(symbol, known, n=1, cutoff=0.5)
            raise ConfigError(
                f"{where(('data', 'symbols', i))}: {err.message}",
                hint=(f"did you mean {close[0]!r}? " if close else "") + (err.hint or ""),
            ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
