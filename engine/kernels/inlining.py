"""Numba's inliner without its wasted copies: kernels built of inlined steps compile in about
half the time.

A kernel marked ``inline=True`` (numba's ``inline="always"``) is inlined into its callers by
``numba.core.inline_closurecall.InlineWorker.inline_function``: it builds the callee's IR
afresh (``run_untyped_passes``, which inlines the callee's own callees the same way) and hands
it to ``inline_ir``, whose ``copy_ir`` deep-copies that IR block by block, twice ("Always
copy the callee IR, it gets mutated"; the second copy is returned and this caller drops
it). The IR is fresh and has no other owner, so the copies protect nothing, and they are not
cheap: each block is copied with a memo of its own, and an ``ir.Var`` copies its scope, so
every block drags a copy of every variable of the function (blocks x variables). In the
fused sweep kernel, whose bar step inlines a tree of steps, the copies were half of a cold
compile: ``lane_nb`` 123 -> 69 s with the same machine code (numba issue #8989; numba-cuda
dropped the copies at the same place).

:func:`skip_fresh_ir_copies` replaces ``inline_function`` with the same two steps (build the
callee's IR, ``inline_ir`` it), where a deep copy of an ``ir.Block`` made during that
``inline_ir`` call returns the block itself (a thread-local flag; what is compiled while the
IR is built copies as numba does). The module's only deep copy is ``copy_ir``'s; the patch is
applied only when numba's code still has that shape (checked on its code objects: one
function of ``numba.core.inline_closurecall`` calls ``deepcopy``, ``inline_ir``'s
``copy_ir``, and ``inline_function`` has the parameters and the calls it replaces), else
numba is left alone and compiles are just slower. One difference is visible to a caller:
the first of the four values ``inline_function`` returns, numba's unmutated copy of the
callee's IR, now shares its blocks with the inlined ones. Numba's only caller
(``InlineInlinables``) drops it; code of another package that read it would need
``ENGINE_NUMBA_INLINE_COPIES=1``, which keeps numba's copies. :mod:`engine.kernels.jit` applies it once, before the first kernel compiles.

Oracle: numba's own inliner (``tests/kernels/test_inlining.py``: the same results and LLVM IR
with and without the copies) and every kernel test, which run with it applied.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType, FunctionType, ModuleType
from typing import Any

#: set (to "1") to keep numba's deep copies of inlined IR
ENV_KEEP_COPIES = "ENGINE_NUMBA_INLINE_COPIES"

_local = threading.local()
_applied = False


class _CopyModule:
    """Stands in for the ``copy`` module inside ``numba.core.inline_closurecall``: a deep
    copy of an IR block made while a fresh IR is being inlined is the block itself; anything
    else is ``copy``'s own."""

    def __init__(self, block_type: type) -> None:
        self._block = block_type

    def deepcopy(self, x: Any, memo: dict[int, Any] | None = None) -> Any:
        if getattr(_local, "fresh", False) and not getattr(_local, "keep", False):
            if isinstance(x, self._block):
                return x
        return copy.deepcopy(x, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _codes(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


def _functions(module: ModuleType) -> Iterator[FunctionType]:
    for value in vars(module).values():
        if isinstance(value, FunctionType) and value.__module__ == module.__name__:
            yield value
        elif isinstance(value, type) and value.__module__ == module.__name__:
            yield from (f for f in vars(value).values() if isinstance(f, FunctionType))


def _shape_known(icc: ModuleType) -> bool:
    """Whether numba's inliner is the code this patch was written against (see the module
    docstring); decided on code objects, so it costs no source read."""
    worker = getattr(icc, "InlineWorker", None)
    if getattr(icc, "copy", None) is not copy or worker is None:
        return False
    inline_ir = getattr(worker, "inline_ir", None)
    inline_function = getattr(worker, "inline_function", None)
    if not isinstance(inline_ir, FunctionType) or not isinstance(inline_function, FunctionType):
        return False
    copying = [c for f in _functions(icc) for c in _codes(f.__code__) if "deepcopy" in c.co_names]
    if [c.co_name for c in copying] != ["copy_ir"]:
        return False
    if not any(c is copying[0] for c in _codes(inline_ir.__code__)):
        return False
    code = inline_function.__code__
    params = code.co_varnames[: code.co_argcount]
    if params != ("self", "caller_ir", "block", "i", "function", "arg_typs"):
        return False
    return {"run_untyped_passes", "inline_ir", "co_freevars"} <= set(code.co_names)


def skip_fresh_ir_copies() -> bool:
    """Apply the patch (once per process); whether it is applied."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_KEEP_COPIES, "") not in ("", "0"):
        return False
    import numba.core.inline_closurecall as icc
    from numba.core import ir

    if not _shape_known(icc):
        return False
    original = icc.InlineWorker.inline_function

    def inline_function(  # type: ignore[no-untyped-def]
        self, caller_ir, block, i, function, arg_typs=None
    ):
        # numba's inline_function, with the block copies skipped for the IR built here only
        # (not for anything compiled while it is built: run_untyped_passes runs unflagged)
        callee_ir = self.run_untyped_passes(function)
        freevars = function.__code__.co_freevars
        outer = getattr(_local, "fresh", False)
        _local.fresh = True
        try:
            return self.inline_ir(caller_ir, block, i, callee_ir, freevars, arg_typs=arg_typs)
        finally:
            _local.fresh = outer

    inline_function.__doc__ = original.__doc__
    inline_function.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(icc, "copy", _CopyModule(ir.Block))  # noqa: B010  (a module replaced: not typed)
    setattr(icc.InlineWorker, "inline_function", inline_function)  # noqa: B010
    _applied = True
    return True


def applied() -> bool:
    """Whether this process compiles with :func:`skip_fresh_ir_copies` applied."""
    return _applied


@contextmanager
def numba_copies() -> Iterator[None]:
    """Within the block, inlining makes numba's own copies (for comparing the two)."""
    outer = getattr(_local, "keep", False)
    _local.keep = True
    try:
        yield
    finally:
        _local.keep = outer
