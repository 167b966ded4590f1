"""Eight running sums in two AVX-width vectors: the leaves of numpy's pairwise sum.

numpy sums a float64 block of up to 128 values with eight accumulators, accumulator ``k``
adding values ``k, k + 8, k + 16, ...`` in order, and combines them as
``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``. Written out in numba, the eight
accumulators stay scalar: LLVM's SLP vectoriser does not merge them (0.33-0.38 ns a term on
this machine). :func:`lane_sums8_nb` emits the loop in LLVM IR on two ``<4 x double>``
vectors, lane ``k`` being accumulator ``k``: every lane does the very additions, in the very
order, that accumulator ``k`` does, so the eight sums are the same floats, ~2.5x faster
(0.13-0.15 ns a term). No fast-math flag is set, so LLVM neither reassociates nor contracts
a multiply and an add into one FMA.

The terms it can add (``kind``): the values, their squared downsides ``min(v, 0) ** 2``
(numba's ``min(v, 0.0)``: ``v`` unless ``0.0 < v``, NaN kept), their squared deviations
``(v - mean) ** 2``.

Oracle: the scalar loop it replaced (``tests/kernels/test_simd.py``, every kind, offset and
length, with NaN, -0.0 and infinities), and numpy's ``sum`` through
:func:`engine.sweep.fused_nb.pairwise_sum_nb`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

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
    base: Any,
    m: Any,
    per_row: int,
    body: Callable[[list[Any]], None],
    *,
    start: int = 0,
) -> None:
    """``body(vectors)`` for rows ``start, start + 1, ...`` of ``base[0:m]``, a row being
    ``per_row`` vectors of 4 values (``m``: a multiple of ``4 * per_row``)."""
    width = 4 * per_row
    count = builder.sdiv(m, ir.Constant(_I64, width))
    one = ir.Constant(_I64, 1)
    first = ir.Constant(_I64, start)
    with cgutils.for_range_slice(builder, first, count, one, inc=True) as (q, _):
        at = builder.mul(q, ir.Constant(_I64, width))
        body(
            [
                _load(builder, base, builder.add(at, ir.Constant(_I64, 4 * h)))
                for h in range(per_row)
            ]
        )


def _load(builder: ir.IRBuilder, base: Any, at: Any) -> Any:
    """The 4 values at ``base[at:at + 4]``."""
    p = builder.gep(base, [at])
    return builder.load(builder.bitcast(p, _V4.as_pointer()), align=8)


def _lanes(builder: ir.IRBuilder, accs: tuple[Any, ...]) -> list[Any]:
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
        accs = (cgutils.alloca_once(builder, _V4), cgutils.alloca_once(builder, _V4))

        def loop(kind: int) -> None:
            for h, acc in enumerate(accs):  # the first row starts the accumulators
                at = ir.Constant(_I64, 4 * h)
                builder.store(_term(builder, kind, _load(builder, base, at), mean_v), acc)

            def add(vs: list[Any]) -> None:
                for v, acc in zip(vs, accs, strict=True):
                    builder.store(
                        builder.fadd(builder.load(acc), _term(builder, kind, v, mean_v)), acc
                    )

            _rows(builder, base, m_, 2, add, start=1)

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
        return context.make_tuple(builder, signature.return_type, _lanes(builder, accs))

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
        accs = (cgutils.alloca_once(builder, _V4), cgutils.alloca_once(builder, _V4))
        builder.store(ir.Constant(_V4, [-math.inf] * 4), accs[0])
        builder.store(ir.Constant(_V4, [math.inf] * 4), accs[1])
        high, low = accs

        def take(vs: list[Any]) -> None:
            (v,) = vs
            for acc, op in ((high, ">"), (low, "<")):
                old = builder.load(acc)
                builder.store(builder.select(builder.fcmp_ordered(op, v, old), v, old), acc)

        _rows(builder, base, m_, 1, take)
        return context.make_tuple(builder, signature.return_type, _lanes(builder, accs))

    return sig, codegen


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
        values = (cgutils.alloca_once(builder, _V4), cgutils.alloca_once(builder, _V4))
        downs = (cgutils.alloca_once(builder, _V4), cgutils.alloca_once(builder, _V4))
        zero = ir.Constant(_V4, [0.0] * 4)
        one = ir.Constant(_V4, [1.0] * 4)
        nxt = builder.gep(base, [ir.Constant(_I64, 1)])

        def returns(at: Any) -> list[Any]:
            out = []
            for h in (0, 1):
                i = builder.add(at, ir.Constant(_I64, 4 * h))
                p, x = _load(builder, base, i), _load(builder, nxt, i)
                r = builder.fsub(builder.fdiv(x, p), one)
                out.append(builder.select(builder.fcmp_ordered(">", p, zero), r, zero))
            for h in (0, 1):  # the row's values are all read: write its returns
                i = builder.add(at, ir.Constant(_I64, 4 * h))
                p = builder.bitcast(builder.gep(base, [i]), _V4.as_pointer())
                builder.store(out[h], p, align=8)
            return out

        for h, r in enumerate(returns(ir.Constant(_I64, 0))):
            builder.store(r, values[h])
            builder.store(_term(builder, TERM_DOWN2, r, None), downs[h])
        count = builder.sdiv(m_, ir.Constant(_I64, 8))
        step = ir.Constant(_I64, 1)
        with cgutils.for_range_slice(builder, step, count, step, inc=True) as (q, _):
            for h, r in enumerate(returns(builder.mul(q, ir.Constant(_I64, 8)))):
                builder.store(builder.fadd(builder.load(values[h]), r), values[h])
                d = _term(builder, TERM_DOWN2, r, None)
                builder.store(builder.fadd(builder.load(downs[h]), d), downs[h])
        lanes = _lanes(builder, values) + _lanes(builder, downs)
        return context.make_tuple(builder, signature.return_type, lanes)

    return sig, codegen
