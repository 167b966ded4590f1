"""Paging closed klines: one walk for the live client (async) and the backfill (sync).

``GET /fapi/v1/klines`` returns at most ``limit`` bars from ``startTime``; a server may cap
pages below the limit asked for (the simulator serves 1000, Binance's default), so only an
empty page, or one that does not move forward, ends the walk. A bar is kept when its open
time is in ``[start, stop]`` and it has closed by the server's ``now``.

>>> pager = KlinePager(start=0, stop=900, now=1000, step=300)
>>> pager.params("BTCUSDT", "5m")["startTime"]
0
>>> [r[0] for r in pager.take([[0], [300], [600]])]
[0, 300, 600]
>>> [r[0] for r in pager.take([[900]])]  # 900 + 300 > now: still open, left out
[]
>>> pager.done
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import DataError

PAGE = 1500


def kline_weight(limit: int) -> int:
    """REQUEST_WEIGHT of one klines call: [1,100) 1, [100,500) 2, [500,1000] 5, above 10."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


@dataclass
class KlinePager:
    """Walks ``[start, stop]`` page by page (see the module docstring)."""

    start: int
    stop: int
    now: int
    step: int
    limit: int = PAGE
    name: str = "klines"  # for messages, e.g. "http://host: BTCUSDT 5m"

    def __post_init__(self) -> None:
        self.since = self.start
        self.total = max(0, (self.stop - self.start) // self.step + 1)  # bars at most
        self.done = self.since > self.stop
        self.last = -1

    @property
    def weight(self) -> int:
        return kline_weight(self.limit)

    def params(self, exchange_symbol: str, interval: str) -> dict[str, Any]:
        """The query of the next page."""
        return {"symbol": exchange_symbol, "interval": interval, "startTime": self.since,
                "endTime": self.stop, "limit": self.limit}

    def take(self, rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """The closed bars of one page, in order; moves the walk on (``done`` at the end)."""
        if not rows:
            self.done = True
            return []
        kept = []
        for r in rows:
            t = int(r[0])
            if t < self.since or t > self.stop or t + self.step > self.now:
                continue
            if t <= self.last:
                raise DataError(f"{self.name}: klines went backwards at {t} (after {self.last})")
            kept.append(r)
            self.last = t
        newest = int(rows[-1][0])
        if newest < self.since:
            self.done = True
            return kept
        self.since = newest + self.step
        self.done = self.since > self.stop or not kept
        return kept
