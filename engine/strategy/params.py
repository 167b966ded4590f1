"""Params: ``{name}`` references in feature names and rules, and ``--set`` overrides.

One syntax everywhere: ``{fast}`` is replaced by the value of param ``fast`` (``ema_{fast}``
becomes ``ema_9``; ``rsi_14 < {low}`` becomes ``rsi_14 < 30``). A bare name in a rule is
always a feature, never a param, so a typo cannot silently turn into a constant.

Overrides (``engine backtest --set fast=12``, and every point of a sweep) go through
:func:`apply_overrides`, which edits the raw document before validation. A name without a
dot is a param and must already exist in ``params``; a dotted name (``risk.fraction=0.2``)
sets any key of the schema.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from engine.errors import ConfigError

_REF = re.compile(r"\{([^{}]*)\}")


def substitute(text: str, params: Mapping[str, Any], *, where: str) -> str:
    """Replace each ``{name}`` in ``text`` by its param value.

    >>> substitute("ema_{fast} > ema_{slow}", {"fast": 9, "slow": 50}, where="signals.long")
    'ema_9 > ema_50'
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1).strip()
        if name not in params:
            raise ConfigError(
                f"{where}: unknown param {{{name}}} in {text!r}",
                hint=_suggest(name, params, what="param")
                + " Params are declared in the params: section.",
            )
        v = params[name]
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
            return repr(v)
        return str(v)

    out = _REF.sub(repl, text)
    if "{" in out or "}" in out:
        raise ConfigError(
            f"{where}: unbalanced brace in {text!r}", hint="reference a param as {name}"
        )
    return out


def referenced(text: str) -> set[str]:
    """The param names a text references."""
    return {m.group(1).strip() for m in _REF.finditer(text)}


def _suggest(name: str, choices: Iterable[str], *, what: str) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if choices:
        return f"known {what}s: {', '.join(sorted(choices))}."
    return f"no {what}s are defined."


def parse_set(item: str) -> tuple[str, Any]:
    """Split ``name=value``; the value is read as YAML (``12`` int, ``0.5`` float, ``true``, text).

    >>> parse_set("fast=12")
    ('fast', 12)
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected name=value", hint="for example --set fast=12")
    name, _, text = item.partition("=")
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
        raise ConfigError(
            f"--set {item!r}: {name!r} is not a param name or dotted config path",
            hint="for example --set fast=12 or --set risk.fraction=0.2",
        )
    if not text.strip():
        raise ConfigError(f"--set {item!r}: no value given", hint=f"for example --set {name}=12")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return name, value  # None (``null``) switches an optional key off


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str] | Mapping[str, Any], *, schema: Any
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Return a copy of the raw document with overrides applied, and where each came from.

    Parameters
    ----------
    raw : the parsed YAML document (not modified).
    overrides : ``["fast=12", ...]`` as typed, or a mapping ``{"fast": 12, "risk.fraction": 0.2}``.
    schema : the pydantic model class of the whole file (for checking dotted paths).

    Returns
    -------
    (document, origins) where ``origins`` maps each overridden YAML path to its ``--set``
    text, so validation errors can name the override instead of a file line.
    """
    import copy

    doc = copy.deepcopy(raw)
    origins: dict[tuple[str, ...], str] = {}
    items = (
        list(overrides.items())
        if isinstance(overrides, Mapping)
        else [parse_set(s) for s in overrides]
    )
    for name, value in items:
        if "." not in name:
            origins[("params", name)] = set_param(doc.get("params"), name, value)
            continue
        label = f"--set {name}={_show(value)}"
        path = tuple(name.split("."))
        _check_path(schema, path, label)
        node = doc
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    f"{label}: {'.'.join(path[: path.index(part) + 1])} is not a section"
                )
            node = nxt
        node[path[-1]] = value
        origins[path] = label
    return doc, origins


def set_param(params: Any, name: str, value: Any) -> str:
    """Set param ``name`` of a document's ``params`` mapping to ``value`` (keeping the
    param's type: :func:`_coerce`); return the override's label (``--set name=value``).

    Raises
    ------
    ConfigError
        ``params`` has no param ``name`` (or is not a mapping), or ``value`` is null or of
        another type."""
    label = f"--set {name}={_show(value)}"
    if not isinstance(params, dict) or name not in params:
        raise ConfigError(
            f"{label}: unknown param {name!r}",
            hint=_suggest(name, params if isinstance(params, dict) else {}, what="param")
            + " To set another key, give its dotted path (e.g. risk.fraction=0.2).",
        )
    old = params[name]
    if value is None:
        raise ConfigError(f"{label}: a param needs a value", hint=f"for example --set {name}={old}")
    params[name] = _coerce(name, old, value, label)
    return label


def _show(v: Any) -> str:
    if v is None:
        return "null"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _coerce(name: str, old: Any, new: Any, label: str) -> Any:
    """Keep a param's type: an int param takes whole numbers, a float param any number."""
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        raise ConfigError(
            f"{label}: param {name!r} is true/false, got {new!r}",
            hint=f"--set {name}=true or false",
        )
    if isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        if isinstance(new, float) and new.is_integer():
            return int(new)
        raise ConfigError(f"{label}: param {name!r} is a whole number ({old}), got {new!r}")
    if isinstance(old, float):
        if isinstance(new, int | float) and not isinstance(new, bool):
            return float(new)
        raise ConfigError(f"{label}: param {name!r} is a number ({old}), got {new!r}")
    return str(new)


def _check_path(schema: Any, path: tuple[str, ...], label: str) -> None:
    """Fail unless ``path`` names a key of the schema (walking nested pydantic models)."""
    model = schema
    for i, part in enumerate(path):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            raise ConfigError(f"{label}: {'.'.join(path[:i])} has no keys")
        if part not in fields:
            where = ".".join(path[:i]) or "the top level"
            raise ConfigError(
                f"{label}: unknown key {part!r} in {where}", hint=_suggest(part, fields, what="key")
            )
        model = _model_of(fields[part].annotation)
        if model is None and i < len(path) - 1:
            raise ConfigError(f"{label}: {'.'.join(path[: i + 1])} has no keys")


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation like ``X``, ``X | None``, else None."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _model_of(arg)
        if m is not None:
            return m
    return None
