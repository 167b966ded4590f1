"""The rule-program interpreter (engine/sweep/program_nb.py) against a plain numpy evaluator:
random postfix programs of every op code over blocks whose symbol has every bar (the
gap-free read) or gaps and a late first bar (the per-bar lookup), leaves some rows back.
And the fused kernel's block decisions (engine/sweep/fused_nb.py, the tabulated rule state
machine) against the rule fold a backtest runs, in every rule style."""

from __future__ import annotations

import numpy as np
import pytest

from engine.strategy.rules_nb import rule_fold_nb
from engine.sweep import fused_nb as K
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


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize("op", CMP)
def test_two_columns_compared_straight_from_the_columns(op: int, gaps: bool) -> None:
    """A comparison of two columns (``ema_10 > ema_20``), alone and as a deeper operand,
    which eval_program_nb reads straight from the columns where the block's rows are
    consecutive and both leaves start at or after the symbol's first row: the same values
    as the numpy evaluator, in blocks that take that read and blocks that do not (the
    first block, whose leaves some rows back start before the first row; gaps)."""
    rng = np.random.default_rng(31 + op + 100 * gaps)
    n = 5 * BLOCK
    own = np.arange(n, dtype=np.int64)
    if gaps:
        present = rng.random(n) > 0.1
        present[:9] = False
        own = np.where(present, np.cumsum(present) - 1, -1)
    n_own = int(own.max()) + 1
    cols = np.round(rng.normal(size=(1, N_COLS, n_own)), 1)
    cols[0][rng.random((N_COLS, n_own)) < 0.05] = np.nan
    programs = [
        [(P.OP_COL, 0, 0, 0.0), (P.OP_COL, 1, 0, 0.0), (op, 0, 0, 0.0)],
        [(P.OP_COL, 2, 3, 0.0), (P.OP_COL, 0, 1, 0.0), (op, 0, 0, 0.0)],
        [(P.OP_CONST, 0, 0, 0.5), (P.OP_COL, 1, 2, 0.0), (P.OP_COL, 1, 0, 0.0), (op, 0, 0, 0.0),
         (P.OP_ADD, 0, 0, 0.0)],
        [(P.OP_COL, 0, 0, 0.0), (P.OP_COL, 1, 0, 0.0), (op, 0, 0, 0.0), (P.OP_COL, 2, 1, 0.0),
         (P.OP_COL, 0, 0, 0.0), (P.OP_LT, 0, 0, 0.0), (P.OP_MUL, 0, 0, 0.0)],
    ]  # fmt: skip
    for prog in programs:
        arr = [np.array([p[k] for p in prog], dtype=dt) for k, dt in
               ((0, np.int64), (1, np.int64), (2, np.int64), (3, np.float64))]  # fmt: skip
        stack = np.full((len(prog) + 1, BLOCK), -7.0)
        for t0 in range(0, n, BLOCK):
            dest = np.full(BLOCK, -7.0)
            P.eval_program_nb(*arr, len(prog), cols, own[:, None], 0, t0, BLOCK, stack, dest)
            np.testing.assert_array_equal(dest, _reference(prog, cols[0], own, t0))


#: (event rules, hold long, hold short, the slots that have a rule; memoryless or not)
STYLES = [
    (False, True, False, (0,), True),  # long: R
    (False, False, True, (2,), True),  # short: R
    (False, True, True, (0, 2), False),  # long: A, short: B (both true: the side is kept)
    (True, False, False, (0, 1), False),  # long_entry, long_exit
    (True, False, False, (0, 1, 2, 3), False),
    (True, False, False, (0, 2), False),  # entries only: a flip, never flat again
    (True, False, False, (2, 3), False),
    (True, False, False, (0,), False),
]


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize(
    "style", STYLES, ids=lambda s: f"ev{int(s[0])}-hold{int(s[1])}{int(s[2])}-{s[3]}"
)
def test_block_decisions_equal_the_rule_fold(style: tuple, gaps: bool) -> None:  # type: ignore[type-arg]
    """``rule_table_nb`` + ``decide_rows_nb`` over blocks (the last one bar long) give the
    directions ``rule_fold_nb`` gives over the whole run, NaN for NaN; the rows of a slot
    without a rule hold stale values, which must not count."""
    events, hold_long, hold_short, slots, memoryless = style
    rng = np.random.default_rng(len(slots) + 10 * hold_long + 100 * hold_short + 1000 * gaps)
    n = 3 * K.BLOCK + 1
    # signals in runs (so that states persist and change), NaN now and then
    vals = np.repeat(rng.choice([0.0, 1.0], size=(4, n // 4 + 1)), 4, axis=1)[:, :n]
    vals[rng.random((4, n)) < 0.05] = np.nan
    has_bar = rng.random(n) > 0.15 if gaps else np.ones(n, dtype=bool)
    if gaps:
        has_bar[:20] = False  # a late first bar
    own = np.where(has_bar, np.cumsum(has_bar) - 1, -1)[:, None]  # [n, 1] as the kernel's
    lens = np.array([3 if k in slots else 0 for k in range(4)], dtype=np.int64)
    flags = np.array([events, hold_long, hold_short], dtype=np.int64)
    table = np.zeros((3, 16), dtype=np.int64)
    assert K.rule_table_nb(flags, lens, table) == memoryless
    used = sum(1 << k for k in slots)  # one slot, memoryless, no events: the select per bar

    v = vals == 1.0
    le = v[0] & (0 in slots)
    lx = ~le if hold_long else v[1] & (1 in slots)
    se = v[2] & (2 in slots)
    sx = ~se if hold_short else v[3] & (3 in slots)
    _, want = rule_fold_nb(le, lx, se, sx, has_bar, events)

    got = np.full((n, 1), -7.0)
    state = 0
    for b0 in range(0, n, K.BLOCK):
        nb = min(K.BLOCK, n - b0)
        rows = np.full((4, K.BLOCK), 1.0)  # stale past the block
        rows[:, :nb] = vals[:, b0 : b0 + nb]
        state = K.decide_rows_nb(
            own[b0 : b0 + nb, 0], rows, table, memoryless, events, state,
            got[b0 : b0 + nb, 0], used,
        )  # fmt: skip
    np.testing.assert_array_equal(got[:, 0], want)
    # the state changed (a long entry alone goes long once and stays)
    assert np.unique(want[~np.isnan(want)]).size >= (1 if slots == (0,) else 2)
    assert np.isnan(want).any() == (gaps or events)
