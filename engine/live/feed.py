"""Live mode's feed: closed bars in order, once each, from the websocket and REST.

The feed owns the bar clock. It warms up from REST klines, then reads the kline
websocket (:mod:`engine.live.stream`) and hands the runner each bar time once, with every
symbol's bar that the venue has for it: a bar is processed when all symbols' closed bars
are in, and after a (re)connect or a gap the missed bars are fetched through REST first, so
no bar is skipped and none is processed twice. A symbol's kline that is late (the others'
have arrived) is fetched through REST once the bar's grace period (``--bar-grace``) ends.
A frame that is not a possible closed bar (:class:`engine.live.stream.Rejected`: malformed,
impossible prices, off the grid, already decided, not closed yet by the venue's clock) never
reaches a decision: it is counted by reason, logged once per reason per minute, and the bar
it claimed to be comes from REST after the grace period. Funding events (the ``funding_rate``
feature reads the last settled one) are polled through REST as their times pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from engine.binance.records import Bar
from engine.errors import RunError
from engine.features import FUNDING_PERIOD_MS
from engine.live.journal import Journal
from engine.live.stream import Connected, Opened, Rejected, decode, kline_stream, stream_url
from engine.live.telemetry import Telemetry

Process = Callable[[int, dict[str, Bar]], Awaitable[None]]


class MarketData(Protocol):
    """What the feed reads from an exchange client (:mod:`engine.binance`)."""

    async def server_time(self) -> int: ...

    async def closed_bars(self, symbol: str, *, start: int, end: int, now: int) -> list[Bar]: ...

    async def funding_events(self, symbol: str, *, start: int,
                             end: int) -> list[tuple[int, float, float]]: ...


class Feed:
    """Closed bars of ``symbols`` at ``step_ms``, from ``ws_url`` and the REST client."""

    def __init__(self, client: MarketData, ws_url: str, symbols: tuple[str, ...], interval: str,
                 step_ms: int, journal: Journal, *, stop: asyncio.Event,
                 on_funding: Callable[[str, int, float], None], max_wait_s: float,
                 grace_s: float = 2.0, telemetry: Telemetry | None = None,
                 stream_timeout_s: float = 300.0) -> None:
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
        self.settled: dict[tuple[str, int], tuple[float, float]] = {}  # (symbol, time) -> (rate, mark)
        self.grace_s = grace_s
        self.stream_timeout_s = stream_timeout_s
        self.down_since: float | None = None  # monotonic time the stream went down
        self.telemetry = telemetry
        self.received_at: dict[int, float] = {}  # bar -> monotonic time it became complete
        self.deadline: dict[int, float] = {}  # bar -> monotonic time its grace period ends
        self.rejected: dict[str, int] = {}  # frames rejected, by reason
        self._logged: dict[str, float] = {}  # reason -> when it was last logged
        self._sync: tuple[int, float] | None = None  # (venue time, monotonic) of the last /time

    # ------------------------------------------------------------------ REST

    async def rest_bars(self, start: int, end: int, now: int) -> dict[tuple[str, int], Bar]:
        out: dict[tuple[str, int], Bar] = {}
        for s in self.symbols:
            for bar in await self.client.closed_bars(s, start=start, end=end, now=now):
                out[(s, bar.open_time)] = bar
        return out

    async def poll_funding(self, start: int, end: int, *, require: bool) -> None:
        """Fetch each symbol's funding events in ``[start, end]`` (``on_funding`` each; the
        rate and mark kept in :attr:`settled` for the book's funding at that close), the
        symbols' requests in flight together.

        With ``require``, a funding time (a multiple of 8 h) in the span whose event the
        venue has not published yet is polled again with backoff (a bounded number of
        times; then a warning and the last known rate stays in force)."""
        tasks = [asyncio.ensure_future(self._poll_symbol(s, start, end, require=require))
                 for s in self.symbols]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # one failed (or the wait was cancelled): none is left running
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _poll_symbol(self, s: str, start: int, end: int, *, require: bool) -> None:
        P = FUNDING_PERIOD_MS
        due = list(range(((start + P - 1) // P) * P, end + 1, P)) if require else []
        for attempt in range(6):
            events = await self.client.funding_events(s, start=start, end=end)
            for ft, rate, mark in events:
                self.settled[(s, ft)] = (rate, mark)
                self.on_funding(s, ft, rate)
            have = {ft for ft, _, _ in events}
            missing = [t for t in due if t not in have]
            if not missing:
                return
            if attempt == 5:
                self.journal.event(
                    "warning", "funding",
                    f"{s}: funding event(s) not published by the venue; last rate kept",
                    {"symbol": s, "missing": missing}, time_ms=end)
                return
            await asyncio.sleep(min(0.25 * 2**attempt, self.max_wait_s))

    async def funding_through(self, close_time: int) -> None:
        """Make sure every funding event up to ``close_time`` has been fetched.

        Funding settles on the 8-hour grid (:data:`FUNDING_PERIOD_MS`), so the venue is asked
        only when a funding time has passed since the last poll (one REST call in 96 bars of
        5m, not one per bar: it is on the path from a closed kline to its order). The poll
        then covers the whole span since the last one, so no event is missed."""
        P = FUNDING_PERIOD_MS
        if (close_time // P) * P > self.funding_upto:
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
        if self.telemetry is not None:
            self.telemetry.backfilled.inc(n)
        self.journal.event("info", "stream", f"backfilled {n} bar(s) through REST",
                           {"from": start, "to": last_closed}, time_ms=now)
        for t in range(start, last_closed + 1, self.step):
            if self.stop.is_set():
                return
            got = {s: bars[(s, t)] for s in self.symbols if (s, t) in bars}
            got.update(self.pending.pop(t, {}))
            await self._done(t, got, process)

    async def _done(self, t: int, bars: dict[str, Bar], process: Process) -> None:
        self.deadline.pop(t, None)
        await process(t, bars)
        self.last_done = t

    async def venue_now(self, *, ask: bool = False) -> int:
        """The venue's clock: estimated from the last ``/time`` answer and the local monotonic
        clock, or asked (``ask``: one REST call) and the estimate corrected."""
        if ask or self._sync is None:
            now = await self.client.server_time()
            self._sync = (now, time.monotonic())
            return now
        server, mono = self._sync
        return server + int((time.monotonic() - mono) * 1000)

    async def _closed(self, t: int) -> bool:
        """Has bar ``t`` closed by the venue's clock? (asks the venue when the estimate says no)"""
        return t + self.step <= await self.venue_now() or t + self.step <= await self.venue_now(ask=True)

    async def on_bar(self, bar: Bar, process: Process) -> None:
        assert self.last_done is not None
        t = bar.open_time
        if t <= self.last_done:
            self.reject(Rejected("stale", bar.symbol, t, "the bar was already decided"))
            return
        if not await self._closed(t):
            self.reject(Rejected("not_closed", bar.symbol, t, "the bar cannot have closed yet"))
            return
        if t > self.last_done + self.step:
            # a gap: bars before t are missing; fetch them through REST first
            await self.catch_up(t, process)
            if t <= (self.last_done or 0):
                return
        self._arrived(t)[bar.symbol] = bar
        if len(self.pending[t]) == len(self.symbols):
            self.received_at[t] = time.monotonic()
            await self._done(t, self.pending.pop(t), process)

    def _arrived(self, t: int) -> dict[str, Bar]:
        """Bar ``t``'s symbols so far; the first arrival starts its grace period."""
        if t not in self.pending:
            self.pending[t] = {}
            self.deadline.setdefault(t, time.monotonic() + self.grace_s)
        return self.pending[t]

    async def opened(self, o: Opened) -> None:
        """A kline still open proves the bars before it closed: each of them not yet
        processed nor started starts its grace period (:meth:`_arrived`), after which
        :meth:`overdue` fetches its missing symbols through REST. So a closed kline the
        stream lost costs the grace period, not a bar: without this, the bar waited for the
        next closed kline (one whole bar late). The venue's clock confirms it first (a
        frame from the future starts nothing); the common case, a frame of the bar after
        the last one processed, returns at the first comparison."""
        last = self.last_done
        t = o.open_time - self.step
        if last is None or t <= last or t in self.deadline:
            return
        if not await self._closed(t):
            return
        for b in range(last + self.step, t + self.step, self.step):
            if b not in self.pending:
                self._arrived(b)

    def reject(self, r: Rejected) -> None:
        """Count a frame that is not a possible closed bar (logged once per reason per
        minute); a bar it claimed to be, still to come, is taken from REST after the grace."""
        self.rejected[r.reason] = self.rejected.get(r.reason, 0) + 1
        if self.telemetry is not None:
            self.telemetry.rejected.labels(reason=r.reason).inc()
        now = time.monotonic()
        if now - self._logged.get(r.reason, -1e9) >= 60.0:
            self._logged[r.reason] = now
            self.journal.event("warning", "stream", f"websocket frame rejected ({r.reason}): {r.detail}",
                               {"reason": r.reason, "symbol": r.symbol, "open_time": r.open_time,
                                "rejected_so_far": self.rejected[r.reason]})
        t = r.open_time
        if (r.symbol in self.symbols and isinstance(t, int) and self.last_done is not None
                and t > self.last_done and t % self.step == 0 and r.reason not in ("not_closed",)):
            self._arrived(t)

    async def overdue(self, process: Process) -> None:
        """Bars whose grace period ran out: the symbols that did not arrive are fetched
        through REST (a late or rejected kline), then the bar is processed with what exists."""
        now = time.monotonic()
        for t in sorted(t for t, d in self.deadline.items() if d <= now):
            if self.last_done is not None and t <= self.last_done:
                self.deadline.pop(t, None)
                continue
            if t > (self.last_done or 0) + self.step:
                break  # earlier bars first
            missing = [s for s in self.symbols if s not in self.pending.get(t, {})]
            vnow = await self.venue_now(ask=True)
            for s in missing:
                for bar in await self.client.closed_bars(s, start=t, end=t, now=vnow):
                    self._arrived(t)[s] = bar
            if self.telemetry is not None:
                self.telemetry.backfilled.inc(len(missing))
            self.journal.event("info", "stream", f"bar {t}: {len(missing)} late kline(s) fetched through REST",
                               {"open_time": t, "symbols": missing}, time_ms=vnow)
            await self._done(t, self.pending.pop(t, {}), process)

    def _next_wait(self) -> float:
        """How long the loop may wait for a frame: until the next grace deadline, and at
        most a second (the stream's health is checked that often)."""
        if not self.deadline:
            return 1.0
        return min(1.0, max(0.0, min(self.deadline.values()) - time.monotonic()))

    def _check_stream(self) -> None:
        """A stream that cannot be (re)connected for ``stream_timeout_s`` ends the run."""
        if self.down_since is not None and time.monotonic() - self.down_since > self.stream_timeout_s:
            raise RunError(
                f"the kline stream could not be (re)connected for {self.stream_timeout_s:g} s; "
                "live mode stopped (positions and their protective orders stay at the exchange)",
                hint="check the network and --ws-url, then restart: the run resumes")

    async def run(self, process: Process, *, on_ready: Callable[[], None] | None = None) -> None:
        """Read the stream until ``stop`` is set, processing each closed bar once."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        url = stream_url(self.ws_url, self.symbols, self.interval)

        def event(severity: str, component: str, message: str, data: dict[str, Any]) -> None:
            self.journal.event(severity, component, message, data)

        def frame(raw: str | bytes) -> Bar | Opened | Rejected | None:
            return decode(raw, self.interval, self.step, self.symbols)

        def down(is_down: bool) -> None:
            if self.telemetry is not None:
                t = self.telemetry
                t.stream_down_since = (t.stream_down_since or time.monotonic()) if is_down else None
            self.down_since = (self.down_since or time.monotonic()) if is_down else None

        reader = asyncio.create_task(kline_stream(url, frame, queue, stop=self.stop, event=event,
                                                  on_down=down))
        try:
            while not self.stop.is_set():
                get = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(self.stop.wait())
                done, _ = await asyncio.wait({get, stopper}, timeout=self._next_wait(),
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if stopper in done:
                    get.cancel()
                    break
                if get not in done:
                    get.cancel()
                    self._check_stream()
                    await self.overdue(process)
                    continue
                item = get.result()
                self._check_stream()
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
                if isinstance(item, Connected):
                    if item.n > 1 and self.telemetry is not None:
                        self.telemetry.reconnects.inc()
                    await self.catch_up(await self.venue_now(ask=True), process)
                    if item.n == 1 and on_ready is not None:
                        on_ready()
                elif isinstance(item, Opened):
                    await self.opened(item)
                elif isinstance(item, Rejected):
                    self.reject(item)
                else:
                    await self.on_bar(item, process)
        finally:
            self.stop.set()
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
