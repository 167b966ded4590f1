"""Arrays as the kernels take them: writable.

numba types a read-only array apart from a writable one (``readonly array(float64, 2d, C)``),
so a kernel handed one compiles again for it, once per process until the on-disk cache holds
both (~100 s for the sweep kernel, ~30 s for the simulator's fold). Read-only arrays reach the
engine from zero-copy reads (polars' and Arrow's ``to_numpy``) and from Ray's object store.
The entry points that call the big kernels pass their inputs through :func:`writable` (an
array) or :func:`writable_fields` (a NamedTuple of arrays), which copy only what is read-only.

>>> import numpy as np
>>> a = np.arange(3.0)
>>> writable(a) is a
True
>>> a.flags.writeable = False
>>> b = writable(a)
>>> b.flags.writeable, bool((b == a).all())
(True, True)
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def writable(a: np.ndarray) -> np.ndarray:
    """``a`` itself when writable, else a writable copy."""
    return a if a.flags.writeable else a.copy()


def writable_fields(arrays: T) -> T:
    """A NamedTuple of arrays with each read-only one copied (itself when none is)."""
    fields: Any = arrays
    if all(a.flags.writeable for a in fields):
        return arrays
    return type(arrays)(*(writable(a) for a in fields))  # type: ignore[call-arg]
