"""Turn pydantic validation errors into one ConfigError naming file:line, YAML path and value."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.errors import ConfigError
from engine.sim.settings import AT_FIELD
from engine.strategy.params import _model_of
from engine.strategy.yamlio import PathKey, SourceMap, format_path

MAX_SHOWN = 8

_TYPE_TEXT = {
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a text string",
    "list_type": "expected a list (- item lines or [a, b])",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "missing": "required key missing",
}


def config_error(
    err: ValidationError, *, schema: type[BaseModel], smap: SourceMap, origins: dict[Any, str]
) -> ConfigError:
    """Build the ConfigError for a failed validation of the whole document.

    Every problem becomes one line ``file:line: path: what, got value``; the first problem's
    hint (the closest valid key, the allowed values) becomes the error's hint.
    """
    lines: list[str] = []
    hints: list[str] = []
    seen: set[tuple[PathKey, str]] = set()
    for e in err.errors(include_url=False):
        loc, text, hint = _describe(e, schema)
        if (loc, text) in seen:
            continue
        seen.add((loc, text))
        key_error = e["type"] == "extra_forbidden"
        origin = next((o for p, o in origins.items() if tuple(loc[: len(p)]) == tuple(p)), None)
        where = origin if origin is not None else smap.where(loc, key=key_error)
        lines.append(f"{where}: {format_path(loc)}: {text}")
        if hint:
            hints.append(hint)
    shown = lines[:MAX_SHOWN]
    if len(lines) > MAX_SHOWN:
        shown.append(f"... and {len(lines) - MAX_SHOWN} more")
    message = (
        shown[0]
        if len(shown) == 1
        else f"{len(lines)} problems in the strategy:\n  " + "\n  ".join(shown)
    )
    return ConfigError(
        message, hint=hints[0] if hints else "see strategies/ema_cross.yaml for a complete example"
    )


def _describe(e: Any, schema: type[BaseModel]) -> tuple[PathKey, str, str | None]:
    loc: PathKey = tuple(p for p in e["loc"] if isinstance(p, int | str))
    etype = e["type"]
    msg = str(e["msg"])
    value = e.get("input")
    hint = None
    if etype == AT_FIELD:
        ctx = e.get("ctx", {})
        return (*loc, *str(ctx["field"]).split(".")), str(ctx["message"]), hint
    if etype == "value_error":
        msg = msg.removeprefix("Value error, ")
        return (
            loc,
            _with_value(msg, value, show=value is not None and not isinstance(value, dict)),
            hint,
        )
    if etype == "extra_forbidden":
        parent = loc[:-1]
        fields = _fields_at(schema, parent)
        key = str(loc[-1])
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
        if fields:
            hint = f"valid keys here: {', '.join(fields)}"
        text = f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
        return loc, text, hint
    if etype == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        options = [
            o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",") if o.strip()
        ]
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        text = f"must be one of {', '.join(repr(o) for o in options)}, got {value!r}"
        if close:
            text += f"; did you mean {close[0]!r}?"
        return loc, text, f"use one of: {', '.join(options)}"
    if etype == "missing":
        section = _fields_at(schema, loc)
        what = "required section missing" if section else "required key missing"
        return loc, what, "see strategies/ema_cross.yaml for a complete example"
    if etype in ("too_short", "too_long"):
        return (
            loc,
            _with_value(msg.replace("List", "list").replace("String", "text"), value, show=True),
            hint,
        )
    text = _TYPE_TEXT.get(etype, msg)
    return loc, _with_value(text, value, show=True), hint


def _with_value(text: str, value: Any, *, show: bool) -> str:
    shown = repr(value)
    if not show or (isinstance(value, str) and shown in text):
        return text
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{text}, got {shown}"


def _fields_at(schema: type[BaseModel], path: PathKey) -> list[str]:
    """The keys the schema allows at ``path`` (empty if ``path`` is not a section)."""
    model: Any = schema
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = _model_of(fields[part].annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}) or [])
