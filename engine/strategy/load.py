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
import functools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.errors import ConfigError
from engine.sim.specs import EXCHANGE_INFO, load_specs
from engine.strategy.config import Params, StrategyConfig
from engine.strategy.errors import config_error
from engine.strategy.expr import PRICE_COLUMNS, CompiledExpr, compile_expr
from engine.strategy.graph import RULE_KEYS, StrategyGraph
from engine.strategy.params import apply_overrides, set_param, substitute
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
    config, origins, override_list = _validated(raw, smap, overrides, symbols, start, end)
    return _graph(config, smap, origins, override_list, venue_symbols)


def _validated(
    raw: dict[str, Any],
    smap: SourceMap,
    overrides: Iterable[str] | Mapping[str, Any],
    symbols: list[str] | None,
    start: str | int | None,
    end: str | int | None,
) -> tuple[StrategyConfig, dict[Any, str], list[str]]:
    """Steps 2-3: the overrides applied and the document validated; returns the config,
    where each override came from, and the overrides as ``name=value`` items."""
    override_list = _override_items(overrides)
    # 2. --set overrides and the command line's --symbols/--start/--end
    doc, origins = apply_overrides(raw, overrides, schema=StrategyConfig)
    _apply_cli(doc, origins, symbols=symbols, start=start, end=end)
    # 3. the schema
    try:
        config = StrategyConfig.model_validate(doc)
    except ValidationError as err:
        raise config_error(err, schema=StrategyConfig, smap=smap, origins=origins) from None
    return config, origins, override_list


def _override_items(overrides: Iterable[str] | Mapping[str, Any]) -> list[str]:
    """The overrides as the graph records them: ``name=value`` items."""
    if isinstance(overrides, Mapping):
        return [f"{k}={v}" for k, v in overrides.items()]
    return list(overrides)


def _graph(
    config: StrategyConfig,
    smap: SourceMap,
    origins: dict[Any, str],
    override_list: list[str],
    venue_symbols: bool,
) -> StrategyGraph:
    """Steps 4-6 on a validated config."""
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


class GraphVariants:
    """The graphs of one document under many sets of overrides (a sweep's combinations).

    ``graph(variant)`` equals ``build_graph(raw, smap, overrides={**overrides, **variant},
    symbols=, start=, end=)``, field for field, and raises the same errors. The document is
    checked in full for the first variant; a later variant that sets params only (no dotted
    key) changes nothing but ``params`` before step 4 (params are resolved in steps 4-5, and
    no check of the whole config reads them), so its config is the first one's with the
    params replaced by the rule :func:`~engine.strategy.params.apply_overrides` applies
    (:func:`~engine.strategy.params.set_param`) and validated by the schema's own
    ``params`` type: the sections it cannot change are the first config's own validated
    objects, not validated again. A sweep of a few thousand combinations spent most of its
    time validating the same document (~190 us a combination, the kernel ~100-200 us).
    Anything else takes the whole path.
    """

    def __init__(
        self,
        raw: Any,
        smap: SourceMap,
        *,
        overrides: Mapping[str, Any] | None = None,
        symbols: list[str] | None = None,
        start: str | int | None = None,
        end: str | int | None = None,
    ) -> None:
        self._raw, self._smap = raw, smap
        self._base = dict(overrides or {})
        self._cli: dict[str, Any] = {"symbols": symbols, "start": start, "end": end}
        # the first params variant's config, and the document's params and override origins
        # before any variant (the base overrides and the command line's applied)
        self._first: tuple[StrategyConfig, dict[Any, str], Any] | None = None

    def graph(self, variant: Mapping[str, Any]) -> StrategyGraph:
        """The graph of ``variant`` (param or dotted key -> value, on top of the overrides)."""
        overrides = {**self._base, **variant}
        params_only = not any("." in k for k in variant)
        if self._first is not None and params_only:
            config, origins = self._params_only(variant)
            if config is not None:
                return _graph(config, self._smap, origins, _override_items(overrides), False)
        if not isinstance(self._raw, dict):
            return build_graph(self._raw, self._smap)  # raises the loader's own error
        config, origins, override_list = _validated(
            self._raw, self._smap, overrides, **self._cli
        )
        graph = _graph(config, self._smap, origins, override_list, False)
        if self._first is None and params_only:
            doc, base_origins = apply_overrides(self._raw, self._base, schema=StrategyConfig)
            _apply_cli(doc, base_origins, **self._cli)
            self._first = (config, base_origins, doc.get("params"))
        return graph

    def _params_only(
        self, variant: Mapping[str, Any]
    ) -> tuple[StrategyConfig | None, dict[Any, str]]:
        """The config of a params variant, or None where the schema rejects its params
        (the whole path then raises the located error). The origins gain the variant's
        params after the command line's (the whole path puts them before: a params path
        is the prefix of no other override's, so the locator's answers are the same)."""
        first, base_origins, params = self._first  # type: ignore[misc]
        params = dict(params) if isinstance(params, dict) else params
        origins = dict(base_origins)
        for name, value in variant.items():
            origins[("params", name)] = set_param(params, name, value)
        try:
            checked = _params_schema().validate_python(params)
        except ValidationError:
            return None, origins
        return first.model_copy(update={"params": checked}), origins


@functools.cache
def _params_schema() -> TypeAdapter[dict[str, Any]]:
    """The schema of the ``params`` section alone (no check of the whole config reads it)."""
    return TypeAdapter(Params)


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
    """``file:line: path`` of a YAML path, or ``--set ...: path`` when an override set it
    (the first override, in ``origins``' order, whose path is a prefix of it)."""
    prefixes = [(len(op), tuple(op), label) for op, label in origins.items()]

    def where(p: tuple[str | int, ...]) -> str:
        p = tuple(p)
        for n, op, label in prefixes:
            if p[:n] == op:
                return f"{label}: {_path_text(p)}"
        return f"{smap.where(p)}: {_path_text(p)}"

    return where


# format_path kept by path: a sweep's graphs name the same few paths
_path_text = functools.lru_cache(maxsize=4096)(format_path)


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
    for name in names:
        _check_feature(name, where[name], config.data.interval)
    _check_timeframes(names, where, config)


@functools.lru_cache(maxsize=4096)
def _check_feature(name: str, w: str, interval: str) -> None:
    """One feature name (asked for at ``w``) against the catalogue. Cached: a sweep's
    combinations ask for the same names from the same places (a failed check raises every
    time, an exception is not cached)."""
    from engine.features import check_names  # lazy: engine.features loads numba

    try:
        check_names([name], where=w, interval=interval)
    except ConfigError as err:
        message = err.message.replace(f"{w}[0]", w, 1)
        if not message.startswith(w):
            message = f"{w}: {message}"
        raise ConfigError(message, hint=err.hint) from None


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
