"""Fault injection on demand, seeded and logged.

The spec is a comma list, for example
``ws_drop=30s,http_5xx=0.1,http_429_burst=60s,latency=200ms,malformed=0.01``:

``ws_drop=PERIOD``
    every PERIOD of wall time, every open websocket is dropped (the TCP connection is cut
    without a close frame, as a network failure looks to a client).
``http_5xx=P``
    each REST request answers a 5xx with probability P. On ``POST /fapi/v1/order`` and
    ``/fapi/v1/algoOrder`` half of these come AFTER the order was accepted: the order exists
    but the client gets Binance's 503 "execution status unknown" (-1007).
``http_429_burst=PERIOD``
    every PERIOD a burst of ``max(1 s, PERIOD/10)`` begins during which every REST request
    answers 429 (-1003) with ``Retry-After`` set to the seconds left in the burst.
``latency=DURATION``
    every REST answer is delayed by DURATION.
``malformed=P``
    each websocket frame is replaced by a truncated, invalid JSON text with probability P.

Every injected fault is counted and logged (in memory, as JSON lines in ``log_path`` when
given, and at ``GET /sim/faults``).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import UsageError

KINDS = ("ws_drop", "http_5xx", "http_429_burst", "latency", "malformed")
_DUR_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(key: str, text: str) -> float:
    m = _DUR_RE.match(text.strip())
    if m is None:
        raise UsageError(
            f"--faults {key}={text}: expected a duration such as 200ms, 30s or 2m",
            hint=f"write {key}=<number><ms|s|m|h>",
        )
    value = float(m.group(1)) * _UNIT_S[m.group(2)]
    if value <= 0:
        raise UsageError(f"--faults {key}={text}: must be greater than zero", hint=f"for example {key}=30s")
    return value


def _probability(key: str, text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0.0 <= p <= 1.0:
        raise UsageError(
            f"--faults {key}={text}: expected a probability between 0 and 1",
            hint=f"for example {key}=0.05",
        )
    return p


@dataclass(frozen=True)
class FaultSpec:
    """Parsed ``--faults``: periods and latency in seconds, probabilities in [0, 1]."""

    ws_drop_s: float | None = None
    http_5xx: float = 0.0
    http_429_burst_s: float | None = None
    latency_s: float = 0.0
    malformed: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """Parse a spec such as ``"ws_drop=30s,http_5xx=0.1"``; empty means no faults."""
        if not text or not text.strip():
            return cls()
        values: dict[str, Any] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep or key not in KINDS:
                import difflib

                close = difflib.get_close_matches(key, KINDS, n=1)
                raise UsageError(
                    f"--faults: unknown fault {item!r}",
                    hint=(f"did you mean {close[0]!r}? " if close else "")
                    + f"known faults: {', '.join(k + '=...' for k in KINDS)}",
                )
            if key == "ws_drop":
                values["ws_drop_s"] = _duration(key, val)
            elif key == "http_429_burst":
                values["http_429_burst_s"] = _duration(key, val)
            elif key == "latency":
                values["latency_s"] = _duration(key, val)
            else:
                values[key] = _probability(key, val)
        return cls(**values)

    @property
    def burst_s(self) -> float:
        """Length of one 429 burst."""
        assert self.http_429_burst_s is not None
        return max(1.0, self.http_429_burst_s / 10.0)


class FaultInjector:
    """Decides, with a seeded RNG, which faults to inject, and records each one."""

    def __init__(self, spec: FaultSpec, *, seed: int = 0, log_path: Path | None = None, keep: int = 10_000) -> None:
        self.spec = spec
        self._rng = random.Random(seed)
        self._t0 = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._log = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None  # noqa: SIM115

    @property
    def active(self) -> bool:
        s = self.spec
        return bool(s.ws_drop_s or s.http_5xx or s.http_429_burst_s or s.latency_s or s.malformed)

    def record(self, kind: str, **detail: Any) -> None:
        event = {"ts": round(time.time(), 3), "kind": kind, **detail}
        with self._lock:
            self.counts[kind] += 1
            self.events.append(event)
            if self._log is not None:
                self._log.write(json.dumps(event) + "\n")

    def draw_5xx(self) -> bool:
        return self.spec.http_5xx > 0 and self._rng.random() < self.spec.http_5xx

    def draw_after_accept(self) -> bool:
        return self._rng.random() < 0.5

    def draw_malformed(self) -> bool:
        return self.spec.malformed > 0 and self._rng.random() < self.spec.malformed

    def burst_retry_after(self, now: float | None = None) -> int | None:
        """Seconds left in the current 429 burst, or None outside a burst."""
        period = self.spec.http_429_burst_s
        if period is None:
            return None
        t = (time.monotonic() if now is None else now) - self._t0
        k = math.floor(t / period)
        if k < 1:
            return None
        left = k * period + self.spec.burst_s - t
        return max(1, math.ceil(left)) if left > 0 else None

    def snapshot(self, *, last: int = 200) -> dict[str, Any]:
        with self._lock:
            return {"counts": dict(self.counts), "events": list(self.events)[-last:]}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
