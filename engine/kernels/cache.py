"""Keep numba's on-disk cache of a kernel package consistent with its sources.

Numba stamps a cached function with its own file's modification time and size and keys it on
its own bytecode. A kernel that calls, or inlines, a kernel of another module compiles that
callee into its own machine code, so after an edit to the callee's module alone numba loads
the caller's stale code from the cache. (It does not notice a changed module-level constant
either, nor a changed compiler option of :func:`engine.kernels.kernel`.)

The guard closes that gap per *kernel package*: the top-level package's direct subpackage
that holds the kernel (``engine.sim`` for ``engine.sim.loop``, ``engine.ml`` for
``engine.ml.models.trees_nb``). :func:`source_digest` hashes every ``.py`` file of that
package (recursively) and of :mod:`engine.kernels`; :func:`guard_cache` compares the digest
with the one stamped in a cache folder (``STAMP``) and, when they differ, deletes the folder's
cached machine code (``*.nbi``, ``*.nbc``) and stamps the new digest. :func:`kernel` runs it
once per process and cache folder, when it decorates the first kernel whose cache lives
there, which is before numba reads anything from that folder. Editing any source of a kernel
package therefore recompiles the package's kernels on their next call; an unchanged package
keeps its cache. A kernel package whose kernels compile kernels of *other* packages into their
own code (the fused sweep kernel in ``engine.sweep`` runs ``engine.sim``'s bar step and
``engine.strategy``'s rule step) names them in a ``KERNEL_DEPENDS`` tuple in the package's
``__init__``, above its imports; their sources join the digest of the package's cache
folder, so an edit of the simulator drops the sweep's cache too. The tuple is the package's,
not a module's: the folder is stamped when its first kernel is decorated, which may be in a
module of the package that compiles nothing of another package (``engine.sweep.program_nb``
is imported by the fused kernel's module before that module's own kernels exist).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     pkg, cache = Path(d, "pkg"), Path(d, "pkg", "__pycache__")
...     cache.mkdir(parents=True)
...     _ = Path(pkg, "a.py").write_text("x = 1\\n")
...     _ = Path(cache, "a.f-1.py311.nbi").write_bytes(b"")
...     first = guard_cache(cache, source_digest(pkg))    # no stamp yet: dropped
...     kept = guard_cache(cache, source_digest(pkg))     # same sources: kept
...     _ = Path(pkg, "a.py").write_text("x = 2\\n")
...     changed = guard_cache(cache, source_digest(pkg))  # a source changed: dropped
>>> first, kept, changed
(True, False, True)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

#: the digest file written in each guarded cache folder
STAMP = "kernel-sources.sha256"

_KERNELS_DIR = Path(__file__).resolve().parent
_digests: dict[Path, str] = {}
_checked: set[Path] = set()


def source_digest(*roots: Path) -> str:
    """SHA-256 over every ``.py`` file under ``roots`` (relative path and bytes, in sorted
    order; ``__pycache__`` folders skipped), so an edit, a new file or a rename changes it."""
    h = hashlib.sha256()
    for root in roots:
        root = Path(root)
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        for p in files:
            rel = p.relative_to(root).as_posix().encode()
            data = p.read_bytes()
            h.update(len(rel).to_bytes(8, "little") + rel)
            h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def guard_cache(cache_dir: Path, digest: str) -> bool:
    """Drop the numba cache files in ``cache_dir`` unless it is stamped with ``digest``.

    Returns True when the cache was dropped (and the new digest stamped). An unwritable
    folder is left alone (numba then cannot write its cache there either).
    """
    cache_dir = Path(cache_dir)
    stamp = cache_dir / STAMP
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return False
        cache_dir.mkdir(parents=True, exist_ok=True)
        for f in list(cache_dir.glob("*.nbi")) + list(cache_dir.glob("*.nbc")):
            f.unlink(missing_ok=True)
        tmp = cache_dir / f".{STAMP}.{os.getpid()}"
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:
        return False
    return True


def kernel_package(module: str) -> Path | None:
    """The folder of the kernel package of ``module`` (see the module docstring), or None
    for a module outside any package (a script: numba's own per-file key is all there is)."""
    parts = module.split(".")[:-1]  # the module's package
    if not parts:
        return None
    pkg = sys.modules.get(".".join(parts[:2]))
    paths = list(getattr(pkg, "__path__", None) or [])
    return Path(paths[0]).resolve() if paths else None


def ensure_fresh(cache_dir: Path, module: str) -> None:
    """Run :func:`guard_cache` for a kernel of ``module`` whose cache lives in ``cache_dir``,
    once per process and folder (the digest of each package is computed once too)."""
    cache_dir = Path(cache_dir)
    if cache_dir in _checked:
        return
    _checked.add(cache_dir)
    root = kernel_package(module)
    if root is None:
        return
    if root not in _digests:
        try:
            _digests[root] = source_digest(root, *_depends(module), _KERNELS_DIR)
        except OSError:
            return
    guard_cache(cache_dir, _digests[root])


def _depends(module: str) -> list[Path]:
    """The folders of the packages that ``module``'s kernel package names in its
    ``KERNEL_DEPENDS``, found without importing them (the package's first kernel may be
    decorated before any of them is imported). A name that is not a package is an error:
    a misspelt dependency would otherwise leave a stale cache unnoticed."""
    out = []
    package = sys.modules.get(".".join(module.split(".")[:-1][:2]))  # as kernel_package
    for name in getattr(package, "KERNEL_DEPENDS", ()):
        spec = importlib.util.find_spec(name)
        paths = list(spec.submodule_search_locations or []) if spec is not None else []
        if not paths:
            raise ImportError(f"KERNEL_DEPENDS of {module}'s package: {name!r} is not a package")
        out.append(Path(paths[0]).resolve())
    return out
