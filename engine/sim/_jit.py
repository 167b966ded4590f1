"""The one decorator of the simulator's kernels: ``njit(cache=True)`` without numba's
reference counting.

``_nrt=False`` is numba's own (underscored) compiler flag: the kernels take NamedTuples of
~60 arrays, and with reference counting every call or inlined call increfs and decrefs each
of them (the batch loop ran 2 us per bar instead of ~0.06 us). None of these kernels
allocates; numba refuses to compile one that does under this flag, so a future edit that
allocates fails loudly at compile time instead of leaking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])


def kernel(*, inline: bool = False) -> Callable[[F], F]:
    """Decorate a simulator kernel; ``inline=True`` inlines it into its numba callers."""
    options: dict[str, Any] = {"cache": True, "_nrt": False}
    if inline:
        options["inline"] = "always"
    return njit(**options)  # type: ignore[no-any-return]
