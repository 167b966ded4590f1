"""The market clock: the simulator's only "now" of the market.

It starts at ``start_ms`` and runs ``speed`` times faster than real (monotonic) time, and stops
at ``end_ms``. ``speed=0`` freezes it; it then moves only through :meth:`MarketClock.advance`
(the ``POST /sim/advance`` admin endpoint), which tests use for exact, timing-free replays.
Request timestamps and signatures are checked against the wall clock, not this one.
"""

from __future__ import annotations

import time


class MarketClock:
    """Market time in UTC ms, derived from ``time.monotonic()``."""

    def __init__(self, *, start_ms: int, speed: float, end_ms: int | None = None) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.start_ms = int(start_ms)
        self.end_ms = end_ms
        self.speed = float(speed)
        self._t0 = time.monotonic()
        self._offset_ms = 0.0  # manual advances

    def restart(self) -> None:
        """Re-anchor the wall origin (the clock starts when the server starts serving)."""
        self._t0 = time.monotonic()

    def now_ms(self) -> int:
        elapsed = (time.monotonic() - self._t0) * 1000.0 * self.speed
        t = int(self.start_ms + elapsed + self._offset_ms)
        if self.end_ms is not None and t > self.end_ms:
            return self.end_ms
        return t

    def advance(self, ms: int) -> int:
        """Move market time forward by ``ms`` (any speed); return the new time."""
        if ms < 0:
            raise ValueError("the market clock never goes back")
        self._offset_ms += ms
        return self.now_ms()

    def wall_delay_s(self, market_ms: int) -> float:
        """Real seconds until the clock reaches ``market_ms`` (inf when frozen, 0 if passed)."""
        ahead = market_ms - self.now_ms()
        if ahead <= 0:
            return 0.0
        if self.speed == 0:
            return float("inf")
        return ahead / (1000.0 * self.speed)
