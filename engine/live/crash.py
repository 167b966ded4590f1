"""Named crash points, for the tests that kill live mode at chosen moments.

``ENGINE_LIVE_CRASH_AT="intent:3"`` makes the process kill itself with SIGKILL (no cleanup,
no flush: what ``kill -9`` or a power cut does) the 3rd time it reaches the point ``intent``.
Unset (always, outside tests), :func:`point` costs one dict lookup. The points:

``intent``    an order's intent is in the log; the order is not sent yet
``sent``      the venue acknowledged an order; its state is not in the log yet
``checkpoint`` a bar's ``decided`` checkpoint is written; its decision rows are not
``decided``   a bar's decision rows are written; none of its orders is
``flip``      a flip's exit leg is done; its entry leg is not sent
``bar``       a bar's equity row is written; its ``done`` checkpoint is not
``resumed``   a resumed run finished its interrupted bar; the rest of the reconciliation is not
"""

from __future__ import annotations

import os
import signal

ENV = "ENGINE_LIVE_CRASH_AT"
POINTS = ("intent", "sent", "checkpoint", "decided", "flip", "bar", "resumed")


def _parse(spec: str) -> dict[str, int]:
    out = {}
    for item in spec.split(","):
        name, _, n = item.strip().partition(":")
        if name in POINTS:
            out[name] = int(n or 1)
    return out


_WANT = _parse(os.environ.get(ENV, ""))
_SEEN: dict[str, int] = {}


def point(name: str) -> None:
    """Die here (SIGKILL) if ``ENGINE_LIVE_CRASH_AT`` asks for this visit of ``name``."""
    if not _WANT or name not in _WANT:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _WANT[name]:
        os.kill(os.getpid(), signal.SIGKILL)
