"""Rule expressions: a small, safe language compiled once and evaluated over whole columns.

Grammar (a subset of Python expressions, parsed with :mod:`ast` and rebuilt as a whitelisted
tree; nothing is ever passed to ``eval``)::

    expr     := expr 'or' expr | expr 'and' expr | 'not' expr | comparison
    compare  := arith (('<'|'<='|'>'|'>='|'=='|'!=') arith)+
    arith    := arith ('+'|'-'|'*'|'/') arith | '-' arith | '(' expr ')' | atom
    atom     := NUMBER | 'True' | 'False' | NAME | CALL
    CALL     := cross_above(a, b) | cross_below(a, b) | shift(x, n) | abs(x) | min(a, b) | max(a, b)

``NAME`` is a feature name (``ema_9``, ``rsi_14_1h``) or a price column (``open``, ``high``,
``low``, ``close``, ``volume``). Params are substituted as text before compiling
(``ema_{fast} > ema_{slow}``, see :mod:`engine.strategy.params`).

Values are float arrays; a boolean is 1.0 / 0.0, and NaN means *unknown* (an indicator not
yet warm). Every operator propagates NaN, so ``not (rsi_14 > 70)`` is unknown, not true,
while RSI warms up; the final signal is true only where the value is exactly 1.0.

``shift(x, n)`` is ``x`` ``n`` bars ago (``n`` a whole number >= 0: negative shifts would look
ahead and are refused). ``cross_above(a, b)`` is ``a > b`` now and ``a <= b`` one bar ago.

The value at bar ``t`` depends only on bars ``t - lookback + 1 .. t``, so live mode evaluates
the same compiled expression on the last ``lookback`` rows.
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ConfigError

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
FUNCTIONS = {
    "abs": (("num",), "num"),
    "min": (("num", "num"), "num"),
    "max": (("num", "num"), "num"),
    "shift": (("any", "int"), "same"),
    "cross_above": (("num", "num"), "bool"),
    "cross_below": (("num", "num"), "bool"),
}
_LEADING_UNDERSCORE = re.compile(r"(?<!\w)_")
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
MAX_SHIFT = 100_000


# -- the compiled tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A node of a compiled expression; ``kind`` is ``num`` or ``bool``."""

    op: str
    kind: str
    args: tuple[Any, ...] = ()

    def lookback(self) -> int:
        """How many bars (including the current one) this node reads."""
        if self.op in ("col", "const"):
            return 1
        if self.op == "shift":
            return self.args[0].lookback() + int(self.args[1])
        inner = max((a.lookback() for a in self.args if isinstance(a, Node)), default=1)
        return inner + 1 if self.op in ("cross_above", "cross_below") else inner

    def names(self) -> set[str]:
        if self.op == "col":
            return {self.args[0]}
        out: set[str] = set()
        for a in self.args:
            if isinstance(a, Node):
                out |= a.names()
        return out

    def eval(self, cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        op, a = self.op, self.args
        if op == "col":
            return np.asarray(cols[a[0]], dtype=np.float64)
        if op == "const":
            return np.full(n, float(a[0]))
        if op == "shift":
            x, k = a[0].eval(cols, n), int(a[1])
            return _shift(x, k)
        if op == "cmp":  # args: (comparison symbols, operand nodes...)
            operands = [x.eval(cols, n) for x in a[1:]]
            result = np.ones(n)
            for sym, left, right in zip(a[0], operands[:-1], operands[1:], strict=True):
                result = np.minimum(result, _compare(sym, left, right))
            return result
        vals = [x.eval(cols, n) for x in a]
        if op == "neg":
            return -vals[0]
        if op == "not":
            return 1.0 - vals[0]
        if op == "abs":
            return np.abs(vals[0])
        if op in ("min", "max"):
            both = np.minimum(vals[0], vals[1]) if op == "min" else np.maximum(vals[0], vals[1])
            return both  # np.minimum/maximum propagate NaN
        if op in _BIN.values():
            x, y = vals
            return {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op]
        if op in ("and", "or"):
            out = vals[0]
            for v in vals[1:]:
                out = np.minimum(out, v) if op == "and" else np.maximum(out, v)
            return out
        if op in ("cross_above", "cross_below"):
            x, y = vals
            x1, y1 = _shift(x, 1), _shift(y, 1)
            if op == "cross_above":
                hit = (x > y) & (x1 <= y1)
            else:
                hit = (x < y) & (x1 >= y1)
            out = hit.astype(np.float64)
            out[np.isnan(x) | np.isnan(y) | np.isnan(x1) | np.isnan(y1)] = np.nan
            return out
        raise AssertionError(
            f"unknown node {op}"
        )  # pragma: no cover - the compiler builds only the above


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return x
    out = np.full_like(x, np.nan)
    if k < len(x):
        out[k:] = x[:-k]
    return out


def _compare(sym: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    res = {
        "<": x < y,
        "<=": x <= y,
        ">": x > y,
        ">=": x >= y,
        "==": x == y,
        "!=": x != y,
    }[sym].astype(np.float64)
    res[np.isnan(x) | np.isnan(y)] = np.nan
    return res


@dataclass(frozen=True)
class CompiledExpr:
    """A rule compiled once; evaluate it over columns of any length.

    Attributes
    ----------
    text : the expression after param substitution.
    where : the YAML path it came from (for messages).
    names : the feature and price columns it reads.
    lookback : bars of history needed to evaluate the last bar exactly.
    """

    text: str
    where: str
    root: Node
    names: frozenset[str]
    lookback: int

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate over equal-length columns; returns a bool array (True only where known true).

        >>> import numpy as np
        >>> e = compile_expr("a > b", where="signals.long")
        >>> e.evaluate({"a": np.array([1.0, 3.0, np.nan]), "b": np.array([2.0, 2.0, 2.0])}).tolist()
        [False, True, False]
        """
        return self.values(columns) == 1.0

    def values(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The raw float result (1.0 true, 0.0 false, NaN unknown)."""
        missing = sorted(self.names - set(columns))
        if missing:
            raise KeyError(f"{self.where}: columns missing for {self.text!r}: {missing}")
        n = len(next(iter(columns.values()))) if columns else 0
        with np.errstate(all="ignore"):
            return self.root.eval(columns, n)


# -- the compiler -----------------------------------------------------------------------------


class _Compiler:
    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where

    def fail(self, node: ast.AST | None, message: str, hint: str | None = None) -> ConfigError:
        col = getattr(node, "col_offset", None)
        pointer = f" (at column {col + 1})" if col is not None else ""
        return ConfigError(
            f"{self.where}: {message} in expression {self.text!r}{pointer}", hint=hint
        )

    def build(self, node: ast.AST) -> Node:
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            args = tuple(self.want(v, "bool", f"the operands of '{op}'") for v in node.values)
            return Node(op, "bool", args)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return Node(
                    "not", "bool", (self.want(node.operand, "bool", "the operand of 'not'"),)
                )
            if isinstance(node.op, ast.USub):
                return Node("neg", "num", (self.want(node.operand, "num", "the operand of '-'"),))
            if isinstance(node.op, ast.UAdd):
                return self.want(node.operand, "num", "the operand of '+'")
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            sym = _BIN.get(type(node.op))
            if sym is None:
                raise self.fail(
                    node,
                    f"operator {type(node.op).__name__} is not allowed",
                    hint="use + - * / only",
                )
            return Node(
                sym,
                "num",
                (self.want(node.left, "num", f"'{sym}'"), self.want(node.right, "num", f"'{sym}'")),
            )
        if isinstance(node, ast.Compare):
            syms = []
            for o in node.ops:
                s = _CMP.get(type(o))
                if s is None:
                    raise self.fail(
                        node,
                        f"comparison {type(o).__name__} is not allowed",
                        hint="use < <= > >= == !=",
                    )
                syms.append(s)
            operands = [self.want(x, "num", "a comparison") for x in [node.left, *node.comparators]]
            return Node("cmp", "bool", (tuple(syms), *operands))
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                return Node("const", "bool", (1.0 if v else 0.0,))
            if isinstance(v, int | float):
                return Node("const", "num", (float(v),))
            raise self.fail(node, f"constant {v!r} is not allowed (only numbers, True, False)")
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("_"):
                raise self.fail(node, f"name {name!r} is not allowed")
            if name in FUNCTIONS:
                raise self.fail(node, f"{name!r} is a function; call it, e.g. {name}(a, b)")
            return Node("col", "num", (name,))
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            raise self.fail(
                node,
                "attribute access ('.') is not allowed",
                hint="use feature names, numbers and the functions " + ", ".join(FUNCTIONS),
            )
        if isinstance(node, ast.Subscript):
            raise self.fail(
                node, "indexing ('[...]') is not allowed", hint="use shift(x, n) for x n bars ago"
            )
        raise self.fail(node, f"{type(node).__name__} is not allowed in a rule")

    def call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.fail(
                node,
                "only plain function calls are allowed",
                hint="functions: " + ", ".join(FUNCTIONS),
            )
        fn = node.func.id
        if fn not in FUNCTIONS:
            close = difflib.get_close_matches(fn, list(FUNCTIONS), n=1)
            hint = (
                (f"did you mean {close[0]!r}? " if close else "")
                + "allowed functions: "
                + ", ".join(FUNCTIONS)
            )
            raise self.fail(node, f"function {fn!r} is not allowed", hint=hint)
        if node.keywords:
            raise self.fail(node, f"{fn}() takes no keyword arguments")
        sig, result = FUNCTIONS[fn]
        if len(node.args) != len(sig):
            raise self.fail(node, f"{fn}() takes {len(sig)} argument(s), got {len(node.args)}")
        if fn == "shift":
            x = self.build(node.args[0])
            k = node.args[1]
            if (
                isinstance(k, ast.UnaryOp)
                and isinstance(k.op, ast.USub)
                and isinstance(k.operand, ast.Constant)
            ):
                raise self.fail(
                    k,
                    f"shift by -{k.operand.value!r} would look into the future",
                    hint="n must be >= 0",
                )
            if not (
                isinstance(k, ast.Constant)
                and isinstance(k.value, int)
                and not isinstance(k.value, bool)
            ):
                raise self.fail(k, "shift(x, n) needs a whole number of bars n")
            if k.value < 0:
                raise self.fail(
                    k, f"shift by {k.value} would look into the future", hint="n must be >= 0"
                )
            if k.value > MAX_SHIFT:
                raise self.fail(k, f"shift by {k.value} is more than {MAX_SHIFT} bars")
            return Node("shift", x.kind, (x, k.value))
        args = tuple(
            self.want(a, want, f"argument {i + 1} of {fn}()")
            for i, (a, want) in enumerate(zip(node.args, sig, strict=True))
        )
        return Node(fn, result, args)

    def want(self, node: ast.AST, kind: str, what: str) -> Node:
        out = self.build(node)
        if out.kind != kind:
            got = "a true/false value" if out.kind == "bool" else "a number"
            need = "a true/false value (a comparison)" if kind == "bool" else "a number"
            raise self.fail(node, f"{what} must be {need}, got {got} {ast.unparse(node)!r}")
        return out


def compile_expr(text: str, *, where: str) -> CompiledExpr:
    """Compile a rule expression; raise :class:`ConfigError` naming ``where`` if it is bad.

    The result must be a true/false value.

    >>> compile_expr("cross_above(ema_9, ema_50) and rsi_14 < 70", where="signals.long").lookback
    2
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"{where}: empty expression", hint="write a rule such as 'ema_9 > ema_50'"
        )
    return _compile(text, where)


@functools.lru_cache(maxsize=4096)
def _compile(text: str, where: str) -> CompiledExpr:
    """:func:`compile_expr` of a non-empty text, kept by text and place: a sweep compiles
    the same few rules for each of its combinations (~40 us each), and the result is frozen
    (an error is raised again each time, not kept)."""
    comp = _Compiler(text, where)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        col = f" (at column {err.offset})" if err.offset else ""
        raise ConfigError(
            f"{where}: syntax error in expression {text!r}{col}: {err.msg}",
            hint="rules look like 'ema_9 > ema_50 and rsi_14 < 70'; use and/or/not, comparisons, + - * /, "
            "and the functions " + ", ".join(FUNCTIONS),
        ) from None
    # a name starting with _ begins with an _ that no letter, digit or _ precedes: only a
    # text holding such an _ can have one (the walk is a third of a compile)
    for node in ast.walk(tree) if _LEADING_UNDERSCORE.search(text) else ():
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise comp.fail(
                node,
                f"name {node.id!r} is not allowed (names starting with _ are reserved)",
                hint="rules read features and prices only; functions: " + ", ".join(FUNCTIONS),
            )
    root = comp.build(tree.body)
    if root.kind != "bool":
        raise comp.fail(
            tree.body,
            "a rule must be true or false, but this is a number",
            hint="compare it, e.g. 'rsi_14 < 30'",
        )
    return CompiledExpr(
        text=text, where=where, root=root, names=frozenset(root.names()), lookback=root.lookback()
    )
