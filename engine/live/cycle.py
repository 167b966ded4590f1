"""One closed bar of a live run, in two phases with a checkpoint before each one's rows.

1. **Decide** (:meth:`BarCycle.decide`): the account read is sent first (its round trip
   overlaps the rest; a quiet account, flat with no order resting, was read after the last
   bar instead: :meth:`BarCycle.quiet`), with, at a funding time with a position held, the
   close's settled funding (rate and mark, for the book; one request per symbol, in flight
   together); funding events up to the close
   (when ``funding_rate`` is a feature: the same poll); the decider steps features and rules
   (or the ensemble) into a one-bar ``Decisions``; limit entries that lived their bar are settled
   and stops/targets that fired are booked (:class:`engine.live.orders.OrderManager`); the
   book syncs with the exchange, takes back the close's funding and runs the simulator's
   decide phase. The outcome (:class:`engine.live.checkpoint.Decided`) is checkpointed,
   THEN the decision rows are written.
2. **Act** (:meth:`BarCycle.act`): funding booked; each symbol whose target differs from
   its position is traded (:meth:`OrderManager.trade`: exit leg, entry leg, protective
   orders, each intent journaled before it is sent); the book's records (closed trades,
   fees, funding, breaker events) and the ``equity`` row are journaled; then the bar's model
   predictions and (with ``log.snapshots``) feature snapshots, carried by the ``decided``
   checkpoint: nothing that the orders do not need is written before them. The bar is
   checkpointed ``done``.

Only an order's intent is synced to disk before the exchange hears of it; the two
checkpoints' commits are not (``synced=False``: they survive a killed process, and a power
loss takes back only whole bars after the last synced intent, which a restart decides again).

A run that dies in phase 2 finishes it on restart from the ``decided`` checkpoint (the
order intents it logged are looked up, not resent: :meth:`OrderManager._submit`); one that
dies before the ``decided`` checkpoint decides the bar again. A bar that closed while the
process was down (:attr:`BarCycle.stale_before`) is decided and logged as ``stale``: its
decision rows hold the position kept (``risk_check = 'stale'``) and nothing is traded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from engine.binance.errors import VenueUnavailable
from engine.binance.records import Bar
from engine.decisions import records
from engine.features import FUNDING_PERIOD_MS
from engine.live import checkpoint, crash
from engine.live.book import AccountState, Book
from engine.live.checkpoint import Checkpoint, Decided
from engine.live.decider import BarDecisions, LiveDecider
from engine.live.feed import Feed
from engine.live.journal import Journal
from engine.live.options import LiveOptions
from engine.live.orders import OrderManager
from engine.live.telemetry import Telemetry
from engine.runlog import schema
from engine.strategy.graph import StrategyGraph

STALE = schema.STALE_CHECK
STALE_REASON = "the bar closed while live mode was down: decided after the restart, not traded"


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bar's decision path, back on after it.

    A bar's work allocates enough to start a collection about once a bar; a young one takes
    about 1 ms and a full one (which walks every object the warm-up left: models, frames)
    100-250 ms (measured with the shipped ensemble). Paused, the collection that is due
    runs when the bar is done, while the loop waits for the next kline. Reference counting
    frees everything that is not a cycle as usual. A caller that had the collector off
    keeps it off."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class BarCycle:
    """The per-bar work of :class:`engine.live.runner.LiveRunner` (a base class: the runner
    wires the parts named here)."""

    graph: StrategyGraph
    opts: LiveOptions
    symbols: tuple[str, ...]
    step: int
    decider: LiveDecider
    book: Book
    orders: OrderManager
    journal: Journal
    feed: Feed
    venue: Any
    telemetry: Telemetry
    stop: asyncio.Event
    on_bar: Callable[[int], None] | None
    bar_index: int  # bars since the first warm-up bar: the backtest's bar index
    bars: int  # bars this process decided
    equity: float
    stale_before: int | None  # a bar that closed at or before this (venue ms) is stale
    in_bar: int | None = None  # the bar decided and not done yet
    outputs: BarDecisions | None = None  # the decided bar's, for its predictions and snapshots
    done_bar: int | None = None  # the last bar done
    quiet_account: Any = None  # the account read after the last bar, when it was quiet

    async def process(self, t: int, bars: dict[str, Bar]) -> None:
        """Bar ``t`` (all symbols' closed bars of that open time that exist)."""
        with gc_paused():
            await self._process(t, bars)
        self.bars += 1
        last = self.opts.max_bars is not None and self.bars >= self.opts.max_bars
        if not last:
            await self._read_quiet_account()
        if self.on_bar is not None:
            self.on_bar(t)
        if last:
            self.stop.set()

    async def _process(self, t: int, bars: dict[str, Bar]) -> None:
        d = await self.decide(t, bars)
        # the checkpoint and the decision rows, together; not synced: a power loss takes
        # them back whole and the restart decides the bar again (as a bar closed while
        # down); the first order intent's synced commit makes them durable with it
        with self.journal.log.transaction(synced=False):
            self.checkpoint("decided", t, d)
            crash.point("checkpoint")
            self.log_decisions(t, d)
        crash.point("decided")
        await self.act(t, d)
        crash.point("bar")
        self.close_bar(t, d)

    def log_outputs(self, bd: BarDecisions) -> None:
        """A bar's ``model_predictions`` and (with ``log.snapshots``) ``snapshots`` rows,
        unless the log holds them already (:class:`engine.live.journal.Journal`)."""
        t = bd.open_time
        self.journal.per_bar("model_predictions", t, lambda: self.decider.prediction_rows(bd))
        if self.graph.config.log.snapshots:
            self.journal.per_bar("snapshots", t, lambda: self.decider.snapshot_rows(bd))

    def log_decisions(self, t: int, d: Decided) -> None:
        if self.journal.decisions(t, d.rows):
            for row in d.rows:
                self.telemetry.decisions.labels(symbol=row["symbol"], action=row["action"]).inc()

    def close_bar(self, t: int, d: Decided) -> None:
        """After bar ``t``'s orders, in one transaction with its ``done`` checkpoint: what the
        book recorded (closed trades, fees, funding, breaker events), the ``equity`` row, and
        the model predictions and feature snapshots (not needed to send the orders, so made
        only now; a run that dies before this writes them when it replays the bar on
        restart: :meth:`log_outputs`)."""
        position = np.array(d.position, dtype=np.float64)
        # the WAL's pages into the database file, after the orders (the run log's own
        # checkpoints are off: RunLog.defer_wal_checkpoints); the commit below then starts
        # the WAL over, which syncs its header: here, not in the next bar's decided commit
        self.journal.log.wal_checkpoint()
        with self.journal.log.transaction(synced=False):  # the next synced commit syncs it
            self.journal.booked(self.book.drain(), self.symbols, t)
            self.journal.equity(t, d.equity, d.wallet, position, self.book.acct.last_price)
            if self.outputs is not None and self.outputs.open_time == t:
                self.log_outputs(self.outputs)
            self.checkpoint("done", t)
        self.outputs = None
        self.equity = d.equity
        self.observe_book(d.equity, d.wallet, position)

    # ------------------------------------------------------------------ phase 1

    def quiet(self) -> bool:
        """Flat in every symbol, no order resting: nothing the venue does can change the
        account before the next close (no fill, no funding, no liquidation; a transfer or a
        manual order is seen by the next read, as a reconciliation difference)."""
        return not (self.orders.resting or self.orders.protect or self.book.acct.qty.any())

    async def _read_quiet_account(self) -> None:
        """After a bar that leaves the account quiet (:meth:`quiet`), read it now, while the
        loop waits for the next kline: the next decision takes it instead of a read of its
        own (one round trip and ~1 ms of the client's work off the path from the closed
        kline to the order). A venue that does not answer leaves that read to the next bar."""
        self.quiet_account = None
        if self.quiet() and not self.stop.is_set():
            with contextlib.suppress(VenueUnavailable):
                self.quiet_account = await self.venue.account()

    async def decide(self, t: int, bars: dict[str, Bar]) -> Decided:
        # the account: the one read after the last bar when it was quiet since (the same
        # account), else read while the features and models run (it is not needed before
        # the book syncs): the request goes out first, its answer waits in the socket
        acc, self.quiet_account = (self.quiet_account if self.quiet() else None), None
        reads = [] if acc is not None else [asyncio.ensure_future(self.venue.account())]
        f = t + self.step
        if self._funding_time(f) and not self.decider.needs_funding and self.book.acct.qty.any():
            # the rate and mark of this close's funding on the positions held (for the
            # book), read meanwhile too (a position the book did not know of: asked for
            # by funding_settled)
            reads.append(asyncio.ensure_future(self.feed.poll_funding(f, f, require=False)))
        if reads:
            await asyncio.sleep(0)  # the requests out
        try:
            if self.decider.needs_funding:
                # the rate a bar's features read is the last one settled at or before its
                # close (at a funding time: polled while the account is read)
                await self.feed.funding_through(f)
            bd = self.decider.step(t, bars)
            await self._sync(t, bd, acc if acc is not None else await reads.pop(0))
            for r in reads:
                await r
        finally:
            for r in reads:
                if not r.done():  # the step failed: the read is not awaited by anyone
                    r.cancel()
        settled = await self.funding_settled(t)
        book = self.book
        book.unsettle(settled)
        wallet, position = float(book.acct.wallet[0]), book.acct.qty.copy()
        d = bd.decisions
        payoff = d.extra.get("payoff")
        target, reason, equity = book.decide(
            self.bar_index, t, bd.close[0], d.direction[0],
            prob=d.probability[0] if self.decider.kelly else None,
            payoff=payoff[0] if payoff is not None else None,
            atr=bd.atr[0] if bd.atr is not None else None)
        self.bar_index += 1
        stale = self.stale_before is not None and t + self.step <= self.stale_before
        rows = self._rows(bd, position if stale else target, reason, equity, stale=stale)
        atr = bd.atr[0] if bd.atr is not None else np.full(len(self.symbols), np.nan)
        self.outputs = bd  # its predictions and snapshots: after the orders (close_bar)
        return Decided(target=target.tolist(), reason=reason.tolist(), equity=float(equity),
                       wallet=wallet, position=position.tolist(), has_bar=bd.has_bar[0].tolist(),
                       atr=atr.tolist(), settled=settled, stale=stale, rows=rows)

    async def _sync(self, t: int, bd: BarDecisions, acc: Any) -> None:
        """Settle what happened during the bar (limit entries, stops, targets), then take
        the exchange's account (``acc``, read at the bar's close) into the book."""
        if self.orders.resting:
            await self.orders.settle_limits(t)
        if self.orders.protect:
            acc = await self.orders.check_exits(t, acc)
        differs = self.book.sync(AccountState(acc.wallet, acc.qty, acc.entry_price, acc.margin),
                                 bd.close[0], t + self.step)
        self.telemetry.unreconciled = set(differs)
        if differs:
            self.journal.event("warning", "reconcile",
                               f"positions of {differs} differ from the book: the exchange's kept",
                               {"symbols": differs}, time_ms=t + self.step)

    def _rows(self, bd: BarDecisions, target: np.ndarray, reason: np.ndarray, equity: float,
              *, stale: bool) -> list[dict[str, Any]]:
        """The bar's ``ensemble_decisions`` rows (the backtest's columns over a one-row grid);
        a stale bar's hold the position kept and say why."""
        cols = records.decision_columns(self.symbols, np.array([bd.open_time]), bd.has_bar,
                                        bd.close, bd.decisions, np.asarray(target)[None, :],
                                        reason[None, :], np.array([equity]))
        rows = records.table_rows("ensemble_decisions", cols) if cols else []
        if stale:
            for r in rows:
                r["risk_check"], r["rejection_reason"] = STALE, STALE_REASON
        return rows

    def _funding_time(self, close: int) -> bool:
        """Whether funding settles at ``close`` for this strategy (its data has funding)."""
        return close % FUNDING_PERIOD_MS == 0 and bool(self.graph.config.data.funding)

    async def funding_settled(self, t: int) -> list[tuple[str, float, float]]:
        """``(symbol, rate, mark)`` of the funding settled at the close of bar ``t`` (a
        funding time) on the positions held through it (before this close's orders fill)."""
        f = t + self.step
        if not self._funding_time(f):
            return []
        out = []
        for j, s in enumerate(self.symbols):
            if self.book.acct.qty[j] == 0.0:
                continue
            # the feed has it when it polled this funding time (in decide), else ask now
            got = self.feed.settled.get((s, f)) or await self.venue.funding_settled(s, f)
            if got is None or np.isnan(got[1]):
                self.journal.event("warning", "funding",
                                   f"{s}: funding at {f} not published; not in the trade",
                                   {"symbol": s, "funding_time": f}, time_ms=f)
                continue
            out.append((s, got[0], got[1]))
        return out

    # ------------------------------------------------------------------ phase 2

    async def act(self, t: int, d: Decided) -> None:
        """Bar ``t``'s funding and orders, as decided in ``d`` (its rows: :meth:`close_bar`)."""
        book = self.book
        self.orders.bar_received = self.feed.received_at.pop(t, None)
        for symbol, rate, mark in d.settled:
            book.funding(symbol, rate, mark, t + self.step)
        if not d.stale:
            for j, s in enumerate(self.symbols):
                if d.has_bar[j] and d.target[j] != book.acct.qty[j]:
                    await self.orders.trade(s, t, float(d.target[j]), float(d.atr[j]))
        if self.orders.bar_received is not None:  # no order at this bar: decided is done
            self.telemetry.decision_latency.observe(time.monotonic() - self.orders.bar_received)
            self.orders.bar_received = None

    def observe_book(self, equity: float, wallet: float, position: np.ndarray, *,
                     bar: bool = True) -> None:
        """The account at this close (equity = wallet + unrealised PnL), for the metrics;
        ``bar``: a bar was just done (else: the start)."""
        realized = float(sum(float(f["pnl"].sum()) for f in self.journal.trades))
        self.telemetry.book(equity=equity, unrealized=equity - wallet, realized=realized,
                            initial=float(self.graph.config.execution.initial_cash),
                            position=position, tripped=bool(self.book.brk.halted[0]))
        if bar:
            self.telemetry.bar_done()

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self, phase: str, t: int, d: Decided | None = None) -> None:
        """Save the run's state after bar ``t`` reached ``phase`` (see the module docstring)."""
        self.in_bar = t if phase == "decided" else None
        if phase == "done":
            self.done_bar = t
        checkpoint.save(self.journal.log, self.journal.run_id, Checkpoint(
            bar=t, phase=phase, bar_index=self.bar_index, book=self.book.state(),
            protect=dict(self.orders.protect), resting=dict(self.orders.resting),
            totals=self.journal.totals(), decided=d))
