"""engine.kernels.inlining: numba's inliner without the deep copies of the fresh IR it
inlines. The same results and the same LLVM IR as numba's own inliner, no block copied while
it is applied, and numba left alone when asked or when its inliner is not the expected one."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from numba import njit
from numba.core import ir

import engine.kernels  # noqa: F401  (applies the patch, as every kernel module does)
from engine.kernels.inlining import ENV_KEEP_COPIES, _shape_known, applied, numba_copies


def _leaf(x, y):  # type: ignore[no-untyped-def]
    if x > y:
        return x - y
    return y * 0.5 + x


def _mid(a, i, leaf):  # type: ignore[no-untyped-def]
    s = 0.0
    for j in range(i):
        s += leaf(a[j], a[i])
    return s


SOURCE = """
def mid(a, i):
    s = 0.0
    for j in range(i):
        s += leaf(a[j], a[i])
    return s

def top(a):
    t = 0.0
    for i in range(a.shape[0]):
        t += mid(a, i) + leaf(a[i], 1.0)
    return t
"""


def _fresh_kernel():  # type: ignore[no-untyped-def]
    """A top kernel inlining ``mid``, which inlines ``leaf``: new dispatchers every call, so
    every call compiles (no cache)."""
    ns: dict[str, object] = {}
    exec(compile(SOURCE, "<inlining-test>", "exec"), ns)
    ns["leaf"] = njit(inline="always")(_leaf)
    ns["mid"] = njit(inline="always")(ns["mid"])
    return njit(ns["top"])


def _canonical(llvm: str) -> str:
    """LLVM IR with mangled names, block labels, variable versions and SSA numbers renamed
    in order of first appearance (numba numbers them from process-wide counters) and runs of
    spaces made one (the comments after a label are aligned to its length), and the lengths
    of the string constants that hold a mangled name dropped."""
    seen: dict[str, str] = {}
    named = re.sub(
        r"_ZN\w+|B\d+|_v\d+|\.\d+", lambda m: seen.setdefault(m[0], f"#{len(seen)}"), llvm
    )
    return re.sub(r" +", " ", re.sub(r"\[\d+ x i8\]", "[_ x i8]", named))


def _python_top(a: np.ndarray) -> float:
    return sum(_mid(a, i, _leaf) + _leaf(a[i], 1.0) for i in range(a.shape[0]))


def test_the_patch_is_applied_to_the_installed_numba() -> None:
    # fails when a numba upgrade changed the inliner: re-read engine/kernels/inlining.py's
    # reasoning against the new numba.core.inline_closurecall before widening the check
    assert applied()


def test_same_results_and_llvm_ir_as_numbas_own_inliner() -> None:
    a = np.random.default_rng(7).normal(size=200)
    patched = _fresh_kernel()
    got = patched(a)
    with numba_copies():
        own = _fresh_kernel()
        want = own(a)
    assert got == want == pytest.approx(_python_top(a), rel=1e-12)
    [ir_patched] = patched.inspect_llvm().values()
    [ir_own] = own.inspect_llvm().values()
    assert _canonical(ir_patched) == _canonical(ir_own)


def test_no_block_is_copied_while_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[object] = []
    real = copy.deepcopy

    def counting(x, memo=None):  # type: ignore[no-untyped-def]
        if isinstance(x, ir.Block):
            copied.append(x)
        return real(x, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)
    a = np.ones(5)
    _fresh_kernel()(a)
    assert copied == []
    with numba_copies():
        _fresh_kernel()(a)
    assert len(copied) > 0  # numba's own inliner copies every block of every inlined callee


def test_the_environment_keeps_numbas_copies() -> None:
    code = (
        "import copy, engine.kernels, numba.core.inline_closurecall as icc\n"
        "from engine.kernels.inlining import applied\n"
        "print(applied(), icc.copy is copy)\n"
    )
    env = {**os.environ, ENV_KEEP_COPIES: "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True"]


def test_an_inliner_of_another_shape_is_left_alone() -> None:
    def fake(name: str, source: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.copy = copy  # type: ignore[attr-defined]
        exec(compile(source, name, "exec"), module.__dict__)
        return module

    worker = """
class InlineWorker:
    def inline_ir(self, caller_ir, block, i, callee_ir):
        def copy_ir(the_ir):
            return copy.deepcopy(the_ir)
        return copy_ir(callee_ir)

    def inline_function(self, caller_ir, block, i, function, arg_typs=None):
        callee_ir = self.run_untyped_passes(function)
        freevars = function.__code__.co_freevars
        return self.inline_ir(caller_ir, block, i, callee_ir, freevars, arg_typs=arg_typs)
"""
    assert _shape_known(fake("same_shape", worker))
    # a second deep copy elsewhere in the module: its blocks might be copied for a reason
    assert not _shape_known(
        fake("two_copies", worker + "\ndef other(x):\n    return copy.deepcopy(x)\n")
    )
    # the inlined IR not built by inline_function itself: it may have another owner
    assert not _shape_known(
        fake("given_ir", worker.replace("self.run_untyped_passes(function)", "function"))
    )
    # another signature: numba's inline_function changed, so its replacement would be stale
    assert not _shape_known(
        fake("new_param", worker.replace("arg_typs=None):", "arg_typs=None, ssa=False):"))
    )
    assert not _shape_known(types.ModuleType("empty"))
