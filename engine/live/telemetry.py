"""What a live run shows while it runs: Prometheus metrics and a health verdict.

One :class:`Telemetry` per run holds its own ``prometheus_client`` registry (so two runs in
one process, or a test, never share counters). The runner, the feed and the order manager
update it as things happen; gauges that are cheaper to read than to push (seconds since the
last closed bar) are computed at scrape time. :meth:`Telemetry.health` turns the same state
into ``{"status": "ok"|"degraded", "reasons": [...]}``.

:func:`serve` exposes both on one aiohttp server inside the live process's event loop:
``GET /metrics`` (Prometheus text format) and ``GET /health`` (JSON, 200 or 503). It binds to
127.0.0.1 by default; a scrape never waits for a decision and a decision never waits for a
scrape (both are short, non-blocking handlers on the same loop).

Names follow Prometheus' conventions: counters end in ``_total``, units are suffixes
(``_seconds``, ``_usdt``); ``trading_decisions_total`` and ``orders_placed_total`` are the seed
plan's names, its ``pnl_total`` is ``pnl_total_usdt`` (a gauge: PnL goes down as well as up).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.binance.budget import BudgetState

#: order and decision latencies are milliseconds on a healthy run: 0.25 ms buckets up to
#: 10 ms (so a quantile read from them is good to a quarter millisecond), coarser above
LATENCY_BUCKETS = (*(round(0.00025 * i, 5) for i in range(1, 41)), 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """The metrics of one live run over ``symbols`` (bars of ``step_ms``)."""

    def __init__(self, symbols: tuple[str, ...], step_ms: int, *, stale_after_s: float) -> None:
        r = self.registry = CollectorRegistry()
        self.symbols = symbols
        self.step_ms = step_ms
        self.stale_after_s = stale_after_s
        self.decisions = Counter("trading_decisions_total", "Decisions made, by symbol and action",
                                 ["symbol", "action"], registry=r)
        self.orders = Counter("orders_placed_total", "Order states reached, by symbol and status",
                              ["symbol", "status"], registry=r)
        self.order_latency = Histogram("order_latency_seconds",
                                       "Order intent written -> acknowledged by the venue",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.decision_latency = Histogram("decision_latency_seconds",
                                          "Closed kline received -> order request written (a bar "
                                          "without an order: -> its decision written)",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.reconnects = Counter("stream_reconnects_total", "Websocket reconnections", registry=r)
        self.backfilled = Counter("bars_backfilled_total", "Bars taken from REST instead of the stream",
                                  registry=r)
        self.rejected = Counter("frames_rejected_total", "Websocket frames rejected, by reason",
                                ["reason"], registry=r)
        self.exchange_errors = Counter("exchange_errors_total", "Venue calls retried or failed",
                                       registry=r)
        self.weight_used = Gauge("request_weight_used", "Request weight the venue counts this minute",
                                 registry=r)
        self.budget_left = Gauge("request_budget_left", "What the client's budget has left, by bucket",
                                 ["bucket"], registry=r)
        self.equity = Gauge("equity_usdt", "Equity at the last close", registry=r)
        self.unrealized = Gauge("pnl_unrealized_usdt", "Unrealised PnL at the last close", registry=r)
        self.realized = Gauge("pnl_realized_usdt", "PnL of the closed trades of this run (net)",
                              registry=r)
        self.pnl = Gauge("pnl_total_usdt", "Equity minus the run's initial equity", registry=r)
        self.position = Gauge("position_qty", "Signed position in base units, by symbol", ["symbol"],
                              registry=r)
        self.breaker = Gauge("breaker_tripped", "1 while the circuit breaker halts new entries",
                             registry=r)
        self.bar_age = Gauge("last_bar_age_seconds", "Seconds since the last closed bar was decided",
                             registry=r)
        self.bar_age.set_function(self._bar_age)
        self.last_bar_at: float | None = None  # monotonic time the last bar was decided
        self.recent_errors: list[float] = []  # monotonic times of recent venue errors
        self.unreconciled: set[str] = set()
        self.stream_down_since: float | None = None
        self.tripped = False
        self.budget: Callable[[], BudgetState] | None = None  # the client's request budget
        self.account: dict[str, float] = {}  # the last close's account (the dashboard's)

    def read_budget(self) -> None:
        """``request_weight_used`` and ``request_budget_left{bucket}`` from the client's
        :class:`engine.binance.RequestBudget` (read at scrape time)."""
        if self.budget is None:
            return
        st = self.budget()
        for b in st.buckets:
            if b.kind == "weight":
                self.weight_used.set(b.used)
            self.budget_left.labels(bucket=b.name).set(b.left)

    # ------------------------------------------------------------------ updates

    def bar_done(self) -> None:
        self.last_bar_at = time.monotonic()

    def venue_error(self) -> None:
        self.exchange_errors.inc()
        now = time.monotonic()
        self.recent_errors = [t for t in self.recent_errors if now - t < 300.0] + [now]

    def book(self, *, equity: float, unrealized: float, realized: float, initial: float,
             position: Any, tripped: bool) -> None:
        """The account after a close."""
        self.equity.set(equity)
        self.unrealized.set(unrealized)
        self.realized.set(realized)
        self.pnl.set(equity - initial)
        for s, q in zip(self.symbols, position, strict=True):
            self.position.labels(symbol=s).set(float(q))
        self.breaker.set(1.0 if tripped else 0.0)
        self.tripped = tripped
        self.account = {"equity": equity, "pnl_unrealized": unrealized, "pnl_realized": realized,
                        "pnl_total": equity - initial, "initial": initial}

    def _bar_age(self) -> float:
        return float("nan") if self.last_bar_at is None else time.monotonic() - self.last_bar_at

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """``{"status", "reasons"}``: degraded when the stream is down or stale, the venue
        keeps failing, the breaker is tripped or the book differs from the exchange."""
        reasons = []
        now = time.monotonic()
        if self.stream_down_since is not None:
            reasons.append(f"stream down for {now - self.stream_down_since:.0f} s")
        age = self._bar_age()
        if age == age and age > self.stale_after_s:
            reasons.append(f"no closed bar for {age:.0f} s")
        if sum(1 for t in self.recent_errors if now - t < 300.0) >= 5:
            reasons.append("repeated exchange errors in the last 5 minutes")
        if self.tripped:
            reasons.append("circuit breaker tripped")
        if self.unreconciled:
            reasons.append(f"positions differ from the book: {sorted(self.unreconciled)}")
        return {"status": "degraded" if reasons else "ok", "reasons": reasons}

    def exposition(self) -> bytes:
        self.read_budget()
        return generate_latest(self.registry)


class MetricsServer:
    """The running ``/metrics`` and ``/health`` server (:func:`serve`)."""

    def __init__(self, runner: Any, port: int) -> None:
        self.runner = runner
        self.port = port

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(telemetry: Telemetry, *, host: str, port: int,
                dashboard: Any = None) -> MetricsServer:
    """Start ``/metrics`` and ``/health`` on ``host:port`` (0: any free port); with
    ``dashboard`` (an :class:`engine.dashboard.server.DashServer`) its page and socket too."""
    from aiohttp import web

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=telemetry.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        h = telemetry.health()
        return web.json_response(h, status=200 if h["status"] == "ok" else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    if dashboard is not None:
        dashboard.install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = [int(addr[1]) for addr in runner.addresses if isinstance(addr, tuple)]
    return MetricsServer(runner, bound[0] if bound else port)


class LiveDash:
    """The dashboard of a live run (:mod:`engine.dashboard`): :meth:`tick` (the dashboard's
    push loop calls it every 250 ms) refreshes the values from what the run holds (account,
    positions, breaker, stream health, request budget) and, once a bar is done, reads the rows
    the run logged since (:class:`engine.dashboard.tail.RowTail`, in a worker thread);
    :meth:`candles` keeps each processed bar's candles. Nothing here is called on a decision's
    path except :meth:`candles` (a list append after the bar's orders)."""

    def __init__(self, runner: Any, telemetry: Telemetry) -> None:
        from engine.dashboard.state import DashState

        self.runner = runner
        self.telemetry = telemetry
        self.state = DashState()
        self.tail: Any = None
        self.seen_bar: int | None = None
        self._reading = False
        self.cpu_s = 0.0  # CPU seconds the ticks took (on the loop and in the row reads)
        self._read_wait = 0.0

    def candles(self, t: int, bars: dict[str, Any]) -> None:
        for s, b in bars.items():
            self.state.add_candles(s, ((t, b.open, b.high, b.low, b.close),))

    async def tick(self) -> None:
        c0 = time.thread_time()
        try:
            await self._tick()
        finally:  # the row read's own CPU is counted in its thread (_read)
            self.cpu_s += time.thread_time() - c0 - self._read_wait

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        c0 = time.thread_time()
        try:
            return self.tail.read()  # type: ignore[no-any-return]
        finally:
            self.cpu_s += time.thread_time() - c0

    async def _tick(self) -> None:
        self._read_wait = 0.0
        r, tel, st = self.runner, self.telemetry, self.state
        journal = getattr(r, "journal", None)
        if journal is None:
            return
        if self.tail is None:
            from engine.dashboard.tail import RowTail

            self.tail = RowTail(journal.log.sqlite_path, journal.run_id)
            params = r.graph.config
            st.set("run", {"run_id": journal.run_id, "mode": "live", "strategy": r.graph.name,
                           "status": "running", "symbols": list(r.symbols),
                           "interval": r.graph.interval, "replay": False,
                           "initial_equity": float(params.execution.initial_cash)})
        st.set("account", dict(tel.account))
        book = getattr(r, "book", None)
        if book is not None:
            st.set("positions", [{"symbol": s, "qty": float(q), "entry_price": float(p)}
                                 for s, q, p in zip(r.symbols, book.acct.qty, book.acct.entry_price,
                                                    strict=True) if q])
        st.set("breaker", {"tripped": tel.tripped})
        st.set("health", self._health())
        if tel.budget is not None:
            b = tel.budget()
            st.set("budget", {"weight_used": next((x.used for x in b.buckets if x.kind == "weight"), None),
                              "left": {x.name: x.left for x in b.buckets}})
        done = getattr(r, "done_bar", None)
        if done != self.seen_bar and not self._reading:
            self.seen_bar = done
            self._reading = True
            w0 = time.thread_time()
            try:
                rows = await asyncio.to_thread(self._read)
            finally:
                self._reading = False
                self._read_wait = time.thread_time() - w0  # the loop's other work meanwhile
            for table, got in rows.items():
                st.add_rows(table, got)

    def _health(self) -> dict[str, Any]:
        tel = self.telemetry
        h = tel.health()
        age = tel._bar_age()
        rejected = {}
        for metric in tel.rejected.collect():
            for smp in metric.samples:
                if smp.name.endswith("_total"):
                    rejected[smp.labels["reason"]] = int(smp.value)
        return {**h, "last_bar_age_s": None if age != age else int(age),
                "reconnects": int(tel.reconnects._value.get()), "rejected": rejected,
                "backfilled": int(tel.backfilled._value.get())}

    def close(self) -> None:
        if self.tail is not None:
            self.tail.close()
