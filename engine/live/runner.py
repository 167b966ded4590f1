"""``engine live``: a strategy graph one closed bar at a time against a Binance USD-M venue.

Order of work:

1. load and check the graph (see :func:`engine.live.decider.check_live_supported`); serve
   ``/metrics`` and ``/health`` (:mod:`engine.live.telemetry`);
2. connect (:mod:`engine.binance`): the venue's markets, its own trading rules and rate
   limits (:meth:`BinanceClient.venue_specs`: a symbol it does not list stops here, before
   anything is sent), leverage and margin type; a key or secret the venue refuses is a
   one-line error (exit 2);
3. the run: a new one, or one resumed (:mod:`engine.live.resume`);
4. a new run adopts the exchange's positions (:mod:`engine.live.reconcile`) and warms up
   from REST klines (the features' warm-up + the rules' lookback); a resumed run restores
   its checkpoint (:mod:`engine.live.checkpoint`), replays its bars through the features,
   finishes the bar it was in, and reconciles orders and positions with the exchange;
   either way a held position gets its protective orders;
5. per closed bar from the feed (:mod:`engine.live.feed`): decide, checkpoint, act
   (:mod:`engine.live.cycle`); bars that closed while a resumed run was down are decided
   as stale, not traded;
6. the end: ``--max-bars`` (``ok``), SIGINT/SIGTERM (``stopped``: see :mod:`engine.live.stops`)
   or an error (``failed``; positions and protective orders stay).

The parts: the feed (bars and the clock), the decider, the book (the simulator's state and
kernels), the order manager (behind a venue protocol), the journal (the rows). This module
wires them and runs one bar after another.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
from collections.abc import Callable
from typing import Any

from engine.binance import BinanceClient, Stopped, VenueFatal
from engine.binance.venue import make_ccxt
from engine.dashboard.server import DashServer
from engine.errors import ConfigError, UsageError
from engine.live import crash, reconcile, resume, stops
from engine.live.book import Book
from engine.live.cycle import BarCycle
from engine.live.decider import LiveDecider, warmup_needed
from engine.live.feed import Feed
from engine.live.journal import Journal
from engine.live.ml_summary import live_ml_summary
from engine.live.options import LiveOptions, LiveResult, RunStart, redact
from engine.live.orders import OrderManager
from engine.live.telemetry import LiveDash, MetricsServer, Telemetry, serve
from engine.runlog import RunLog
from engine.strategy.execution import sim_config, strategy_hash, symbol_specs
from engine.strategy.graph import StrategyGraph
from engine.timeutil import fmt_ms, interval_ms

#: Binance's codes for a key or secret it does not accept
AUTH_CODES = (-2015, -2014, -1022, -2008)
#: a bar that closed this long before a resumed run's start is stale (not traded)
STALE_AFTER_MS = 10_000


class LiveRunner(BarCycle):
    """One live run (see the module docstring). Use :func:`run_live`."""

    def __init__(self, graph: StrategyGraph, opts: LiveOptions, *,
                 on_bar: Callable[[int], None] | None = None,
                 on_ready: Callable[[], None] | None = None,
                 on_start: Callable[[RunStart], None] | None = None) -> None:
        self.graph = graph
        self.opts = opts
        self.url, self.ws_url = opts.endpoints()
        self.decider = LiveDecider(graph, event=self._event_cb)
        self.symbols = self.decider.symbols
        self.step = interval_ms(graph.interval)
        self.on_bar, self.on_ready, self.on_start = on_bar, on_ready, on_start
        self.stop = asyncio.Event()  # no more bars (max bars, a signal)
        self.halt = asyncio.Event()  # a signal: every wait of the client ends at once
        self.signals = 0
        self.bar_index = 0
        self.telemetry = Telemetry(self.symbols, self.step, stale_after_s=3 * self.step / 1000)
        self.metrics_port: int | None = None  # the port /metrics and /health are served on
        self.dash: LiveDash | None = None  # the dashboard's view of this run (--dashboard-port)
        self.dash_server: DashServer | None = None
        self.bars = 0
        self.equity = float("nan")
        self.stale_before: int | None = None
        self.resumed = False
        self.secrets = (opts.key, opts.secret)
        self._early: list[tuple[str, str, str, dict[str, Any]]] = []  # events before the journal

    def request_stop(self) -> None:
        """A stop signal: decide nothing more; waits for the venue end now."""
        self.signals += 1
        self.stop.set()
        self.halt.set()

    # ------------------------------------------------------------------ main

    async def run(self) -> LiveResult:
        if not self.opts.key or not self.opts.secret:
            raise UsageError("live mode needs an API key and secret",
                             hint="set BINANCE_API_KEY / BINANCE_API_SECRET or pass --key-file")
        lev = self._leverage()
        self._dashboard()
        server = await self._serve_metrics()
        own_dash = await self._serve_dashboard(server)
        ex = make_ccxt(self.url, self.opts.key, self.opts.secret, async_=True)
        log = RunLog(self.opts.results)
        log.defer_wal_checkpoints()  # never inside a bar's commits: BarCycle.process
        try:
            self.venue = BinanceClient(ex, self.symbols, self.graph.interval, event=self._event_cb,
                                       max_attempts=self.opts.max_attempts,
                                       max_wait_s=self.opts.max_wait_s, stop=self.halt)
            self.telemetry.budget = self.venue.budget.state
            try:
                await self._connect(lev)
            except Stopped:
                return LiveResult("", "stopped", 0, 0, float("nan"))  # before any run began
            choice = resume.find_run(log, run_id=self.opts.run_id, new_run=self.opts.new_run,
                                     digest=strategy_hash(self.graph), symbols=self.symbols,
                                     venue=self.url)
            return await self._run(log, choice)
        finally:
            if server is not None:
                await server.close()
            if own_dash:
                await own_dash.close()
            if self.dash is not None:
                self.dash.close()
            await ex.close()
            log.close()
            gc.unfreeze()  # the run's objects may be freed, cycles included

    async def _run(self, log: RunLog, choice: resume.Choice) -> LiveResult:
        prior = None
        if choice.run_id is not None:
            resume.reopen(log, choice.run_id)
            prior = resume.load_prior(log, choice.run_id)
            run_id = choice.run_id
        else:
            run_id = log.start_run(mode="live", strategy=self.graph.name, params=self._params(),
                                   strategy_hash=strategy_hash(self.graph))
        self._wire(log, run_id)
        self.resumed = prior is not None
        if prior is not None:
            self.journal.event("info", "live", f"resumed by process {os.getpid()}: "
                               f"{choice.reason}", {"resumes": prior.resumes + 1})
        if self.on_start is not None:
            self.on_start(RunStart(run_id, self.resumed, choice.reason, self._metrics_url(),
                                   self._dash_url()))
        status = "failed"
        try:
            await self._session(prior)
            status = "stopped" if self.signals else "ok"
        except Stopped:
            if not self.signals:
                raise
            status = "stopped"
        except BaseException as err:
            self.journal.event("error", "live", f"run failed: {type(err).__name__}: "
                               f"{redact(str(err), self.secrets)[:500]}")
            raise
        finally:
            kept = await self._finish(status)
            log.finish_run(run_id, status=status, metrics={**self.metrics(), **self.ml_metrics()})
        return LiveResult(run_id, status, self.bars, self.orders.orders, self.equity,
                          resumed=self.resumed, kept=kept, positions=self._positions())

    async def _finish(self, status: str) -> dict[str, list[tuple[str, float]]]:
        """What a run that did not fail leaves at the exchange (:func:`stops.finish`)."""
        if status == "failed":
            return {}
        try:
            return await stops.finish(self, status)
        except Exception as err:  # noqa: BLE001 - the run's own status must still be written
            self.journal.event("error", "live", f"end of run not finished: {type(err).__name__}: "
                               f"{redact(str(err), self.secrets)[:300]}")
            return {}

    def _leverage(self) -> int:
        e = self.graph.config.execution
        lev = int(e.leverage)
        if lev != e.leverage:
            raise ConfigError(f"execution.leverage: Binance takes whole leverage values, got {e.leverage}",
                              hint="use an integer leverage, e.g. 2")
        return lev

    async def _connect(self, leverage: int) -> None:
        """Markets, the venue's own rules and limits, leverage and margin type; a refused
        key is a one-line configuration error."""
        v = self.venue
        try:
            await v.load()
            # the venue's rules for every symbol it lists (one it does not list stops here)
            self.book = Book(self.symbols, sim_config(self.graph),
                             symbol_specs(self.graph, await v.venue_specs()))
            await v.configure(leverage=leverage, margin_mode=self.graph.config.execution.margin_mode)
        except VenueFatal as err:
            if err.code in AUTH_CODES or err.verdict.reason in ("AuthenticationError", "PermissionDenied"):
                raise ConfigError(f"{self.url} refused the API key or secret: "
                                  f"{redact(err.message, self.secrets)}") from None
            raise

    def _wire(self, log: RunLog, run_id: str) -> None:
        e = self.graph.config.execution
        self.journal = Journal(log, run_id, self.telemetry, secrets=self.secrets)
        for args in self._early:
            self.journal.event(*args)
        self._early.clear()
        self.orders = OrderManager(
            self.venue, self.book, self.journal, step_ms=self.step,
            taker_fee=float(e.taker_fee), maker_fee=float(e.maker_fee),
            limit_entries=e.order_type == "limit",
            has_exits=e.stop_loss is not None or e.take_profit is not None)
        self.feed = Feed(self.venue, self.ws_url, self.symbols, self.graph.interval, self.step,
                         self.journal, stop=self.stop, on_funding=self.decider.add_funding,
                         max_wait_s=self.opts.max_wait_s, grace_s=self.opts.bar_grace_s,
                         telemetry=self.telemetry, stream_timeout_s=self.opts.stream_timeout_s)

    def _params(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols), "interval": self.graph.interval,
            "venue": self.url, "ws": self.ws_url, "testnet": self.opts.testnet,
            "production": self.opts.production,
            "params": dict(self.graph.config.params), "overrides": list(self.graph.overrides),
            "config": self.graph.resolved(),
            "initial_equity": self.graph.config.execution.initial_cash,
        }

    def _positions(self) -> dict[str, float]:
        return {s: float(q) for s, q in zip(self.symbols, self.book.acct.qty, strict=True) if q}

    def metrics(self) -> dict[str, Any]:
        """The run's summary metrics (the journal's rows through
        :func:`engine.metrics.compute_metrics`, as a backtest's), plus ``bars`` and
        ``orders`` (filled) of the whole run, and this process's ``retries``."""
        out: dict[str, Any] = {"bars": len(self.journal.equity_times), "final_equity": self.equity,
                               "retries": self.venue.retries}
        try:
            out["orders"] = self.journal.filled_orders()
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
                               json.loads(r["data"]) if r["data"] else None, time_ms=int(r["time"]),
                               once=True)
        return doc

    def _event_cb(self, severity: str, component: str, message: str, data: dict[str, Any]) -> None:
        if component == "broker":
            self.telemetry.venue_error()
        if not hasattr(self, "journal"):
            self._early.append((severity, component, message, data))
            return
        self.journal.event(severity, component, message, data)

    async def _serve_metrics(self) -> MetricsServer | None:
        """``/metrics`` and ``/health`` (:mod:`engine.live.telemetry`), when asked for."""
        if self.opts.metrics_port is None:
            return None
        try:
            server = await serve(self.telemetry, host=self.opts.metrics_host, port=self.opts.metrics_port,
                                 dashboard=self.dash_server if self._dash_shared() else None)
        except OSError as err:
            raise UsageError(f"--metrics-port {self.opts.metrics_port}: cannot serve on "
                             f"{self.opts.metrics_host} ({err.strerror or err})",
                             hint="pick another --metrics-port, or 0 to turn metrics off") from None
        self.metrics_port = server.port
        self._early.append(("info", "live", f"metrics and health on {self._metrics_url()}/metrics "
                            "and /health", {"port": server.port}))
        return server

    def _dashboard(self) -> None:
        """The dashboard's state and server (not yet serving), when asked for."""
        if self.opts.dashboard_port is not None:
            self.dash = LiveDash(self, self.telemetry)
            self.dash_server = DashServer(self.dash.state, token=self.opts.dashboard_token,
                                          tick=self.dash.tick)

    def _dash_shared(self) -> bool:
        o = self.opts
        return (o.dashboard_port is not None and o.dashboard_port != 0
                and (o.dashboard_host, o.dashboard_port) == (o.metrics_host, o.metrics_port))

    async def _serve_dashboard(self, metrics: MetricsServer | None) -> DashServer | None:
        """Serve the dashboard on its own port (returned: to close), or note it shares the
        metrics server. A port it cannot bind is a warning: trading goes on without it."""
        d = self.dash_server
        if d is None:
            return None
        if self._dash_shared() and metrics is not None:
            d.port = metrics.port
            return None
        try:
            await d.serve(self.opts.dashboard_host, int(self.opts.dashboard_port or 0))
        except OSError as err:
            self._early.append(("warning", "live", f"dashboard not served: --dashboard-port "
                                f"{self.opts.dashboard_port} on {self.opts.dashboard_host}: "
                                f"{err.strerror or err}", {"port": self.opts.dashboard_port}))
            self.dash = self.dash_server = None
            return None
        return d

    def _dash_url(self) -> str | None:
        d = self.dash_server
        return None if d is None or d.port is None else f"http://{self.opts.dashboard_host}:{d.port}"

    async def process(self, t: int, bars: dict[str, Any]) -> None:
        await super().process(t, bars)
        if self.dash is not None:  # the bar's candles, for the dashboard (after its orders)
            self.dash.candles(t, bars)

    def _metrics_url(self) -> str | None:
        return (None if self.metrics_port is None
                else f"http://{self.opts.metrics_host}:{self.metrics_port}")

    # ------------------------------------------------------------------ start

    async def _session(self, prior: resume.Prior | None) -> None:
        now = await self.venue.server_time()
        if prior is not None and prior.last_decided is not None:
            await self._resume(prior, now)
        else:
            await self._fresh(now)
        self.observe_book(self.book.equity(), float(self.book.acct.wallet[0]), self.book.acct.qty,
                          bar=False)
        if self.stop.is_set():
            return
        await self.feed.run(self.process, on_ready=self._ready)

    def _ready(self) -> None:
        # what the warm-up built (models, frames, caches) lives as long as the run: collected
        # once and frozen, later collections (:func:`engine.live.cycle.gc_paused`) skip it
        gc.collect()
        gc.freeze()
        self.journal.event("info", "live", f"ready: streaming {self.graph.interval} klines after "
                           f"bar {fmt_ms(self.feed.last_done or 0)}",
                           {"last_done": self.feed.last_done, "pid": os.getpid()})
        if self.on_ready is not None:
            self.on_ready()

    async def _fresh(self, now: int) -> None:
        """A new run (or one that died before its first bar): adopt, warm up, protect."""
        kept = await reconcile.adopt(self.orders, self.book, self.journal, now)
        last_closed = (now // self.step) * self.step - self.step
        first, w = self._warmup_span(last_closed)
        self.journal.event(
            "info", "live", f"warm-up: {w} closed {self.graph.interval} bars from REST",
            {"warmup_start": first, "warmup_bars": w, "first_live_bar": last_closed + self.step},
            time_ms=now)
        await self._replay(first, last_closed + self.step, last_closed, now)
        self.feed.last_done = last_closed
        await reconcile.protect_held(self.orders, self.journal, last_closed, self.decider.last_atr,
                                     tag="", replace=kept)
        self.checkpoint("done", last_closed)

    async def _replay(self, first: int, first_live: int, last: int, now: int) -> None:
        """Features and rules (or the ensemble) over the bars ``first``..``last`` from REST:
        the warm-up bars (before ``first_live``) without decisions, then the live bars a
        resumed run decided already (their decisions are in the log)."""
        if self.decider.needs_funding:
            # the backtest over [first, ...] knows the funding events from its first bar on
            await self.feed.poll_funding(first, now, require=False)
            self.feed.funding_upto = max(now, last + self.step)
        if last < first:
            return
        bars = await self.feed.rest_bars(first, last, now)
        for t in range(first, last + 1, self.step):
            if self.stop.is_set():
                raise Stopped("stopped during the warm-up")
            got = {s: bars[(s, t)] for s in self.symbols if (s, t) in bars}
            if t < first_live:
                for bar in got.values():
                    self.decider.warm_step(bar)
                self.bar_index += 1
                continue
            if t == first_live and self.decider.ml is not None:
                self.decider.start_ml(run_start=first, results_dir=self.opts.results)
            # a live bar this run decided: its predictions and snapshots, if a crash lost them
            self.log_outputs(self.decider.step(t, got))
        if last < first_live and self.decider.ml is not None:
            self.decider.start_ml(run_start=first, results_dir=self.opts.results)

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

    async def _resume(self, prior: resume.Prior, now: int) -> None:
        """A resumed run: its checkpoint, its bars replayed, its interrupted bar finished,
        its orders and positions reconciled, bars it missed to come as stale."""
        ck = prior.checkpoint
        assert prior.last_decided is not None and prior.warmup_start is not None
        assert prior.first_live_bar is not None
        self.journal.resume()
        if ck is not None:
            self.book.restore(ck.book)
            self.orders.protect, self.orders.resting = dict(ck.protect), dict(ck.resting)
            self.journal.restore_totals(ck.totals)
            last = ck.bar
        else:
            await reconcile.adopt(self.orders, self.book, self.journal, now)
            last = prior.last_decided
            self.journal.event("warning", "live", "no checkpoint of this run: the exchange's "
                               "positions are adopted; open trades restart their accounting", {})
        self.orders.known = dict(prior.orders)
        await self._replay(prior.warmup_start, prior.first_live_bar, last, now)
        self.bar_index = (last - prior.warmup_start) // self.step + 1
        if ck is not None and ck.phase == "decided" and ck.decided is not None:
            self.log_decisions(ck.bar, ck.decided)
            await self.act(ck.bar, ck.decided)
            self.close_bar(ck.bar, ck.decided)
        crash.point("resumed")
        found = await reconcile.resume_orders(self.orders, self.book, self.journal, prior.orders,
                                              last, now)
        self.telemetry.unreconciled = {p["symbol"] for p in found["positions"]
                                       if p["resolution"] != "adopted"}
        await reconcile.protect_held(self.orders, self.journal, last, self.decider.last_atr,
                                     tag=f"@r{prior.resumes + 1}")
        self.feed.last_done = last
        self.stale_before = now - STALE_AFTER_MS
        self.checkpoint("done", last)


def run_live(graph: StrategyGraph, opts: LiveOptions, *,
             on_bar: Callable[[int], None] | None = None,
             on_ready: Callable[[], None] | None = None,
             on_start: Callable[[RunStart], None] | None = None,
             install_signals: bool = False) -> LiveResult:
    """Run live until ``opts.max_bars`` closed bars, SIGINT/SIGTERM (run marked ``stopped``),
    or an error (``failed``). ``on_start(RunStart)`` once the run is known (new or resumed),
    ``on_bar(open_time)`` after each processed bar, ``on_ready()`` once the stream is
    connected and caught up. ``install_signals``: SIGINT/SIGTERM stop the run cleanly
    (:mod:`engine.live.stops`); a second one exits at once.

    OpenMP's threads are told to sleep, not spin, between parallel regions
    (``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, before LightGBM or XGBoost
    load their OpenMP runtimes): live mode predicts one row at a time, and on a small
    machine the threads one runtime leaves spinning after a prediction or a fold fit slow
    the other's next prediction from 0.2 ms to 10 ms or more (measured on 2 cores)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    async def main() -> LiveResult:
        runner = LiveRunner(graph, opts, on_bar=on_bar, on_ready=on_ready, on_start=on_start)
        if install_signals:
            stops.install(runner, asyncio.get_running_loop())
        return await runner.run()

    return asyncio.run(main())
