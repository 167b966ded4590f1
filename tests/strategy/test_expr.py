"""Rule expressions: semantics against numpy, NaN (warm-up) handling, safety, live parity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.errors import ConfigError
from engine.strategy.expr import compile_expr

A = np.array([1.0, 3.0, 2.0, 5.0, np.nan, 4.0])
B = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])


def ev(text: str, **cols: np.ndarray) -> list[bool]:
    return compile_expr(text, where="t").evaluate(cols).tolist()


def test_comparison_and_nan_is_false() -> None:
    assert ev("a > b", a=A, b=B) == [False, True, False, True, False, True]
    # NaN is unknown: neither the rule nor its negation holds
    assert ev("not (a > b)", a=A, b=B) == [True, False, True, False, False, False]


def test_boolean_ops_and_arithmetic() -> None:
    assert ev("a > b and a < 5", a=A, b=B) == [False, True, False, False, False, True]
    assert ev("a < b or a >= 5", a=A, b=B) == [True, False, False, True, False, False]
    assert ev("(a - b) / b > 0.4", a=A, b=B) == [False, True, False, True, False, True]
    assert ev("-a < -2", a=A) == [False, True, False, True, False, True]
    assert ev("abs(a - 3) <= 1", a=A) == [False, True, True, False, False, True]
    assert ev("min(a, b) == 2 and max(a, b) > 2", a=A, b=B) == [
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert ev("1 < a < 4", a=A) == [False, True, True, False, False, False]


def test_shift_and_crosses() -> None:
    assert ev("shift(a, 1) > b", a=A, b=B) == [False, False, True, False, True, False]
    x = np.array([1.0, 3.0, 3.0, 1.0, 4.0])
    y = np.array([2.0, 2.0, 2.0, 2.0, 2.0])
    assert ev("cross_above(x, y)", x=x, y=y) == [False, True, False, False, True]
    assert ev("cross_below(x, y)", x=x, y=y) == [False, False, False, True, False]
    # touching counts as "at or below" one bar ago
    assert ev("cross_above(x, y)", x=np.array([2.0, 3.0]), y=np.array([2.0, 2.0])) == [False, True]


def test_division_by_zero_is_unknown_not_a_warning() -> None:
    assert ev("a / b > 1", a=np.array([1.0, 0.0]), b=np.array([0.0, 0.0])) == [True, False]


def test_lookback_and_names() -> None:
    e = compile_expr("cross_above(shift(ema_9, 3), ema_50) and rsi_14 < 70", where="t")
    assert e.lookback == 5
    assert e.names == {"ema_9", "ema_50", "rsi_14"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("__import__('os').system('x') > 0", "name '__import__' is not allowed"),
        ("a.__class__ > 0", "attribute access"),
        ("open.real > 0", "attribute access"),
        ("eval('1') > 0", "function 'eval' is not allowed"),
        ("[a][0] > 0", "is not allowed"),
        ("a if b else c", "IfExp is not allowed"),
        ("a ** 2 > 1", "operator Pow is not allowed"),
        ("a > 'x'", "constant 'x' is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("a > b and 3", "must be a true/false value"),
        ("cross_above(a > b, c)", "argument 1 of cross_above() must be a number"),
        ("shift(a, b) > 0", "needs a whole number of bars"),
        ("shift(a, -2) > 0", "would look into the future"),
        ("abs(a, b) > 0", "takes 1 argument(s), got 2"),
        ("cross_abov(a, b)", "did you mean 'cross_above'"),
        ("a + b", "a rule must be true or false"),
        ("a >", "syntax error"),
        ("", "empty expression"),
        ("a in b", "comparison In is not allowed"),
    ],
)
def test_rejected(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_expr(text, where="signals.long")
    assert fragment in str(info.value)
    assert str(info.value).startswith("signals.long")


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
with_nan = st.one_of(finite, st.just(float("nan")))


@settings(max_examples=60, deadline=None)
@given(
    a=arrays(np.float64, 40, elements=with_nan),
    b=arrays(np.float64, 40, elements=with_nan),
    k=st.integers(min_value=0, max_value=39),
)
def test_last_bar_from_lookback_rows_equals_full_run(a: np.ndarray, b: np.ndarray, k: int) -> None:
    """Live evaluates on the last ``lookback`` rows only: same value as the batch run."""
    e = compile_expr("cross_above(a, shift(b, 2)) or (abs(a - b) > 3 and not (a < 0))", where="t")
    full = e.values({"a": a, "b": b})
    end = k + 1
    lo = max(0, end - e.lookback)
    tail = e.values({"a": a[lo:end], "b": b[lo:end]})
    np.testing.assert_array_equal(tail[-1:], full[k : k + 1])
