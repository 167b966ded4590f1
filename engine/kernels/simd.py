"""Kernels' loops as AVX-width LLVM vectors, where numba's own code stays scalar.

numpy sums a float64 block of up to 128 values with eight accumulators, accumulator ``k``
adding values ``k, k + 8, k + 16, ...`` in order, and combines them as
``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``. Written out in numba, the eight
accumulators stay scalar: LLVM's SLP vectoriser does not merge them (0.33-0.38 ns a term on
this machine). :func:`lane_sums8_nb` emits the loop in LLVM IR on two ``<4 x double>``
vectors, lane ``k`` being accumulator ``k``: every lane does the very additions, in the very
order, that accumulator ``k`` does, so the eight sums are the same floats, ~2.5x faster
(0.13-0.15 ns a term). No fast-math flag is set, so LLVM neither reassociates nor contracts
a multiply and an add into one FMA. :func:`return_sums8_nb` forms bar returns in the same
lanes as it sums them; :func:`lane_range_nb` (and :func:`range_nb`, its lanes combined)
takes highs and lows with NaN skipped.

The terms a sum can add (``kind``): the values, their squared downsides ``min(v, 0) ** 2``
(numba's ``min(v, 0.0)``: ``v`` unless ``0.0 < v``, NaN kept), their squared deviations
``(v - mean) ** 2``.

Oracle: every lane against Python floats (``tests/kernels/test_simd.py``, every kind, offset
and length, with NaN, -0.0 and infinities), and numpy's ``sum`` through
:func:`engine.sweep.fused_nb.pairwise_sum_nb`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.kernels.jit import kernel

#: what a sum adds up (``kind``): the values, their squared downsides, their squared
#: deviations from ``mean``; and (:func:`return_sums8_nb`'s, for the callers' own use) the
#: bar returns of the values, with their squared downsides as a second sum
TERM_VALUE, TERM_DOWN2, TERM_DEV2, TERM_RETURNS = 0, 1, 2, 3

_I32, _I64, _F64 = ir.IntType(32), ir.IntType(64), ir.DoubleType()
_V4 = ir.VectorType(_F64, 4)


def _term(builder: ir.IRBuilder, kind: int, v: Any, mean: Any) -> Any:
    """Term ``kind`` of a vector of values, lane by lane (as ``fused_nb._term_nb``)."""
    if kind == TERM_DOWN2:
        zero = ir.Constant(_V4, [0.0] * 4)
        m = builder.select(builder.fcmp_ordered("<", zero, v), zero, v)
        return builder.fmul(m, m)
    if kind == TERM_DEV2:
        d = builder.fsub(v, mean)
        return builder.fmul(d, d)
    return v


def _rows(
    builder: ir.IRBuilder,
    m: Any,
    per_row: int,
    body: Callable[[list[Any]], None],
    *,
    start: int = 0,
) -> None:
    """``body(offsets)`` for rows ``start, start + 1, ...`` of the first ``m`` values, a row
    being ``per_row`` vectors of 4 values (``offsets``: each vector's first index; ``m``: a
    multiple of ``4 * per_row``)."""
    width = 4 * per_row
    count = builder.sdiv(m, ir.Constant(_I64, width))
    one = ir.Constant(_I64, 1)
    with cgutils.for_range_slice(builder, ir.Constant(_I64, start), count, one, inc=True) as (q, _):
        at = builder.mul(q, ir.Constant(_I64, width))
        body([builder.add(at, ir.Constant(_I64, 4 * h)) for h in range(per_row)])


def _sum_rows(
    builder: ir.IRBuilder,
    m: Any,
    per_row: int,
    n_accs: int,
    terms: Callable[[list[Any]], list[Any]],
) -> list[Any]:
    """``n_accs`` vector accumulators, each started with its term of the first row
    (``terms(offsets)``: one vector a accumulator) and added its term of each row after, in
    order; their lanes, accumulator by accumulator."""
    accs = [cgutils.alloca_once(builder, _V4) for _ in range(n_accs)]
    first = [ir.Constant(_I64, 4 * h) for h in range(per_row)]
    for acc, v in zip(accs, terms(first), strict=True):
        builder.store(v, acc)

    def add(offsets: list[Any]) -> None:
        for acc, v in zip(accs, terms(offsets), strict=True):
            builder.store(builder.fadd(builder.load(acc), v), acc)

    _rows(builder, m, per_row, add, start=1)
    return _lanes(builder, accs)


def _load(builder: ir.IRBuilder, base: Any, at: Any) -> Any:
    """The 4 values at ``base[at:at + 4]``."""
    p = builder.gep(base, [at])
    return builder.load(builder.bitcast(p, _V4.as_pointer()), align=8)


def _lanes(builder: ir.IRBuilder, accs: Sequence[Any]) -> list[Any]:
    """The accumulators' lanes, accumulator by accumulator."""
    return [
        builder.extract_element(builder.load(acc), ir.Constant(_I32, k))
        for acc in accs
        for k in range(4)
    ]


def _args(context: Any, builder: ir.IRBuilder, signature: Any, args: Any, to: tuple) -> Any:  # type: ignore[type-arg]
    """The array's data pointer at ``lo`` (the second argument), then the other arguments
    cast to ``to``."""
    ary = context.make_array(signature.args[0])(context, builder, args[0])
    rest = [
        context.cast(builder, v, t, u)
        for v, t, u in zip(args[1:], signature.args[1:], to, strict=True)
    ]
    return builder.gep(ary.data, [rest[0]]), rest[1:]


def _vector_of(a: Any) -> bool:
    return (
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float64
    )


@intrinsic
def lane_sums8_nb(typingctx: Any, a: Any, lo: Any, m: Any, kind: Any, mean: Any) -> Any:
    """``(r0, ..., r7)``: accumulator ``k`` = term(``a[lo + k]``) + term(``a[lo + 8 + k]``)
    + ... over ``a[lo : lo + m]``, added left to right (``a``: a C-contiguous float64
    vector; ``m``: a positive multiple of 8, ``lo + m <= a.size``, unchecked)."""
    if not _vector_of(a):
        return None
    sig = types.UniTuple(types.float64, 8)(a, lo, m, kind, mean)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        to = (types.int64, types.int64, types.int64, types.float64)
        base, (m_, kind_, mean_) = _args(context, builder, signature, args, to)
        mean_v = ir.Constant(_V4, ir.Undefined)
        for k in range(4):
            mean_v = builder.insert_element(mean_v, mean_, ir.Constant(_I32, k))
        lanes = cgutils.alloca_once(builder, ir.ArrayType(_F64, 8))

        def loop(kind: int) -> None:
            def terms(offsets: list[Any]) -> list[Any]:
                return [_term(builder, kind, _load(builder, base, o), mean_v) for o in offsets]

            for k, v in enumerate(_sum_rows(builder, m_, 2, 2, terms)):
                builder.store(v, builder.gep(lanes, [ir.Constant(_I32, 0), ir.Constant(_I32, k)]))

        def is_kind(k: int) -> Any:
            return builder.icmp_signed("==", kind_, ir.Constant(_I64, k))

        with builder.if_else(is_kind(TERM_VALUE)) as (value, other):
            with value:
                loop(TERM_VALUE)
            with other, builder.if_else(is_kind(TERM_DOWN2)) as (down, dev):
                with down:
                    loop(TERM_DOWN2)
                with dev:
                    loop(TERM_DEV2)
        vals = [
            builder.load(builder.gep(lanes, [ir.Constant(_I32, 0), ir.Constant(_I32, k)]))
            for k in range(8)
        ]
        return context.make_tuple(builder, signature.return_type, vals)

    return sig, codegen


@intrinsic
def lane_range_nb(typingctx: Any, a: Any, lo: Any, m: Any) -> Any:
    """``(highs, lows)``: four lanes each of the largest and the smallest value of
    ``a[lo : lo + m]`` with NaN skipped (``v if v > acc else acc``, ``v if v < acc else
    acc``, from -inf and +inf), lane ``k`` over values ``k, k + 4, ...`` (``m``: a positive
    multiple of 4, unchecked)."""
    if not _vector_of(a):
        return None
    sig = types.UniTuple(types.float64, 8)(a, lo, m)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        base, (m_,) = _args(context, builder, signature, args, (types.int64, types.int64))
        high, low = cgutils.alloca_once(builder, _V4), cgutils.alloca_once(builder, _V4)
        builder.store(ir.Constant(_V4, [-math.inf] * 4), high)
        builder.store(ir.Constant(_V4, [math.inf] * 4), low)

        def take(offsets: list[Any]) -> None:
            v = _load(builder, base, offsets[0])
            for acc, op in ((high, ">"), (low, "<")):
                old = builder.load(acc)
                builder.store(builder.select(builder.fcmp_ordered(op, v, old), v, old), acc)

        _rows(builder, m_, 1, take)
        return context.make_tuple(builder, signature.return_type, _lanes(builder, (high, low)))

    return sig, codegen


@kernel(inline=True)
def range_nb(a, lo, m):  # type: ignore[no-untyped-def]
    """``(high, low)`` of ``a[lo : lo + m]`` with NaN skipped (-inf and +inf when every
    value is NaN): :func:`lane_range_nb`'s lanes combined (no lane is NaN, so ``max`` and
    ``min`` combine them exactly). ``m``: a positive multiple of 4, unchecked."""
    h0, h1, h2, h3, l0, l1, l2, l3 = lane_range_nb(a, lo, m)
    return max(max(h0, h1), max(h2, h3)), min(min(l0, l1), min(l2, l3))


@intrinsic
def return_sums8_nb(typingctx: Any, a: Any, lo: Any, m: Any) -> Any:
    """The bar returns of ``a[lo : lo + m + 1]`` written over ``a[lo : lo + m]`` (return
    ``i``: ``a[i + 1] / a[i] - 1`` where ``a[i] > 0``, else 0, as
    :func:`engine.metrics.bar_returns`), and eight accumulators each of the returns and of
    their squared downsides (``TERM_VALUE`` and ``TERM_DOWN2`` of :func:`lane_sums8_nb`):
    ``(v0, ..., v7, d0, ..., d7)``. A row of 8 returns is read (``a[i]`` and ``a[i + 1]``)
    before it is written, rows left to right, so the returns may overwrite the values they
    come from (``m``: a positive multiple of 8, ``lo + m < a.size``, unchecked)."""
    if not _vector_of(a):
        return None
    sig = types.UniTuple(types.float64, 16)(a, lo, m)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        base, (m_,) = _args(context, builder, signature, args, (types.int64, types.int64))
        zero = ir.Constant(_V4, [0.0] * 4)
        one = ir.Constant(_V4, [1.0] * 4)
        nxt = builder.gep(base, [ir.Constant(_I64, 1)])

        def terms(offsets: list[Any]) -> list[Any]:
            rets = []
            for o in offsets:
                p, x = _load(builder, base, o), _load(builder, nxt, o)
                r = builder.fsub(builder.fdiv(x, p), one)
                rets.append(builder.select(builder.fcmp_ordered(">", p, zero), r, zero))
            for o, r in zip(offsets, rets, strict=True):  # the row is read: write its returns
                builder.store(r, builder.bitcast(builder.gep(base, [o]), _V4.as_pointer()), align=8)
            return rets + [_term(builder, TERM_DOWN2, r, None) for r in rets]

        lanes = _sum_rows(builder, m_, 2, 4, terms)
        return context.make_tuple(builder, signature.return_type, lanes)

    return sig, codegen
