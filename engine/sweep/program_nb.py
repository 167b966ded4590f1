"""Rule programs evaluated over a block of bars: the fused sweep kernel's rules.

:mod:`engine.sweep.fused` compiles each rule of a strategy (an :mod:`engine.strategy.expr`
tree) into a postfix program of the op codes below: a leaf pushes a feature column (or a
constant) some rows back, an operator pops its operands and pushes its result.
:func:`eval_program_nb` runs one program over a block of bars of one symbol, one tight loop
per op, into a row of the caller's (the rule's values of the block, 1.0 / 0.0 / NaN), with
the operands above the bottom one on a per-thread stack. Every operator propagates NaN as
numpy's do, and a row before a symbol's first is NaN, as ``shift`` does. A comparison of two
columns (``ema_10 > ema_20``, the commonest rule) reads them straight from the columns where
it can, without copying the leaves to the stack first.

Oracle: the per-combination path (:mod:`engine.decisions.signals` over the same graph);
``tests/sweep/test_fused.py`` compares whole sweeps with backtests, ``==`` on every metric.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel

#: op codes (see engine.sweep.fused.compile_rule)
OP_COL, OP_CONST, OP_NEG, OP_NOT, OP_ABS = 0, 1, 2, 3, 4
OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MIN, OP_MAX = 5, 6, 7, 8, 9, 10
OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE = 11, 12, 13, 14, 15, 16
OP_CROSS_ABOVE, OP_CROSS_BELOW = 17, 18


@kernel(inline=True)
def _leaf_nb(op, col, v, own, s, t0, nb, off, row):  # type: ignore[no-untyped-def]
    """A leaf's values over the block into ``row``: ``col``'s value (``v`` for a constant)
    ``off`` own rows back, NaN before the symbol's first row or where it has no bar. A block
    whose bars are consecutive own rows (every bar of a symbol without gaps) is read
    without the per-bar lookup."""
    first = own[t0, s]
    if first >= 0 and own[t0 + nb - 1, s] - first == nb - 1:  # no gap: rows first..first+nb-1
        base = first - off
        lead = min(max(-base, 0), nb)  # the bars before the symbol's first row (r < 0)
        for j in range(lead):
            row[j] = np.nan
        dst = row[lead:nb]  # through slices: every index known non-negative (no fix-up)
        if op == OP_COL:
            src = col[base + lead : base + nb]
            for j in range(nb - lead):
                dst[j] = src[j]
        else:
            for j in range(nb - lead):
                dst[j] = v
        return
    for j in range(nb):
        r = own[t0 + j, s]
        r = r - off if r >= 0 else -1
        row[j] = (col[r] if op == OP_COL else v) if r >= 0 else np.nan


@kernel(inline=True)
def _compare_nb(op, a, b, out, nb):  # type: ignore[no-untyped-def]
    """``out[j] = a[j] <op> b[j]`` as 1.0 / 0.0, NaN where either is NaN (one loop per
    operator: the test is decided once, not per bar; one loop with the operator tested per
    bar measured 5-10% slower over the whole sweep kernel)."""
    if op == OP_LT:
        for j in range(nb):
            x, y = a[j], b[j]
            z = 1.0 if x < y else 0.0
            out[j] = np.nan if (x != x) | (y != y) else z
    elif op == OP_LE:
        for j in range(nb):
            x, y = a[j], b[j]
            z = 1.0 if x <= y else 0.0
            out[j] = np.nan if (x != x) | (y != y) else z
    elif op == OP_GT:
        for j in range(nb):
            x, y = a[j], b[j]
            z = 1.0 if x > y else 0.0
            out[j] = np.nan if (x != x) | (y != y) else z
    elif op == OP_GE:
        for j in range(nb):
            x, y = a[j], b[j]
            z = 1.0 if x >= y else 0.0
            out[j] = np.nan if (x != x) | (y != y) else z
    elif op == OP_EQ:
        for j in range(nb):
            x, y = a[j], b[j]
            z = 1.0 if x == y else 0.0
            out[j] = np.nan if (x != x) | (y != y) else z
    else:
        for j in range(nb):
            x, y = a[j], b[j]
            z = 1.0 if x != y else 0.0
            out[j] = np.nan if (x != x) | (y != y) else z


@kernel
def eval_program_nb(ops, args, offs, vals, length, cols, own, s, t0, nb, stack, dest):  # type: ignore[no-untyped-def]
    """Evaluate one rule program over bars ``t0 .. t0+nb-1`` of symbol ``s`` into
    ``dest[:nb]`` (1.0 true, 0.0 false, NaN unknown); ``stack`` holds the operands above
    the bottom one (``dest`` is the bottom of the stack).

    A leaf reads column ``args[i]`` of the symbol's own rows, ``offs[i]`` rows back (a
    ``shift`` pushed down to its leaves); a row before the first is NaN, as
    :func:`engine.strategy.expr` shifts. Every operator propagates NaN as numpy's do.
    """
    sp = 0
    skip = 0  # ops already evaluated with the one before them
    for i in range(length):
        if skip > 0:
            skip -= 1
            continue
        op = ops[i]
        if op == OP_COL and i + 2 < length and ops[i + 1] == OP_COL:
            # two columns compared: read straight from the columns when the block's rows
            # are consecutive and both start at or after the symbol's first row
            first = own[t0, s]
            a0, b0 = first - offs[i], first - offs[i + 1]
            cmp = ops[i + 2]
            fits = first >= 0 and own[t0 + nb - 1, s] - first == nb - 1 and a0 >= 0 and b0 >= 0
            if OP_LT <= cmp <= OP_NE and fits:
                x = cols[s, args[i]][a0 : a0 + nb]
                y = cols[s, args[i + 1]][b0 : b0 + nb]
                _compare_nb(cmp, x, y, dest if sp == 0 else stack[sp], nb)
                sp += 1
                skip = 2
                continue
        if op == OP_COL or op == OP_CONST:
            row = dest if sp == 0 else stack[sp]
            _leaf_nb(op, cols[s, args[i] if op == OP_COL else 0], vals[i], own, s, t0, nb,
                     offs[i], row)  # fmt: skip
            sp += 1
            continue
        top = dest if sp == 1 else stack[sp - 1]  # the operand the result replaces
        if op <= OP_ABS:
            for j in range(nb):
                x = top[j]
                top[j] = -x if op == OP_NEG else (1.0 - x if op == OP_NOT else abs(x))
        elif op <= OP_MAX:
            sp -= 1
            a = dest if sp == 1 else stack[sp - 1]
            b = stack[sp]
            for j in range(nb):
                x = a[j]
                y = b[j]
                if op == OP_ADD:
                    z = x + y
                elif op == OP_SUB:
                    z = x - y
                elif op == OP_MUL:
                    z = x * y
                elif op == OP_DIV:
                    z = x / y
                elif op == OP_MIN:
                    z = x if (x <= y or np.isnan(x)) else y
                else:
                    z = x if (x >= y or np.isnan(x)) else y
                a[j] = z
        elif op <= OP_NE:
            sp -= 1
            a = dest if sp == 1 else stack[sp - 1]
            _compare_nb(op, a, stack[sp], a, nb)
        else:  # cross_above / cross_below: x, y now and x1, y1 one bar ago
            sp -= 3
            a = dest if sp == 1 else stack[sp - 1]
            b, a1, b1 = stack[sp], stack[sp + 1], stack[sp + 2]
            for j in range(nb):
                x = a[j]
                y = b[j]
                x1 = a1[j]
                y1 = b1[j]
                if np.isnan(x) or np.isnan(y) or np.isnan(x1) or np.isnan(y1):
                    z = np.nan
                elif op == OP_CROSS_ABOVE:
                    z = 1.0 if (x > y and x1 <= y1) else 0.0
                else:
                    z = 1.0 if (x < y and x1 >= y1) else 0.0
                a[j] = z
