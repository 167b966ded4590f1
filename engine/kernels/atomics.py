"""An atomic counter for kernels that share work between threads.

The fused sweep runs one lane per thread, each taking the next combination when it finishes
one. Taking it from Python cost a call into the kernel per combination (~40 us of unboxing
its ~60 arrays, under the GIL); :func:`fetch_add_nb` lets the lanes take it inside one call.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def fetch_add_nb(typingctx: Any, a: Any, i: Any, v: Any) -> Any:
    """``a[i] += v`` as one atomic step (sequentially consistent) of an int64 array;
    returns ``a[i]`` from before it. ``i`` is not checked."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1):
        return None
    sig = types.int64(a, i, v)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i_ = context.cast(builder, args[1], signature.args[1], types.int64)
        v_ = context.cast(builder, args[2], signature.args[2], types.int64)
        stride = builder.extract_value(ary.strides, 0)
        byte = builder.gep(
            builder.bitcast(ary.data, ir.IntType(8).as_pointer()), [builder.mul(i_, stride)]
        )
        ptr = builder.bitcast(byte, ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, v_, "seq_cst")

    return sig, codegen
