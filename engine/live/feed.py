"""Live mode's feed: closed bars in order, once each, from the websocket and REST.

The feed owns the bar clock. It warms up from REST klines, then reads the kline
websocket (:mod:`engine.live.stream`) and hands the runner each bar time once, with every
symbol's bar that the venue has for it: a bar is processed when all symbols' closed bars
are in, and after a (re)connect or a gap the missed bars are fetched through REST first, so
no bar is skipped and none is processed twice. Funding events (the ``funding_rate``
feature reads the last settled one) are polled through REST as their times pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from engine.binance.records import Bar
from engine.features import FUNDING_PERIOD_MS
from engine.live.journal import Journal
from engine.live.stream import Connected, kline_stream, stream_url

Process = Callable[[int, dict[str, Bar]], Awaitable[None]]


class MarketData(Protocol):
    """What the feed reads from an exchange client (:mod:`engine.binance`)."""

    async def server_time(self) -> int: ...

    async def closed_bars(self, symbol: str, *, start: int, end: int, now: int) -> list[Bar]: ...

    async def funding_events(self, symbol: str, *, start: int, end: int) -> list[tuple[int, float]]: ...


class Feed:
    """Closed bars of ``symbols`` at ``step_ms``, from ``ws_url`` and the REST client."""

    def __init__(self, client: MarketData, ws_url: str, symbols: tuple[str, ...], interval: str,
                 step_ms: int, journal: Journal, *, stop: asyncio.Event,
                 on_funding: Callable[[str, int, float], None], max_wait_s: float) -> None:
        self.client = client
        self.ws_url = ws_url
        self.symbols = symbols
        self.interval = interval
        self.step = step_ms
        self.journal = journal
        self.stop = stop
        self.on_funding = on_funding
        self.max_wait_s = max_wait_s
        self.last_done: int | None = None  # open time of the last bar processed
        self.pending: dict[int, dict[str, Bar]] = {}
        self.funding_upto = 0  # funding events with time <= this have been fetched

    # ------------------------------------------------------------------ REST

    async def rest_bars(self, start: int, end: int, now: int) -> dict[tuple[str, int], Bar]:
        out: dict[tuple[str, int], Bar] = {}
        for s in self.symbols:
            for bar in await self.client.closed_bars(s, start=start, end=end, now=now):
                out[(s, bar.open_time)] = bar
        return out

    async def poll_funding(self, start: int, end: int, *, require: bool) -> None:
        """Fetch each symbol's funding events in ``[start, end]`` (``on_funding`` each).

        With ``require``, a funding time (a multiple of 8 h) in the span whose event the
        venue has not published yet is polled again with backoff (a bounded number of
        times; then a warning and the last known rate stays in force)."""
        P = FUNDING_PERIOD_MS
        due = list(range(((start + P - 1) // P) * P, end + 1, P)) if require else []
        for s in self.symbols:
            for attempt in range(6):
                events = await self.client.funding_events(s, start=start, end=end)
                for ft, rate in events:
                    self.on_funding(s, ft, rate)
                have = {ft for ft, _ in events}
                missing = [t for t in due if t not in have]
                if not missing:
                    break
                if attempt == 5:
                    self.journal.event(
                        "warning", "funding",
                        f"{s}: funding event(s) not published by the venue; last rate kept",
                        {"symbol": s, "missing": missing}, time_ms=end)
                    break
                await asyncio.sleep(min(0.25 * 2**attempt, self.max_wait_s))

    async def funding_through(self, close_time: int) -> None:
        """Make sure every funding event up to ``close_time`` has been fetched."""
        if close_time > self.funding_upto:
            await self.poll_funding(self.funding_upto + 1, close_time, require=True)
            self.funding_upto = close_time

    # ------------------------------------------------------------------ the clock

    async def catch_up(self, now: int, process: Process) -> None:
        """Process every closed bar after the last one done, from REST (after a (re)connect)."""
        assert self.last_done is not None
        last_closed = (now // self.step) * self.step - self.step
        if last_closed <= self.last_done:
            return
        start = self.last_done + self.step
        bars = await self.rest_bars(start, last_closed, now)
        n = (last_closed - start) // self.step + 1
        self.journal.event("info", "stream", f"backfilled {n} bar(s) through REST",
                           {"from": start, "to": last_closed}, time_ms=now)
        for t in range(start, last_closed + 1, self.step):
            if self.stop.is_set():
                return
            got = {s: bars[(s, t)] for s in self.symbols if (s, t) in bars}
            got.update(self.pending.pop(t, {}))
            await self._done(t, got, process)

    async def _done(self, t: int, bars: dict[str, Bar], process: Process) -> None:
        await process(t, bars)
        self.last_done = t

    async def on_bar(self, bar: Bar, process: Process) -> None:
        assert self.last_done is not None
        t = bar.open_time
        if t <= self.last_done or bar.symbol not in self.symbols:
            return  # already processed (a frame repeated after a backfill)
        if t > self.last_done + self.step:
            # a gap: bars before t are missing; fetch them through REST first
            await self.catch_up(t, process)
            if t <= (self.last_done or 0):
                return
        self.pending.setdefault(t, {})[bar.symbol] = bar
        if len(self.pending[t]) == len(self.symbols):
            await self._done(t, self.pending.pop(t), process)

    async def run(self, process: Process, *, on_ready: Callable[[], None] | None = None) -> None:
        """Read the stream until ``stop`` is set, processing each closed bar once."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        url = stream_url(self.ws_url, self.symbols, self.interval)

        def event(severity: str, component: str, message: str, data: dict[str, Any]) -> None:
            self.journal.event(severity, component, message, data)

        reader = asyncio.create_task(kline_stream(url, self.interval, queue, stop=self.stop,
                                                  event=event))
        try:
            while not self.stop.is_set():
                get = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(self.stop.wait())
                done, _ = await asyncio.wait({get, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if get not in done:
                    get.cancel()
                    break
                item = get.result()
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
                if isinstance(item, Connected):
                    await self.catch_up(await self.client.server_time(), process)
                    if item.n == 1 and on_ready is not None:
                        on_ready()
                else:
                    await self.on_bar(item, process)
        finally:
            self.stop.set()
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
