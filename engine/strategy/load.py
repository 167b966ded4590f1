"""Load a strategy file into a :class:`StrategyGraph`, checking everything at the door.

Order of checks (each failure is a ConfigError, exit 2, naming ``file:line`` and the YAML
path; nothing is written anywhere):

1. YAML syntax, empty file, duplicate keys (:mod:`engine.strategy.yamlio`);
2. ``--set`` overrides and ``--symbols/--start/--end`` (:mod:`engine.strategy.params`);
3. the schema: types, ranges, unknown keys with the closest valid one (:mod:`.config`);
4. params resolved in feature names and rules; rules compiled (:mod:`.expr`);
5. feature names against the catalogue (``engine.features.check_names``);
6. symbols against the shipped exchangeInfo snapshot (``engine.sim.specs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import ConfigError
from engine.strategy.config import StrategyConfig
from engine.strategy.errors import config_error
from engine.strategy.expr import PRICE_COLUMNS, compile_expr
from engine.strategy.graph import RULE_KEYS, StrategyGraph
from engine.strategy.params import apply_overrides, substitute
from engine.strategy.yamlio import SourceMap, format_path, load_yaml_file, load_yaml_text


def load_strategy(
    path: str | Path,
    *,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    symbols: list[str] | None = None,
    start: str | int | None = None,
    end: str | int | None = None,
) -> StrategyGraph:
    """Read, validate and compile a strategy file.

    Parameters
    ----------
    path : the YAML file.
    overrides : ``--set`` items (``["fast=12", "risk.fraction=0.2"]``) or a mapping.
    symbols, start, end : command-line replacements for ``data.symbols/start/end``.

    Examples
    --------
    >>> g = load_strategy("strategies/ema_cross.yaml", overrides=["fast=12"])  # doctest: +SKIP
    >>> g.rules["long"].text  # doctest: +SKIP
    'ema_12 > ema_50'
    """
    raw, smap = load_yaml_file(path)
    return build_graph(raw, smap, overrides=overrides, symbols=symbols, start=start, end=end)


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
    doc, origins = apply_overrides(raw, overrides, schema=StrategyConfig)
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
            break  # the schema reports the bad data section
        data[key] = value
        origins[("data", key)] = (
            f"{label} {value if not isinstance(value, list) else ','.join(value)}"
        )

    try:
        config = StrategyConfig.model_validate(doc)
    except ValidationError as err:
        raise config_error(err, schema=StrategyConfig, smap=smap, origins=origins) from None

    def where(p: tuple[str | int, ...]) -> str:
        for op, label in origins.items():
            if tuple(p[: len(op)]) == tuple(op):
                return f"{label}: {format_path(p)}"
        return f"{smap.where(p)}: {format_path(p)}"

    params = config.params

    # 4. params in feature names and rules; compile the rules
    features: list[str] = []
    feature_where: dict[str, str] = {}
    for i, name in enumerate(config.features):
        resolved = substitute(name, params, where=where(("features", i)))
        if resolved not in feature_where:
            features.append(resolved)
            feature_where[resolved] = where(("features", i))
    rules = {}
    for key in RULE_KEYS if config.signals is not None else ():
        text = getattr(config.signals, key)
        if text is None:
            continue
        w = where(("signals", key))
        rule = compile_expr(substitute(text, params, where=w), where=w)
        rules[key] = rule
        for name in sorted(rule.names):
            if name in params and name not in feature_where:
                raise ConfigError(
                    f"{w}: {name!r} is a param; in a rule, write it as {{{name}}}",
                    hint=f"e.g. '... < {{{name}}}'; bare names in rules are features",
                )
            if name not in feature_where:
                features.append(name)
                feature_where[name] = w
    for m, model in enumerate(config.models or ()):
        for i, name in enumerate(model.features or ()):
            resolved = substitute(name, params, where=where(("models", m, "features", i)))
            if resolved not in feature_where:
                features.append(resolved)
                feature_where[resolved] = where(("models", m, "features", i))
    for label, stop in (
        ("stop_loss", config.execution.stop_loss),
        ("take_profit", config.execution.take_profit),
    ):
        if stop is not None and stop.atr is not None:
            name = f"atr_{stop.atr_period}"
            if name not in feature_where:
                features.append(name)
                feature_where[name] = where(("execution", label, "atr"))

    # 5. feature names against the catalogue
    _check_features([f for f in features if f not in PRICE_COLUMNS], feature_where, config)

    # 6. symbols against the exchangeInfo snapshot
    _check_symbols(config, where)

    return StrategyGraph(
        config=config,
        source=smap.file,
        overrides=tuple(override_list),
        features=tuple(features),
        rules=rules,
    )


def _check_features(names: list[str], where: dict[str, str], config: StrategyConfig) -> None:
    from engine.features import check_names

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
    from engine.timeutil import INTERVALS

    declared = set(config.data.higher_timeframes)
    for name in names:
        suffix = name.rsplit("_", 1)[-1] if "_" in name else ""
        if suffix in INTERVALS and suffix != config.data.interval and suffix not in declared:
            raise ConfigError(
                f"{where[name]}: feature {name!r} reads the {suffix} timeframe, which is not in data.higher_timeframes",
                hint=f"add {suffix} to data.higher_timeframes (now {sorted(declared) or '[]'})",
            )


def _check_symbols(config: StrategyConfig, where: Any) -> None:
    from engine.sim.specs import load_specs

    for i, symbol in enumerate(config.data.symbols):
        try:
            load_specs([symbol])
        except ConfigError as err:
            import difflib
            import json

            from engine.sim.specs import EXCHANGE_INFO

            known = [s["symbol"] for s in json.loads(EXCHANGE_INFO.read_text()).get("symbols", [])]
            close = difflib.get_close_matches(symbol, known, n=1, cutoff=0.5)
            raise ConfigError(
                f"{where(('data', 'symbols', i))}: {err.message}",
                hint=(f"did you mean {close[0]!r}? " if close else "") + (err.hint or ""),
            ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
