"""The one decorator of the engine's numba kernels.

Every kernel is compiled the same way:

- ``cache=True``: machine code is cached on disk beside the source (``__pycache__``), and
  :mod:`engine.kernels.cache` drops that cache when any source of the kernel's package changed;
- ``nogil=True``: a kernel called from Python releases the GIL (the tree kernel runs in
  threads; nothing else depends on it);
- ``error_model="numpy"``: a float division by zero gives inf or NaN, as numpy's arrays do,
  instead of raising (no zero test before every division; values are otherwise the same);
- no reference counting (numba's underscored ``_nrt=False`` flag) unless the kernel
  ``allocates``: the simulator's kernels take NamedTuples of ~60 arrays, and with reference
  counting every call or inlined call increfs and decrefs each of them (the batch loop ran
  2 us per bar instead of ~0.06 us). Numba refuses to compile a kernel that allocates an array
  under this flag, so a kernel that starts allocating fails loudly at compile time until it
  says ``allocates=True``;
- ``inline=True`` inlines the kernel into its numba callers (small per-bar steps), through
  numba's inliner without its wasted deep copies of the inlined IR
  (:func:`engine.kernels.inlining.skip_fresh_ir_copies`, applied when this module is imported:
  cold compiles about twice as fast).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from numba import njit

from engine.kernels.cache import ensure_fresh
from engine.kernels.inlining import skip_fresh_ir_copies

skip_fresh_ir_copies()

F = TypeVar("F", bound=Callable[..., Any])


@overload
def kernel(fn: F, /) -> F: ...


@overload
def kernel(*, inline: bool = False, allocates: bool = False) -> Callable[[F], F]: ...


def kernel(
    fn: F | None = None, /, *, inline: bool = False, allocates: bool = False
) -> F | Callable[[F], F]:
    """Compile ``fn`` as an engine kernel: ``@kernel``, ``@kernel()`` or
    ``@kernel(inline=True)`` / ``@kernel(allocates=True)`` (see the module docstring)."""
    options: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}
    if not allocates:
        options["_nrt"] = False
    if inline:
        options["inline"] = "always"

    def wrap(f: F) -> F:
        dispatcher = njit(**options)(f)
        cache_path = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
        if cache_path is not None:
            ensure_fresh(Path(cache_path), f.__module__)
        return dispatcher  # type: ignore[no-any-return]

    return wrap(fn) if fn is not None else wrap
