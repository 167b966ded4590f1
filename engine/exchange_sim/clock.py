"""The market clock: the simulator's only "now", and the one clock a client can sync to.

It starts at ``start_ms`` and runs ``speed`` times faster than real (monotonic) time, and stops
at ``end_ms``. ``speed=0`` freezes it; it then moves only through :meth:`MarketClock.advance`
(the ``POST /sim/advance`` admin endpoint), which tests use for exact, timing-free replays.

One clock. ``GET /fapi/v1/time``, ``exchangeInfo.serverTime``, every order's ``time`` /
``updateTime``, every event's ``E`` and ``T`` and every kline are in market time: the bars keep
their true historical times, so a run log written against the simulator lines up with a
backtest over the same bars. Signed requests are checked against that same clock, with
Binance's rule (``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow``)
applied to each clock a client may have taken its time from:

- the wall clock (a client that signs with its own clock, as ccxt does by default);
- the market clock now (a client that reads its time from the market data);
- the wall clock plus each offset ``serverTime - wall`` the server has handed out at
  ``/fapi/v1/time`` or ``exchangeInfo`` (a client that synced its clock to the server, as
  python-binance's ``timestamp_offset`` and ccxt's ``adjustForTimeDifference`` do). The market
  clock may run faster than real time or jump on ``/sim/advance``; a synced client keeps the
  offset it was given, so it is checked against the clock it synced to.

A timestamp that fits none of these is refused with -1021, as Binance refuses it.
"""

from __future__ import annotations

import time
from collections import deque

SERVED_KEPT = 256  # offsets remembered (each distinct to within SERVED_MERGE_MS)
SERVED_MERGE_MS = 100


def wall_ms() -> int:
    return int(time.time() * 1000)


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
        self._served: deque[int] = deque(maxlen=SERVED_KEPT)

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

    # ------------------------------------------------------------------ serverTime
    def serve(self) -> int:
        """The market time handed to a client as ``serverTime``; its offset to the wall clock
        is remembered, so a client that syncs to it signs in a clock the server accepts."""
        now = self.now_ms()
        off = now - wall_ms()
        if not any(abs(off - o) < SERVED_MERGE_MS for o in self._served):
            self._served.append(off)
        return now

    def candidates(self, wall: int | None = None) -> list[int]:
        """The clocks a signed request's timestamp is checked against (module docstring)."""
        w = wall_ms() if wall is None else wall
        return [w, self.now_ms(), *(w + off for off in self._served)]
