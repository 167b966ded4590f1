"""The rule-program interpreter (engine/sweep/program_nb.py) against a plain numpy evaluator:
random postfix programs of every op code over blocks whose symbol has every bar (the
gap-free read) or gaps and a late first bar (the per-bar lookup), leaves some rows back."""

from __future__ import annotations

import numpy as np
import pytest

from engine.sweep import program_nb as P

BLOCK = 64
N_COLS = 3
ARITH = (P.OP_ADD, P.OP_SUB, P.OP_MUL, P.OP_DIV, P.OP_MIN, P.OP_MAX)
CMP = (P.OP_LT, P.OP_LE, P.OP_GT, P.OP_GE, P.OP_EQ, P.OP_NE)


def _program(rng: np.random.Generator, depth: int) -> list[tuple[int, int, int, float]]:
    """A random expression tree of at most ``depth`` levels as postfix ``(op, col, off, v)``."""
    if depth == 0 or rng.random() < 0.25:
        if rng.random() < 0.7:
            return [(P.OP_COL, int(rng.integers(N_COLS)), int(rng.integers(0, 4)), 0.0)]
        return [(P.OP_CONST, 0, int(rng.integers(0, 4)), float(rng.choice([0.0, 0.5, 1.0, 2.0])))]
    kind = rng.integers(4)
    if kind == 0:
        return _program(rng, depth - 1) + [
            (int(rng.choice([P.OP_NEG, P.OP_NOT, P.OP_ABS])), 0, 0, 0.0)
        ]
    if kind == 3:  # cross: x, y now and x1, y1 one bar ago
        parts = [_program(rng, depth - 1) for _ in range(4)]
        op = P.OP_CROSS_ABOVE if rng.random() < 0.5 else P.OP_CROSS_BELOW
        return [x for p in parts for x in p] + [(op, 0, 0, 0.0)]
    ops = ARITH if kind == 1 else CMP
    return _program(rng, depth - 1) + _program(rng, depth - 1) + [(int(rng.choice(ops)), 0, 0, 0.0)]


def _reference(prog, cols: np.ndarray, own: np.ndarray, t0: int) -> np.ndarray:
    """numpy's operators over the block, a leaf read row by row (NaN before the first row)."""
    stack: list[np.ndarray] = []
    with np.errstate(all="ignore"):
        for op, col, off, v in prog:
            if op in (P.OP_COL, P.OP_CONST):
                rows = own[t0 : t0 + BLOCK]
                r = np.where(rows >= 0, rows - off, -1)
                vals = cols[col][np.maximum(r, 0)] if op == P.OP_COL else np.full(BLOCK, v)
                stack.append(np.where(r >= 0, vals, np.nan))
            elif op <= P.OP_ABS:
                x = stack.pop()
                stack.append({P.OP_NEG: -x, P.OP_NOT: 1.0 - x, P.OP_ABS: np.abs(x)}[op])
            elif op <= P.OP_NE:
                y, x = stack.pop(), stack.pop()
                if op in CMP:
                    f = {P.OP_LT: np.less, P.OP_LE: np.less_equal, P.OP_GT: np.greater,
                         P.OP_GE: np.greater_equal, P.OP_EQ: np.equal, P.OP_NE: np.not_equal}[op]  # fmt: skip
                    z = np.where(np.isnan(x) | np.isnan(y), np.nan, f(x, y).astype(float))
                elif op == P.OP_MIN:
                    z = np.where((x <= y) | np.isnan(x), x, y)
                elif op == P.OP_MAX:
                    z = np.where((x >= y) | np.isnan(x), x, y)
                else:
                    z = {P.OP_ADD: x + y, P.OP_SUB: x - y, P.OP_MUL: x * y, P.OP_DIV: x / y}[op]
                stack.append(z)
            else:
                y1, x1, y, x = stack.pop(), stack.pop(), stack.pop(), stack.pop()
                hit = (x > y) & (x1 <= y1) if op == P.OP_CROSS_ABOVE else (x < y) & (x1 >= y1)
                nan = np.isnan(x) | np.isnan(y) | np.isnan(x1) | np.isnan(y1)
                stack.append(np.where(nan, np.nan, hit.astype(float)))
    assert len(stack) == 1
    return stack[0]


@pytest.mark.parametrize("gaps", [False, True])
def test_programs_equal_numpy_on_blocks_with_and_without_gaps(gaps: bool) -> None:
    rng = np.random.default_rng(11 + gaps)
    n = 6 * BLOCK
    own = np.arange(n, dtype=np.int64)
    if gaps:  # a first bar 70 bars in, and bars missing here and there
        present = rng.random(n) > 0.15
        present[:70] = False
        own = np.where(present, np.cumsum(present) - 1, -1)
    n_own = int(own.max()) + 1
    cols = np.round(rng.normal(size=(1, N_COLS, n_own)), 1)  # ties for ==, <=, cross
    cols[0][rng.random((N_COLS, n_own)) < 0.05] = np.nan
    own2 = own[:, None]
    checked = 0
    for _ in range(60):
        prog = _program(rng, 3)
        ops = np.array([p[0] for p in prog], dtype=np.int64)
        args = np.array([p[1] for p in prog], dtype=np.int64)
        offs = np.array([p[2] for p in prog], dtype=np.int64)
        vals = np.array([p[3] for p in prog])
        stack = np.full((len(prog) + 1, BLOCK), -7.0)
        for t0 in range(0, n, BLOCK):
            dest = np.full(BLOCK, -7.0)
            P.eval_program_nb(
                ops, args, offs, vals, len(prog), cols, own2, 0, t0, BLOCK, stack, dest
            )
            want = _reference(prog, cols[0], own, t0)
            np.testing.assert_array_equal(dest, want)
            checked += int(np.isfinite(want).sum())
    assert checked > 1000  # the programs produced values, not only NaN
