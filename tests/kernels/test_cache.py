"""The cache guard of engine.kernels: a kernel whose callee in another module changed is
recompiled, an unchanged package keeps numba's cache (real numba, real files, fresh
interpreters: numba reads its on-disk cache only in a new process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.kernels import STAMP, guard_cache, kernel, source_digest
from engine.kernels.cache import kernel_package

ROOT = Path(__file__).resolve().parents[2]

INNER = """
from {deco_import}

@{deco}
def inner(x):
    return x + {step}
"""

OUTER = """
from {deco_import}
from {pkg}.inner import inner

@{deco}
def outer(x):
    return inner(x) * 2.0
"""

RUN = """
from {pkg}.outer import outer
value = outer(1.0)
hits = sum(outer.stats.cache_hits.values())
print(value, hits)
"""


def _package(base: Path, name: str, *, guarded: bool, step: float = 1.0) -> Path:
    """A two-module kernel package: ``outer`` (in outer.py) calls ``inner`` (in inner.py)."""
    deco_import, deco = (
        ("engine.kernels import kernel", "kernel")
        if guarded
        else ("numba import njit", "njit(cache=True)")
    )
    pkg = base / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "inner.py").write_text(INNER.format(deco_import=deco_import, deco=deco, step=step))
    (pkg / "outer.py").write_text(OUTER.format(deco_import=deco_import, deco=deco, pkg=name))
    return pkg


def _run(base: Path, name: str) -> tuple[float, int]:
    """``outer(1.0)`` in a fresh interpreter and how many of its signatures came from the cache."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(base), str(ROOT)])}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run(
        [sys.executable, "-c", RUN.format(pkg=name)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    return float(out[0]), int(out[1])


def _edit_inner(pkg: Path, step: float) -> None:
    src = pkg / "inner.py"
    text = src.read_text()
    src.write_text(text.replace("x + 1.0", f"x + {step}"))


@pytest.mark.slow
def test_numba_alone_keeps_a_stale_caller_when_only_its_callee_changed(tmp_path: Path) -> None:
    """The problem the guard solves (so the next test can fail): plain ``njit(cache=True)``
    loads ``outer`` from its cache after ``inner`` changed and returns the old value."""
    pkg = _package(tmp_path, "plainpkg", guarded=False)
    assert _run(tmp_path, "plainpkg") == (4.0, 0)
    _edit_inner(pkg, 2.0)
    assert _run(tmp_path, "plainpkg") == (4.0, 1)  # stale: (1 + 2) * 2 is 6


@pytest.mark.slow
def test_guard_recompiles_after_a_callee_changed_and_keeps_an_unchanged_cache(
    tmp_path: Path,
) -> None:
    pkg = _package(tmp_path, "guardedpkg", guarded=True)
    assert _run(tmp_path, "guardedpkg") == (4.0, 0)  # compiled, cache written
    assert _run(tmp_path, "guardedpkg") == (4.0, 1)  # unchanged sources: loaded from the cache
    stamp = pkg / "__pycache__" / STAMP
    assert stamp.read_text() == source_digest(pkg, ROOT / "engine" / "kernels")
    _edit_inner(pkg, 2.0)
    assert _run(tmp_path, "guardedpkg") == (6.0, 0)  # the guard dropped the stale cache
    assert _run(tmp_path, "guardedpkg") == (6.0, 1)  # and the new code is cached again


def test_source_digest_follows_every_source_of_the_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 1\n")
    before = source_digest(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("ignored\n")
    (pkg / "notes.txt").write_text("not a source\n")
    assert source_digest(pkg) == before
    (pkg / "sub" / "b.py").write_text("B = 2\n")  # a nested module (e.g. engine/ml/models)
    changed = source_digest(pkg)
    assert changed != before
    (pkg / "sub" / "b.py").rename(pkg / "sub" / "c.py")  # same bytes, another module
    assert source_digest(pkg) != changed


def test_guard_drops_only_numba_files_and_only_when_the_digest_changed(tmp_path: Path) -> None:
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "m.f-3.py311.nbi").write_bytes(b"index")
    (cache / "m.f-3.py311.1.nbc").write_bytes(b"code")
    (cache / "m.cpython-311.pyc").write_bytes(b"bytecode")
    assert guard_cache(cache, "d1") is True  # no stamp: whatever is there may be stale
    assert sorted(p.name for p in cache.iterdir()) == [STAMP, "m.cpython-311.pyc"]
    (cache / "m.f-3.py311.nbi").write_bytes(b"index")
    assert guard_cache(cache, "d1") is False
    assert (cache / "m.f-3.py311.nbi").exists()
    assert guard_cache(cache, "d2") is True
    assert not (cache / "m.f-3.py311.nbi").exists()
    assert (cache / STAMP).read_text() == "d2"


def test_kernel_package_is_the_top_packages_direct_subpackage() -> None:
    import engine.ml.models  # noqa: F401
    import engine.sim  # noqa: F401

    engine_dir = ROOT / "engine"
    assert kernel_package("engine.sim.loop") == engine_dir / "sim"
    assert kernel_package("engine.ml.models.trees_nb") == engine_dir / "ml"
    assert kernel_package("engine.ml.fusion_nb") == engine_dir / "ml"
    assert kernel_package("__main__") is None


def test_every_engine_kernel_package_is_stamped_with_its_digest() -> None:
    """Importing the kernel modules runs the guard for each cache folder they use."""
    import engine.features.plan_nb  # noqa: F401
    import engine.ml.fusion_nb  # noqa: F401
    import engine.ml.models.trees_nb  # noqa: F401
    import engine.sim.loop  # noqa: F401
    import engine.strategy.rules_nb  # noqa: F401

    kernels_dir = ROOT / "engine" / "kernels"
    for pkg, cache in [
        ("features", "features"),
        ("sim", "sim"),
        ("ml", "ml"),
        ("ml", "ml/models"),
        ("strategy", "strategy"),
    ]:
        stamp = ROOT / "engine" / cache / "__pycache__" / STAMP
        assert stamp.read_text() == source_digest(ROOT / "engine" / pkg, kernels_dir), cache


def test_the_sweep_kernels_digest_follows_the_simulator_and_the_rule_step() -> None:
    """The fused sweep kernel compiles engine.sim's bar step and engine.strategy's rule step
    into its own code, so their sources join engine/sweep's digest, whichever module of the
    package is decorated first (engine.sweep.program_nb, which compiles nothing of theirs,
    is: a module-level KERNEL_DEPENDS in fused_nb was missed and an edit of the simulator
    alone left the sweep's stale machine code in the cache)."""
    import engine.sweep.fused_nb  # noqa: F401

    engine_dir = ROOT / "engine"
    stamp = engine_dir / "sweep" / "__pycache__" / STAMP
    want = source_digest(
        engine_dir / "sweep", engine_dir / "sim", engine_dir / "strategy", engine_dir / "kernels"
    )
    assert stamp.read_text() == want


DEP = """
from engine.kernels import kernel

@kernel
def inner(x):
    return x + {step}
"""

FIRST = """
from engine.kernels import kernel

@kernel
def first(x):
    return x
"""

USER = """
from engine.kernels import kernel
from {pkg}.first import first
from {dep}.inner import inner

@kernel
def outer(x):
    return inner(first(x)) * 2.0
"""


@pytest.mark.slow
def test_guard_follows_the_packages_a_kernel_package_depends_on(tmp_path: Path) -> None:
    """A package whose kernels compile another package's (``KERNEL_DEPENDS`` in its
    ``__init__``) is recompiled after an edit of that package alone, though its first
    kernel, decorated before the dependency is imported, calls nothing of it."""
    dep, pkg = tmp_path / "deppkg", tmp_path / "userpkg"
    dep.mkdir()
    pkg.mkdir()
    (dep / "__init__.py").write_text("")
    (dep / "inner.py").write_text(DEP.format(step=1.0))
    (pkg / "__init__.py").write_text('KERNEL_DEPENDS = ("deppkg",)\n')
    (pkg / "first.py").write_text(FIRST)
    (pkg / "outer.py").write_text(USER.format(pkg="userpkg", dep="deppkg"))
    assert _run(tmp_path, "userpkg") == (4.0, 0)
    assert _run(tmp_path, "userpkg") == (4.0, 1)
    _edit_inner(dep, 2.0)
    assert _run(tmp_path, "userpkg") == (6.0, 0)  # stale without the package's KERNEL_DEPENDS
    assert _run(tmp_path, "userpkg") == (6.0, 1)


def test_a_misspelt_dependency_is_an_error(tmp_path: Path) -> None:
    from engine.kernels.cache import _depends

    pkg = tmp_path / "typopkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('KERNEL_DEPENDS = ("no_such_package_here",)\n')
    sys.path.insert(0, str(tmp_path))
    try:
        import typopkg  # noqa: F401

        with pytest.raises(ImportError, match="no_such_package_here"):
            _depends("typopkg.mod")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("typopkg", None)


def _zeros(n):  # type: ignore[no-untyped-def]
    return np.zeros(n)


def _ones(n):  # type: ignore[no-untyped-def]
    return np.ones(n)


def test_kernel_compiles_without_reference_counting_unless_it_allocates() -> None:
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        kernel(_zeros)(3)
    assert kernel(allocates=True)(_ones)(3).tolist() == [1.0, 1.0, 1.0]
