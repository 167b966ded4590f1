"""Read a strategy YAML file into plain Python data plus a map from YAML path to line.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys and forgets where each
value came from. Here the document is composed into nodes first and built by hand, so that

* a duplicate key is an error naming both lines,
* every value's position is kept, so a validation error can say ``file:line``.

A path is a tuple of mapping keys (str) and sequence indexes (int), the same shape as a
pydantic error ``loc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError

PathKey = tuple[str | int, ...]

#: the parsers tried in turn (:func:`_compose`): libyaml's where PyYAML was built with it,
#: then PyYAML's own
_LOADERS: tuple[type[Any], ...] = (
    *((yaml.CSafeLoader,) if getattr(yaml, "__with_libyaml__", False) else ()),
    yaml.SafeLoader,
)


@dataclass(frozen=True)
class SourceMap:
    """Where each YAML path sits in its file (1-based lines).

    ``values`` holds the line of each value, ``keys`` the line of each mapping key.
    """

    file: str
    values: dict[PathKey, int] = field(default_factory=dict)
    keys: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, path: PathKey, *, key: bool = False) -> int | None:
        """The line of ``path`` (of its key when ``key``), else of its nearest ancestor."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        for n in range(len(path) - 1, -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return None

    def where(self, path: PathKey, *, key: bool = False) -> str:
        """``file:line`` for a path (``file`` alone when the line is unknown)."""
        line = self.line_of(path, key=key)
        return f"{self.file}:{line}" if line is not None else self.file


def format_path(path: PathKey) -> str:
    """``('signals', 'long')`` -> ``signals.long``; ``('features', 2)`` -> ``features[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_yaml_text(text: str, *, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML text into Python data and its :class:`SourceMap`.

    Raises
    ------
    ConfigError
        On a YAML syntax error, an empty document, more than one document, a duplicate
        mapping key or a value YAML cannot build (an unknown tag); the message names the
        file and line.
    """
    smap = SourceMap(file=file)
    loader, node = _compose(text, file)
    try:
        if node is None:
            raise ConfigError(
                f"{file}: the file is empty",
                hint="a strategy needs at least: name, data (symbols, interval), signals; "
                "see strategies/ema_cross.yaml",
            )
        data = _build(loader, node, (), smap)
    finally:
        loader.dispose()
    return data, smap


def _compose(text: str, file: str) -> tuple[Any, yaml.Node | None]:
    """``(loader, node)`` of the single document in ``text``, by libyaml's parser where PyYAML
    has it (composing a strategy file 2.5 -> 0.2 ms, which a sweep or an Optuna study pays
    per call). A document it rejects is composed again by PyYAML's own parser, whose
    messages name what was wrong (the character, the alias) and which raises the error."""
    for cls in _LOADERS:
        loader = None
        try:
            loader = cls(text)  # PyYAML's reader rejects control characters here
            return loader, loader.get_single_node()
        except yaml.YAMLError as err:
            if loader is not None:
                loader.dispose()
            if cls is _LOADERS[-1]:
                raise _syntax_error(err, text, file) from None
    raise AssertionError("unreachable: the last loader returns or raises")


def _syntax_error(err: yaml.YAMLError, text: str, file: str) -> ConfigError:
    if not isinstance(err, yaml.MarkedYAMLError):
        return ConfigError(f"{file}: YAML error: {err}")
    mark = err.problem_mark or err.context_mark
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = err.problem or "invalid YAML"
    hint = (
        "check the indentation and quoting around that line; a strategy file is a YAML "
        "mapping of sections (name, params, data, features, signals, risk, execution)"
    )
    lines = text.splitlines()
    text_line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    if "{" in text_line and "flow" in f"{err.context} {problem}":
        hint = (
            "inside [a, b] or {k: v}, quote a value that holds a {param} reference, "
            "e.g. features: ['ema_{fast}'] (or use one '- ema_{fast}' line per item)"
        )
    return ConfigError(
        f"{file}{line}: YAML syntax error: {problem}"
        + (f" ({err.context})" if err.context else ""),
        hint=hint,
    )


def load_yaml_file(path: str | Path) -> tuple[Any, SourceMap]:
    """Read and parse a strategy file (see :func:`load_yaml_text`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"strategy file not found: {p}",
            hint="give the path of a strategy YAML file, e.g. strategies/ema_cross.yaml",
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not a UTF-8 text file ({err.reason})") from None
    return load_yaml_text(text, file=str(path))


def _build(loader: Any, node: yaml.Node, path: PathKey, smap: SourceMap) -> Any:
    smap.values[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve YAML merge keys (<<)
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{smap.file}:{line}: {format_path(path)}: keys must be plain names"
                )
            # the key as written: YAML 1.1 would read `on:` or `yes:` as a boolean
            key = key_node.value
            if key in out:
                raise ConfigError(
                    f"{smap.file}:{line}: {format_path((*path, key))}: duplicate key {key!r} "
                    f"(first given on line {first_line[key]})",
                    hint="give each key once; YAML would otherwise silently keep only the last value",
                )
            first_line[key] = line
            smap.keys[(*path, key)] = line
            out[key] = _build(loader, value_node, (*path, key), smap)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), smap) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
        # a tag YAML cannot build: !!python/object, !!int x
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            f"{smap.file}:{node.start_mark.line + 1}: {format_path(path)}: {problem}",
            hint="write plain values: numbers, strings, true/false, lists and mappings",
        ) from None
