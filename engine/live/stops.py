"""Clean stops: what SIGINT/SIGTERM do, and what a run leaves at the exchange when it ends.

The first signal decides nothing more: the feed takes no further bar, and every wait of the
Binance client (request budget, a 429/418 halt, a retry's backoff) ends at once
(:class:`engine.binance.Stopped`), so the signal takes effect within a second even then.
A bar whose orders were under way when the wait ended is finished by the next start of the
run (its ``decided`` checkpoint, :mod:`engine.live.checkpoint`). Then :func:`finish`:

* resting limit entries are canceled; the stop/target orders of positions still held stay
  at the exchange (the output and a ``live`` event list them), so a position stopped
  overnight is still protected;
* with ``--flatten-on-exit`` every protective order is canceled and every position closed
  by a reduce-only market order (leg ``end``, booked as the backtest's end-of-run exit);
  the client may wait for the venue again here (a second signal still exits at once);
* the log is complete (every append is committed when it returns), the run is ``stopped``,
  the command exits 0.

A second signal exits at once (``os._exit``): the run log stays consistent, as after any
crash (SQLite in WAL mode commits atomically), the run stays ``running`` until the next
start marks it ``failed`` and resumes it. The same :func:`finish` (without flattening) ends
a run that reached ``--max-bars``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from types import FrameType
from typing import Any

from engine.binance import Stopped
from engine.errors import ExchangeError


def install(runner: Any, loop: asyncio.AbstractEventLoop) -> None:
    """SIGINT/SIGTERM stop ``runner`` cleanly; a second signal exits at once.

    Python-level handlers (not the loop's), so a second signal ends the process even while
    the loop is busy (a model being trained)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if runner.signals:
            os._exit(128 + signum)
        runner.signals += 1
        loop.call_soon_threadsafe(_stop, runner)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _stop(runner: Any) -> None:
    runner.stop.set()
    runner.halt.set()


async def finish(runner: Any, status: str) -> dict[str, list[tuple[str, float]]]:
    """The end of a run that did not fail (see the module docstring); returns the protective
    orders left resting, per symbol: ``[(leg, trigger price)]``."""
    if not hasattr(runner, "orders"):
        return {}
    flatten = status == "stopped" and runner.opts.flatten_on_exit
    what = "flatten" if flatten else "cancel resting entries"
    try:
        if flatten:
            runner.halt.clear()  # flattening is worth waiting for the venue
            await _flatten(runner)
        else:
            await runner.orders.cancel_resting()
    except (Stopped, ExchangeError) as err:
        runner.journal.event("warning", "live", f"{what} at the stop not finished: "
                             f"{type(err).__name__}: {str(err)[:300]}; the next start reconciles", {})
    kept = {s: [(ev.leg, float(ev.price)) for ev in evs]
            for s, evs in runner.orders.protect.items() if evs}
    held = runner._positions()
    runner.journal.event(
        "info", "live",
        f"{status}: positions {held or 'none'}"
        + (f"; protective orders kept at the exchange: {kept}" if kept else ""),
        {"status": status, "positions": held, "kept": kept, "flattened": flatten})
    bar = runner.in_bar if flatten and runner.in_bar is not None else runner.done_bar
    if bar is not None and (runner.in_bar is None or flatten):
        runner.checkpoint("done", bar)  # a bar left half done stays for the next start
    return kept


async def _flatten(runner: Any) -> None:
    """Every order of the run canceled, every position closed (leg ``end``)."""
    orders, venue = runner.orders, runner.venue
    await orders.cancel_resting()
    now = await venue.server_time()
    for s in list(orders.protect):
        await orders.cancel_exits(s, now)
    acc = await venue.account()
    t = runner.in_bar if runner.in_bar is not None else (runner.done_bar or now)
    for j, s in enumerate(runner.symbols):
        q = float(acc.qty[j])
        if q != 0.0:
            await orders.close_position(s, t, q, now)
    runner.journal.booked(runner.book.drain(), runner.symbols, now)
