"""The one way the engine compiles a numba kernel, and the guard that keeps numba's on-disk
cache true to the sources.

- :func:`kernel`: the decorator of every kernel (``engine.features``, ``engine.sim``,
  ``engine.strategy.rules_nb``, ``engine.ml``): cached on disk, no GIL, numpy's error model,
  numba's reference counting only for the kernels that allocate.
- :func:`writable` / :func:`writable_fields`: inputs as the kernels take them (a read-only
  array would make numba compile a kernel again for it).
- :func:`guard_cache` / :func:`source_digest`: numba keys a cached function on its own file
  only, so a kernel that calls (or inlines) a kernel of another module keeps its stale machine
  code when only the callee changes. :func:`kernel` runs the guard once per cache folder:
  it hashes every source of the kernel's package (and of this package) and drops the
  folder's cached machine code when the hash differs from the one stamped there.

- :mod:`engine.kernels.simd`: the eight accumulators of numpy's pairwise sum as the lanes of
  two LLVM vectors (the sweep kernel's statistics, the same floats ~2.5x faster).
- :mod:`engine.kernels.atomics`: an atomic counter the sweep's lanes take combinations from.

This package imports only numpy, numba (llvmlite: numba's own code generator) and the
standard library (layer 1 of the engine).
"""

from __future__ import annotations

from engine.kernels.arrays import writable, writable_fields
from engine.kernels.cache import STAMP, guard_cache, source_digest
from engine.kernels.jit import kernel

__all__ = ["STAMP", "guard_cache", "kernel", "source_digest", "writable", "writable_fields"]
