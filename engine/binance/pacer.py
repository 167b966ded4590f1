"""The request pacer: keep this client's use of the venue's budgets under a share of them.

Binance counts request weight per IP (``X-MBX-USED-WEIGHT-1M``) and new orders per account
(``X-MBX-ORDER-COUNT-10S``, ``-1M``) over fixed wall-clock windows, and answers every call
with the counts so far. The pacer reads those headers after each call (:meth:`Pacer.observe`)
and, before the next one, waits for the next window when the call's cost would cross a
budget (:meth:`Pacer.before` / :meth:`Pacer.abefore`). A count read in an earlier window no
longer binds. Market-data reads cost their weight; a new order costs weight 0 and one
order on each ORDERS budget. Clock and sleep are injected, so tests need not wait.

This is the minimal form (one client's view of the headers); a later issue grows it into a
token-bucket budget shared by every caller.

>>> t = [119.5]
>>> slept = []
>>> pacer = Pacer([Budget("weight", "X-MBX-USED-WEIGHT-1M", 100, 60.0)],
...               clock=lambda: t[0], sleep=slept.append)
>>> pacer.observe({"x-mbx-used-weight-1m": "95"})
>>> round(pacer.pause_s(weight=10), 2)  # 95 + 10 > 100: wait for the window at 120 s
0.55
>>> pacer.pause_s(weight=5)
0.0
>>> t[0] = 120.2  # a new window: the 95 read in the last one no longer counts
>>> pacer.pause_s(weight=10)
0.0
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
UNIT_S = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}


@dataclass(frozen=True)
class Budget:
    """One budget: ``kind`` ``"weight"`` or ``"orders"``, the header that reports its use,
    the most this client may use per window, and the window length in seconds."""

    kind: str
    header: str
    limit: int
    window_s: float


def default_budgets(share: float = 0.9) -> list[Budget]:
    """``share`` of Binance's usual USD-M limits: 2400 weight/min, 300 orders/10 s, 1200/min."""
    return [
        Budget("weight", WEIGHT_HEADER, max(1, int(2400 * share)), 60.0),
        Budget("orders", "X-MBX-ORDER-COUNT-10S", max(1, int(300 * share)), 10.0),
        Budget("orders", "X-MBX-ORDER-COUNT-1M", max(1, int(1200 * share)), 60.0),
    ]


def budgets_from_rate_limits(
    rate_limits: Iterable[Mapping[str, Any]], *, share: float, weight_window_s: float | None = None
) -> list[Budget]:
    """Budgets from exchangeInfo's ``rateLimits`` (``share`` of each limit).

    ``weight_window_s`` overrides the REQUEST_WEIGHT window (a test server with a short one).
    """
    out = []
    for r in rate_limits:
        kind = {"REQUEST_WEIGHT": "weight", "ORDERS": "orders"}.get(str(r.get("rateLimitType")))
        unit = str(r.get("interval", "MINUTE"))
        if kind is None or unit not in UNIT_S:
            continue
        n = int(r.get("intervalNum", 1))
        name = "USED-WEIGHT" if kind == "weight" else "ORDER-COUNT"
        header = f"X-MBX-{name}-{n}{unit[0]}"
        window = n * UNIT_S[unit]
        if kind == "weight" and weight_window_s is not None:
            window = weight_window_s
        out.append(Budget(kind, header, max(1, int(int(r["limit"]) * share)), window))
    return out


def _header(headers: Mapping[str, Any], name: str) -> Any:
    low = name.lower()
    return next((v for k, v in headers.items() if k.lower() == low), None)


class Pacer:
    """Waits before a call that would cross a budget (see the module docstring)."""

    def __init__(
        self,
        budgets: Sequence[Budget] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
        asleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        margin_s: float = 0.05,
    ) -> None:
        self.budgets = list(default_budgets() if budgets is None else budgets)
        self.clock = clock
        self.sleep = sleep
        self.asleep = asleep
        self.margin_s = margin_s
        self.waited = 0.0  # seconds spent waiting, in total
        self._used: dict[str, tuple[int, int]] = {}  # header -> (window index, used)

    def observe(self, headers: Mapping[str, Any] | None) -> None:
        """Read the used counts from a response's headers (missing headers are skipped)."""
        if not headers:
            return
        now = self.clock()
        for b in self.budgets:
            v = _header(headers, b.header)
            if v is None:
                continue
            try:
                self._used[b.header] = (math.floor(now / b.window_s), int(v))
            except (TypeError, ValueError):
                continue

    def pause_s(self, *, weight: int, orders: int = 0) -> float:
        """Seconds to wait before a call costing ``weight`` and ``orders`` (0: none)."""
        now = self.clock()
        pause = 0.0
        for b in self.budgets:
            cost = weight if b.kind == "weight" else orders
            if cost <= 0:
                continue
            index = math.floor(now / b.window_s)
            seen, used = self._used.get(b.header, (index, 0))
            if seen == index and used + cost > b.limit:
                pause = max(pause, (index + 1) * b.window_s - now + self.margin_s)
        return pause

    def before(self, *, weight: int, orders: int = 0) -> None:
        """Sleep (sync) until the call fits its budgets."""
        pause = self.pause_s(weight=weight, orders=orders)
        if pause > 0:
            self.waited += pause
            self.sleep(pause)

    async def abefore(self, *, weight: int, orders: int = 0) -> None:
        """Sleep (async) until the call fits its budgets."""
        pause = self.pause_s(weight=weight, orders=orders)
        if pause > 0:
            self.waited += pause
            await self.asleep(pause)
