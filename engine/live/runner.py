"""``engine live``: a strategy graph one closed bar at a time against a Binance USD-M venue.

Order of work:

1. load and check the graph (see :func:`engine.live.decider.check_live_supported`);
2. connect (:mod:`engine.binance`), set leverage and margin type, reconcile: adopt the
   exchange's positions into the book, cancel our stale open orders (client ids ``e-...``),
   log both;
3. warm up from REST klines (the features' warm-up + the rules' lookback);
4. per closed bar from the feed (:mod:`engine.live.feed`): features -> rules or the
   ensemble (:mod:`engine.live.decider`) -> the simulator's decide phase on the book
   (:mod:`engine.live.book`, synchronised with the exchange) -> orders
   (:mod:`engine.live.orders`, intent journaled ``new`` BEFORE it is sent) -> every row
   in the run log through the backtest's row builders (:mod:`engine.live.journal`).

The parts: the feed (bars and the clock), the decider, the book (the simulator's state and
kernels), the order manager (behind a venue protocol), the journal (the rows). This module
only wires them and runs one bar after another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.binance import BinanceClient
from engine.binance.records import Bar
from engine.binance.venue import make_ccxt
from engine.decisions import records
from engine.errors import ConfigError, UsageError
from engine.features import FUNDING_PERIOD_MS
from engine.live.book import AccountState, Book
from engine.live.decider import LiveDecider, warmup_needed
from engine.live.feed import Feed
from engine.live.journal import Journal
from engine.live.ml_summary import live_ml_summary
from engine.live.options import LiveOptions, LiveResult
from engine.live.orders import OrderManager
from engine.live.telemetry import Telemetry, serve
from engine.runlog import RunLog
from engine.strategy.execution import sim_config, strategy_hash, symbol_specs
from engine.strategy.graph import StrategyGraph
from engine.timeutil import fmt_ms, interval_ms


class LiveRunner:
    """One live run (see the module docstring). Use :func:`run_live`."""

    def __init__(self, graph: StrategyGraph, opts: LiveOptions, *,
                 on_bar: Callable[[int], None] | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.graph = graph
        self.opts = opts
        self.url, self.ws_url = opts.endpoints()
        self.decider = LiveDecider(graph)
        self.symbols = self.decider.symbols
        self.step = interval_ms(graph.interval)
        self.on_bar = on_bar
        self.on_ready = on_ready
        self.stop = asyncio.Event()
        self.stopped_by_signal = False
        self.book = Book(self.symbols, sim_config(graph), symbol_specs(graph))
        self.bar_index = 0  # bars since the first warm-up bar: the backtest's bar index
        self.telemetry = Telemetry(self.symbols, self.step, stale_after_s=3 * self.step / 1000)
        self.metrics_port: int | None = None  # the port /metrics and /health are served on
        self.bars = 0
        self.equity = float("nan")

    # ------------------------------------------------------------------ main

    async def run(self) -> LiveResult:
        if not self.opts.key or not self.opts.secret:
            raise UsageError("live mode needs an API key and secret",
                             hint="set BINANCE_API_KEY / BINANCE_API_SECRET or pass --key-file")
        e = self.graph.config.execution
        lev = int(e.leverage)
        if lev != e.leverage:
            raise ConfigError(f"execution.leverage: Binance takes whole leverage values, got {e.leverage}",
                              hint="use an integer leverage, e.g. 2")
        ex = make_ccxt(self.url, self.opts.key, self.opts.secret, async_=True)
        log = RunLog(self.opts.results)
        status = "failed"
        try:
            run_id = log.start_run(mode="live", strategy=self.graph.name, params=self._params(),
                                   strategy_hash=strategy_hash(self.graph))
            self.journal = Journal(log, run_id, self.telemetry)
            self.venue = BinanceClient(ex, self.symbols, self.graph.interval, event=self._event_cb,
                                max_attempts=self.opts.max_attempts, max_wait_s=self.opts.max_wait_s)
            self.orders = OrderManager(
                self.venue, self.book, self.journal, step_ms=self.step,
                taker_fee=float(e.taker_fee), maker_fee=float(e.maker_fee),
                limit_entries=e.order_type == "limit",
                has_exits=e.stop_loss is not None or e.take_profit is not None)
            self.feed = Feed(self.venue, self.ws_url, self.symbols, self.graph.interval, self.step,
                             self.journal, stop=self.stop, on_funding=self.decider.add_funding,
                             max_wait_s=self.opts.max_wait_s, grace_s=self.opts.bar_grace_s,
                             telemetry=self.telemetry, stream_timeout_s=self.opts.stream_timeout_s)
            server = await self._serve_metrics()
            try:
                await self._session(lev, e.margin_mode)
                status = "stopped" if self.stopped_by_signal else "ok"
            except BaseException as err:
                self.journal.event("error", "live", f"run failed: {type(err).__name__}: {str(err)[:500]}")
                raise
            finally:
                log.finish_run(run_id, status=status, metrics={**self.metrics(), **self.ml_metrics()})
                if server is not None:
                    await server.close()
        finally:
            await ex.close()
            log.close()
        return LiveResult(run_id, status, self.bars, self.orders.orders, self.equity)

    def _params(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols), "interval": self.graph.interval,
            "venue": self.url, "ws": self.ws_url, "testnet": self.opts.testnet,
            "params": dict(self.graph.config.params), "overrides": list(self.graph.overrides),
            "config": self.graph.resolved(),
            "initial_equity": self.graph.config.execution.initial_cash,
        }

    def metrics(self) -> dict[str, Any]:
        """The run's summary metrics (the journal's rows through
        :func:`engine.metrics.compute_metrics`, as a backtest's), plus ``bars``, ``orders``
        and ``retries``."""
        out: dict[str, Any] = {"bars": self.bars, "orders": self.orders.orders,
                               "final_equity": self.equity, "retries": self.venue.retries}
        try:
            m = self.journal.metrics(self.step)
        except Exception as err:  # noqa: BLE001 - the run's own status must still be written
            self.journal.event("error", "live", f"metrics not computed: {type(err).__name__}: {str(err)[:300]}")
            return out
        return {**m, **out} if m else out

    def ml_metrics(self) -> dict[str, Any]:
        """An ML strategy's ``models`` and ``ml`` metrics over the live bars it predicted
        (:func:`engine.live.ml_summary.live_ml_summary`, the backtest's writers), writing its
        ML ``system_events`` as the backtest does. Empty for a rule strategy or a run that
        predicted no bar."""
        import json

        d = self.decider
        if d.ml is None or not d.ensembles:
            return {}
        try:
            doc, rows = live_ml_summary(d.ml_trace, d.ensembles)
        except Exception as err:  # noqa: BLE001 - the run's own status must still be written
            self.journal.event("error", "live", f"ML metrics not computed: {type(err).__name__}: {str(err)[:300]}")
            return {}
        for r in rows:
            self.journal.event(r["severity"], r["component"], r["message"],
                               json.loads(r["data"]) if r["data"] else None, time_ms=int(r["time"]))
        return doc

    def _event_cb(self, severity: str, component: str, message: str, data: dict[str, Any]) -> None:
        if component == "broker":
            self.telemetry.venue_error()
        self.journal.event(severity, component, message, data)

    async def _serve_metrics(self) -> Any:
        """``/metrics`` and ``/health`` (:mod:`engine.live.telemetry`), when asked for."""
        if self.opts.metrics_port is None:
            return None
        server = await serve(self.telemetry, host=self.opts.metrics_host, port=self.opts.metrics_port)
        self.metrics_port = server.port
        self.journal.event("info", "live", f"metrics and health on http://{self.opts.metrics_host}:"
                           f"{server.port}/metrics and /health", {"port": server.port})
        return server

    # ------------------------------------------------------------------ start

    async def _session(self, leverage: int, margin_mode: str) -> None:
        v = self.venue
        await v.load()
        await v.configure(leverage=leverage, margin_mode=margin_mode)
        await self._reconcile()
        now = await v.server_time()
        last_closed = (now // self.step) * self.step - self.step
        first, w = self._warmup_span(last_closed)
        self.journal.event(
            "info", "live", f"warm-up: {w} closed {self.graph.interval} bars from REST",
            {"warmup_start": first, "warmup_bars": w, "first_live_bar": last_closed + self.step},
            time_ms=now)
        if self.decider.needs_funding:
            # the backtest over [first, ...] knows the funding events from its first bar on
            await self.feed.poll_funding(first, now, require=False)
            self.feed.funding_upto = max(now, last_closed + self.step)
        if w > 0:
            bars = await self.feed.rest_bars(first, last_closed, now)
            for t in range(first, last_closed + 1, self.step):
                for s in self.symbols:
                    bar = bars.get((s, t))
                    if bar is not None:
                        self.decider.warm_step(bar)
                self.bar_index += 1
            if self.decider.ml is not None:
                self.decider.start_ml(run_start=first, results_dir=self.opts.results)
        self.feed.last_done = last_closed
        await self.feed.run(self._process, on_ready=self.on_ready)
        await self.orders.cancel_resting()

    def _warmup_span(self, last_closed: int) -> tuple[int, int]:
        """``(first warm-up bar, warm-up bars)`` ending at ``last_closed``."""
        w = warmup_needed(self.graph)
        first = last_closed - (w - 1) * self.step if w > 0 else last_closed + self.step
        if self.opts.since is None:
            return first, w
        since = -(-int(self.opts.since) // self.step) * self.step
        if since > first:
            raise ConfigError(
                f"--since {fmt_ms(int(self.opts.since))}: {self.graph.name} needs {w} closed "
                f"{self.graph.interval} bars of warm-up, from {fmt_ms(first)} at the latest",
                hint=f"start the warm-up at or before {fmt_ms(first)}, or drop --since")
        return since, (last_closed - since) // self.step + 1

    async def _reconcile(self) -> None:
        acc = await self.venue.account()
        held = {s: float(q) for s, q in zip(self.symbols, acc.qty, strict=True) if q != 0.0}
        now = await self.venue.server_time()
        for j, s in enumerate(self.symbols):
            self.book.adopt(s, float(acc.qty[j]), float(acc.entry_price[j]), now)
        self.book.drain()  # an adopted position is not a fill of this run
        stale = []
        for s in self.symbols:
            for o in await self.venue.open_orders(s):
                cid = str(o.get("clientOrderId") or "")
                if cid.startswith("e-"):
                    await self.venue.cancel(s, str(o["id"]))
                    stale.append({"symbol": s, "client_order_id": cid})
            for a in await self.venue.open_algo_orders(s):
                if a.client_order_id.startswith("e-"):
                    await self.venue.cancel_by_client_id(s, a.client_order_id, algo=True)
                    stale.append({"symbol": s, "client_order_id": a.client_order_id})
        self.journal.event("info", "reconcile",
                           f"start: wallet {acc.wallet:.8f}, positions {held or 'none'}, "
                           f"{len(stale)} stale open order(s) canceled",
                           {"wallet": acc.wallet, "positions": held, "canceled": stale})

    # ------------------------------------------------------------------ one bar

    async def _process(self, t: int, bars: dict[str, Bar]) -> None:
        if self.decider.needs_funding:
            # the rate a bar's features read is the last one settled at or before its close
            await self.feed.funding_through(t + self.step)
        bd = self.decider.step(t, bars)
        self.journal.predictions(bd.predictions)
        acc = await self.venue.account()
        if self.orders.resting:
            await self.orders.settle_limits(t)
        if self.orders.protect:
            acc = await self.orders.check_exits(t, acc)
        book = self.book
        differs = book.sync(AccountState(acc.wallet, acc.qty, acc.entry_price, acc.margin), bd.close[0])
        self.telemetry.unreconciled = set(differs)
        if differs:
            self.journal.event("warning", "reconcile",
                               f"positions of {differs} differ from the book: the exchange's kept",
                               {"symbols": differs}, time_ms=t + self.step)
        settled = await self._funding_settled(t)
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
        self.equity = equity
        rows = records.decision_rows(self.symbols, np.array([t]), bd.has_bar, bd.close, d,
                                     target[None, :], reason[None, :], np.array([equity]))
        self.journal.frame("ensemble_decisions", rows)
        for sym, action in zip(rows["symbol"], rows["action"], strict=True):
            self.telemetry.decisions.labels(symbol=sym, action=action).inc()
        self.orders.bar_received = self.feed.received_at.pop(t, None)
        for symbol, rate, mark in settled:
            book.funding(symbol, rate, mark, t + self.step)
        for j, s in enumerate(self.symbols):
            if bd.has_bar[0, j] and target[j] != book.acct.qty[j]:
                atr = float(bd.atr[0, j]) if bd.atr is not None else float("nan")
                await self.orders.trade(s, t, float(target[j]), atr)
        if self.orders.bar_received is not None:  # no order at this bar: decided is done
            self.telemetry.decision_latency.observe(time.monotonic() - self.orders.bar_received)
            self.orders.bar_received = None
        self.journal.booked(book.drain(), self.symbols, t)
        self.journal.equity(t, equity, wallet, position, book.acct.last_price)
        self._observe_book(equity, wallet, position)
        self.bars += 1
        if self.on_bar is not None:
            self.on_bar(t)
        if self.opts.max_bars is not None and self.bars >= self.opts.max_bars:
            self.stop.set()

    def _observe_book(self, equity: float, wallet: float, position: np.ndarray) -> None:
        """The account at this close (equity = wallet + unrealised PnL), for the metrics."""
        realized = float(sum(float(f["pnl"].sum()) for f in self.journal.trades))
        self.telemetry.book(equity=equity, unrealized=equity - wallet, realized=realized,
                            initial=float(self.graph.config.execution.initial_cash),
                            position=position, tripped=bool(self.book.brk.halted[0]))
        self.telemetry.bar_done()

    async def _funding_settled(self, t: int) -> list[tuple[str, float, float]]:
        """``(symbol, rate, mark)`` of the funding settled at the close of bar ``t`` (a
        funding time) on the positions held through it (before this close's orders fill)."""
        f = t + self.step
        if f % FUNDING_PERIOD_MS or not self.graph.config.data.funding:
            return []
        out = []
        for j, s in enumerate(self.symbols):
            if self.book.acct.qty[j] == 0.0:
                continue
            got = await self.venue.funding_settled(s, f)
            if got is None or np.isnan(got[1]):
                self.journal.event("warning", "funding",
                                   f"{s}: funding at {f} not published; not in the trade",
                                   {"symbol": s, "funding_time": f}, time_ms=f)
                continue
            out.append((s, got[0], got[1]))
        return out


def run_live(graph: StrategyGraph, opts: LiveOptions, *,
             on_bar: Callable[[int], None] | None = None,
             on_ready: Callable[[], None] | None = None,
             install_signals: bool = False) -> LiveResult:
    """Run live until ``opts.max_bars`` closed bars, SIGINT/SIGTERM (run marked ``stopped``),
    or an error (``failed``). ``on_bar(open_time)`` is called after each processed bar,
    ``on_ready()`` once the stream is connected and caught up."""

    async def main() -> LiveResult:
        runner = LiveRunner(graph, opts, on_bar=on_bar, on_ready=on_ready)
        if install_signals:
            import signal

            loop = asyncio.get_running_loop()

            def stop() -> None:
                runner.stopped_by_signal = True
                runner.stop.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
        return await runner.run()

    return asyncio.run(main())
