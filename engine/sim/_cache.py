"""Keep numba's on-disk cache of the simulator kernels consistent with their sources."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _drop_stale_kernel_cache() -> None:
    """Delete numba's cached machine code here when any engine/sim source changed.

    Numba keys a function's cache on its own file only, but the batch loop inlines kernels
    from the other modules of this package, so an edit to ``steps.py`` would leave a stale
    ``simulate_nb`` in the cache. A hash of all the package's sources, stamped beside the
    cache files, catches that. (With NUMBA_CACHE_DIR set, clear that folder yourself.)
    """
    here = Path(__file__).resolve().parent
    try:
        digest = hashlib.sha256(
            b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))
        ).hexdigest()
        cache = here / "__pycache__"
        stamp = cache / "sim-kernels.sha256"
        if stamp.exists() and stamp.read_text() == digest:
            return
        cache.mkdir(exist_ok=True)
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink(missing_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass


_drop_stale_kernel_cache()
