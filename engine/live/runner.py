"""``engine live``: a strategy graph one closed bar at a time against a Binance USD-M venue.

Order of work:

1. load and check the graph (rule strategies; see :func:`engine.live.decider.check_live_supported`);
2. connect (ccxt ``binanceusdm``), set leverage and margin type, reconcile: adopt the
   exchange's positions, cancel our stale open orders (client ids ``e-...``), log both;
3. warm up from REST klines (the features' warm-up + the rules' lookback);
4. read the kline websocket; per closed bar (all symbols in, or backfilled through REST):
   features -> rules -> the simulator's risk step -> market orders (intent logged ``new``
   BEFORE sending, deterministic client ids) -> decisions, orders and equity in the run log.
   After any reconnect, or on a gap, missed bars are fetched through REST first, so no bar
   is skipped and none is processed twice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import ConfigError, UsageError
from engine.live.broker import TESTNET_REST, TESTNET_WS, Broker, OrderRejected
from engine.live.decider import ACTION, Bar, LiveDecider, breaker_events, warmup_needed
from engine.live.stream import Connected, kline_stream, stream_url
from engine.strategy.graph import StrategyGraph


@dataclass(frozen=True)
class LiveOptions:
    """Where to trade and how long.

    ``url``/``ws_url``: REST and websocket base URLs (``testnet`` picks Binance's futures
    testnet). ``key``/``secret`` are never printed or logged. ``max_bars``: stop after this
    many live closed bars (None: until stopped). ``since``: open time (UTC ms) of the first
    warm-up bar, to read more history than the minimum (:func:`warmup_needed`); an ML
    strategy's walk-forward schedule is anchored there, so ``since`` = a backtest's first bar
    continues that backtest's folds (and reuses its models from ``<results>/models``).
    """

    url: str | None = None
    ws_url: str | None = None
    testnet: bool = False
    key: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    results: str | os.PathLike[str] | None = None
    max_bars: int | None = None
    max_attempts: int = 8
    max_wait_s: float = 60.0
    since: int | None = None

    def endpoints(self) -> tuple[str, str]:
        if self.testnet and (self.url or self.ws_url):
            raise UsageError("--testnet and --url/--ws-url exclude each other",
                             hint="use --testnet alone, or point --url and --ws-url at a server")
        if self.testnet:
            return TESTNET_REST, TESTNET_WS
        if not self.url or not self.ws_url:
            raise UsageError(
                "live mode needs a venue: --testnet, or --url and --ws-url",
                hint="e.g. --url http://127.0.0.1:8900 --ws-url ws://127.0.0.1:8900 (engine sim-exchange)",
            )
        return self.url, self.ws_url


@dataclass
class LiveResult:
    run_id: str
    status: str
    bars: int
    orders: int
    equity: float


def read_keys(key_file: str | None) -> tuple[str, str]:
    """API key and secret from ``--key-file`` (two lines, or KEY=/SECRET= lines) or the
    BINANCE_API_KEY / BINANCE_API_SECRET environment variables."""
    if key_file:
        try:
            text = open(key_file, encoding="utf-8").read()  # noqa: SIM115
        except OSError as err:
            raise UsageError(f"--key-file {key_file}: cannot read ({err.strerror})") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        kv = dict(ln.split("=", 1) for ln in lines if "=" in ln)
        key = kv.get("BINANCE_API_KEY") or (lines[0] if len(lines) >= 2 and "=" not in lines[0] else "")
        secret = kv.get("BINANCE_API_SECRET") or (lines[1] if len(lines) >= 2 and "=" not in lines[1] else "")
        if not key or not secret:
            raise UsageError(f"--key-file {key_file}: expected the API key and secret",
                             hint="two lines (key, then secret) or BINANCE_API_KEY=... / BINANCE_API_SECRET=...")
        return key.strip(), secret.strip()
    key, secret = os.environ.get("BINANCE_API_KEY", ""), os.environ.get("BINANCE_API_SECRET", "")
    if not key or not secret:
        raise UsageError("no API key: set BINANCE_API_KEY and BINANCE_API_SECRET, or pass --key-file",
                         hint="keys are read from the environment or the file only, never from the command line")
    return key, secret


class LiveRunner:
    """One live run (see the module docstring). Use :func:`run_live`."""

    def __init__(self, graph: StrategyGraph, opts: LiveOptions, *,
                 on_bar: Callable[[int], None] | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        from engine.timeutil import interval_ms

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
        self.last_done: int | None = None  # open time of the last bar processed
        self.pending: dict[int, dict[str, Bar]] = {}
        self.funding_upto = 0  # funding events with time <= this have been fetched
        # resting stop-loss / take-profit orders per symbol: [(leg, client id, base row)]
        self.protect: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        from engine.live.trades import TradeBook

        self.book = TradeBook(self.symbols)
        self.taker_fee = float(graph.config.execution.taker_fee)
        self.maker_fee = float(graph.config.execution.maker_fee)
        self.limit_entries = graph.config.execution.order_type == "limit"
        # limit entries resting for one bar, per symbol: (client id, base row)
        self.resting: dict[str, tuple[str, dict[str, Any]]] = {}
        self.bars = 0
        self.orders = 0
        self.equity = float("nan")
        self.run_id = ""
        self.log: Any = None
        # what the run logged, for its metrics at the end (engine.metrics.compute_metrics)
        self.equity_rows: list[dict[str, float]] = []
        self.trade_rows: list[dict[str, Any]] = []
        self.fees_total = 0.0
        self.funding_total = 0.0  # + = received, as the log's trades.funding

    # ------------------------------------------------------------------ log helpers

    def event(self, severity: str, component: str, message: str, data: dict[str, Any] | None = None,
              time_ms: int | None = None) -> None:
        self.log.event(self.run_id, severity=severity, component=component, message=message,
                       data=data, time_ms=time_ms)

    # ------------------------------------------------------------------ main

    async def run(self) -> LiveResult:
        from engine.strategy.execution import strategy_hash
        from engine.exchange_sim.client import make_ccxt
        from engine.runlog import RunLog

        if not self.opts.key or not self.opts.secret:
            raise UsageError("live mode needs an API key and secret",
                             hint="set BINANCE_API_KEY / BINANCE_API_SECRET or pass --key-file")
        e = self.graph.config.execution
        lev = int(e.leverage)
        if lev != e.leverage:
            raise ConfigError(f"execution.leverage: Binance takes whole leverage values, got {e.leverage}",
                              hint="use an integer leverage, e.g. 2")
        ex = make_ccxt(self.url, self.opts.key, self.opts.secret, async_=True)
        self.log = RunLog(self.opts.results)
        status = "failed"
        try:
            params = {
                "symbols": list(self.symbols), "interval": self.graph.interval,
                "venue": self.url, "ws": self.ws_url, "testnet": self.opts.testnet,
                "params": dict(self.graph.config.params), "overrides": list(self.graph.overrides),
                "config": self.graph.resolved(), "initial_equity": e.initial_cash,
            }
            self.run_id = self.log.start_run(mode="live", strategy=self.graph.name, params=params,
                                             strategy_hash=strategy_hash(self.graph))
            self.broker = Broker(ex, self.symbols, self.graph.interval, event=self._event_cb,
                                 max_attempts=self.opts.max_attempts, max_wait_s=self.opts.max_wait_s)
            try:
                await self._session(lev, e.margin_mode)
                status = "stopped" if self.stopped_by_signal else "ok"
            except BaseException as err:
                self.event("error", "live", f"run failed: {type(err).__name__}: {str(err)[:500]}")
                raise
            finally:
                self.log.finish_run(self.run_id, status=status,
                                    metrics={**self.metrics(), **self.ml_metrics()})
        finally:
            await ex.close()
            self.log.close()
        return LiveResult(self.run_id, status, self.bars, self.orders, self.equity)

    def metrics(self) -> dict[str, Any]:
        """The run's summary metrics: :func:`engine.metrics.compute_metrics` over the equity
        rows and closed trades it logged (as a backtest's, see
        ``engine.backtest.runner.run_metrics``), plus ``orders`` and ``retries``. A run that
        logged no bar has only the counters."""
        out: dict[str, Any] = {"bars": self.bars, "orders": self.orders, "final_equity": self.equity,
                               "retries": getattr(getattr(self, "broker", None), "retries", 0)}
        if not self.equity_rows:
            return out
        import polars as pl

        from engine.metrics import compute_metrics

        eq = self.equity_rows
        trades = pl.DataFrame(self.trade_rows) if self.trade_rows else None
        try:
            m = compute_metrics(
                times_ms=np.array([r["time"] for r in eq], dtype=np.int64),
                equity=np.array([r["equity"] for r in eq], dtype=np.float64),
                trades=trades, bar_interval_ms=self.step,
                exposure=np.array([r["exposure"] for r in eq], dtype=np.float64),
                funding_total=self.funding_total, fees_total=self.fees_total,
            )
        except Exception as err:  # noqa: BLE001 - the run's own status must still be written
            self.event("error", "live", f"metrics not computed: {type(err).__name__}: {str(err)[:300]}")
            return out
        return {**m, "orders": self.orders, "retries": out["retries"]}

    def ml_metrics(self) -> dict[str, Any]:
        """An ML strategy's ``models`` and ``ml`` metrics over the live bars it predicted
        (:func:`engine.live.ml_summary.live_ml_summary`, the backtest's writers), writing its
        ML ``system_events`` (models not trained for a fold, remote failures, abstentions) as
        the backtest does. Empty for a rule strategy or a run that predicted no bar."""
        d = self.decider
        if d.ml is None or not d.ensembles:
            return {}
        import json

        from engine.live.ml_summary import live_ml_summary

        try:
            doc, rows = live_ml_summary(d.ml_trace, d.ensembles)
        except Exception as err:  # noqa: BLE001 - the run's own status must still be written
            self.event("error", "live", f"ML metrics not computed: {type(err).__name__}: {str(err)[:300]}")
            return {}
        for r in rows:
            self.event(r["severity"], r["component"], r["message"],
                       json.loads(r["data"]) if r["data"] else None, time_ms=int(r["time"]))
        return doc

    def _event_cb(self, severity: str, component: str, message: str, data: dict[str, Any]) -> None:
        self.event(severity, component, message, data)

    async def _session(self, leverage: int, margin_mode: str) -> None:
        b = self.broker
        await b.load()
        await b.configure(leverage=leverage, margin_mode=margin_mode)
        await self._reconcile()
        now = await b.server_time()
        last_closed = (now // self.step) * self.step - self.step
        w = warmup_needed(self.graph)
        first = last_closed - (w - 1) * self.step if w > 0 else last_closed + self.step
        if self.opts.since is not None:
            since = -(-int(self.opts.since) // self.step) * self.step
            if since > first:
                from engine.timeutil import fmt_ms

                raise ConfigError(
                    f"--since {fmt_ms(int(self.opts.since))}: {self.graph.name} needs {w} closed "
                    f"{self.graph.interval} bars of warm-up, from {fmt_ms(first)} at the latest",
                    hint=f"start the warm-up at or before {fmt_ms(first)}, or drop --since")
            first = since
            w = (last_closed - first) // self.step + 1
        self.log.append(self.run_id, "system_events", {
            "time": now, "severity": "info", "component": "live",
            "message": f"warm-up: {w} closed {self.graph.interval} bars from REST",
            "data": {"warmup_start": first, "warmup_bars": w, "first_live_bar": last_closed + self.step}})
        if self.decider.needs_funding:
            # the backtest over [first, ...] knows the funding events from its first bar on
            await self._poll_funding(first, now, require=False)
            self.funding_upto = max(now, last_closed + self.step)
        if w > 0:
            bars = await self._rest_bars(first, last_closed, now)
            for t in range(first, last_closed + 1, self.step):
                for s in self.symbols:
                    bar = bars.get((s, t))
                    if bar is not None:
                        self.decider.warm_step(bar)
                self.decider.bar_index += 1
            if self.decider.ml is not None:
                self.decider.start_ml(run_start=first, results_dir=self.opts.results)
        self.last_done = last_closed
        queue: asyncio.Queue[Any] = asyncio.Queue()
        url = stream_url(self.ws_url, self.symbols, self.graph.interval)
        reader = asyncio.create_task(kline_stream(url, self.graph.interval, queue, stop=self.stop,
                                                  event=self._event_cb))
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
                    await self._catch_up(await b.server_time())
                    if item.n == 1 and self.on_ready is not None:
                        self.on_ready()
                else:
                    await self._on_bar(item)
            await self._cancel_resting()
        finally:
            self.stop.set()
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    async def _reconcile(self) -> None:
        acc = await self.broker.account()
        held = {s: float(q) for s, q in zip(self.symbols, acc.qty, strict=True) if q != 0.0}
        now = await self.broker.server_time()
        for j, s in enumerate(self.symbols):
            self.book.adopt(s, float(acc.qty[j]), float(acc.entry_price[j]), now)
        stale = []
        for s in self.symbols:
            for o in await self.broker.open_orders(s):
                cid = str(o.get("clientOrderId") or "")
                if cid.startswith("e-"):
                    await self.broker.cancel(s, str(o["id"]))
                    stale.append({"symbol": s, "client_order_id": cid})
        self.event("info", "reconcile",
                   f"start: wallet {acc.wallet:.8f}, positions {held or 'none'}, "
                   f"{len(stale)} stale open order(s) canceled",
                   {"wallet": acc.wallet, "positions": held, "canceled": stale})

    async def _poll_funding(self, start: int, end: int, *, require: bool) -> None:
        """Fetch each symbol's funding events in ``[start, end]`` into the feature streams.

        With ``require``, a funding hour (a multiple of 8 h, as ``minutes_to_funding``) in the
        span whose event the venue has not published yet is polled again with backoff (a
        bounded number of times; then a warning and the last known rate stays in force)."""
        from engine.features.kernels import FUNDING_PERIOD_MS

        P = FUNDING_PERIOD_MS
        due = list(range(((start + P - 1) // P) * P, end + 1, P)) if require else []
        for s in self.symbols:
            for attempt in range(6):
                events = await self.broker.funding_events(s, start=start, end=end)
                for ft, rate in events:
                    self.decider.add_funding(s, ft, rate)
                have = {ft for ft, _ in events}
                missing = [t for t in due if t not in have]
                if not missing:
                    break
                if attempt == 5:
                    self.event("warning", "funding",
                               f"{s}: funding event(s) not published by the venue; last rate kept",
                               {"symbol": s, "missing": missing}, time_ms=end)
                    break
                await asyncio.sleep(min(0.25 * 2**attempt, self.opts.max_wait_s))

    async def _rest_bars(self, start: int, end: int, now: int) -> dict[tuple[str, int], Bar]:
        out: dict[tuple[str, int], Bar] = {}
        for s in self.symbols:
            for bar in await self.broker.closed_bars(s, start=start, end=end, now=now):
                out[(s, bar.open_time)] = bar
        return out

    async def _catch_up(self, now: int) -> None:
        """Process every closed bar after the last one done, from REST (after a (re)connect)."""
        assert self.last_done is not None
        last_closed = (now // self.step) * self.step - self.step
        if last_closed <= self.last_done:
            return
        start = self.last_done + self.step
        bars = await self._rest_bars(start, last_closed, now)
        n = (last_closed - start) // self.step + 1
        self.event("info", "stream", f"backfilled {n} bar(s) through REST",
                   {"from": start, "to": last_closed}, time_ms=now)
        for t in range(start, last_closed + 1, self.step):
            if self.stop.is_set():
                return
            got = {s: bars[(s, t)] for s in self.symbols if (s, t) in bars}
            got.update(self.pending.pop(t, {}))
            await self._process(t, got)

    async def _on_bar(self, bar: Bar) -> None:
        assert self.last_done is not None
        t = bar.open_time
        if t <= self.last_done or bar.symbol not in self.symbols:
            return  # already processed (a frame repeated after a backfill)
        if t > self.last_done + self.step:
            # a gap: bars before t are missing; fetch them through REST first
            await self._catch_up(t)
            if t <= (self.last_done or 0):
                return
        self.pending.setdefault(t, {})[bar.symbol] = bar
        if len(self.pending[t]) == len(self.symbols):
            await self._process(t, self.pending.pop(t))

    # ------------------------------------------------------------------ one bar

    async def _process(self, t: int, bars: dict[str, Bar]) -> None:
        n = len(self.symbols)
        close_time = t + self.step
        if self.decider.needs_funding and close_time > self.funding_upto:
            # the rate a bar's features read is the last one settled at or before its close
            await self._poll_funding(self.funding_upto + 1, close_time, require=True)
            self.funding_upto = close_time
        closes = np.full(n, np.nan)
        directions = np.full(n, np.nan)
        states = np.zeros(n, dtype=np.int64)
        ml = self.decider.ml is not None
        prob = np.full(n, np.nan) if ml else None
        payoff = np.full(n, np.nan) if ml else None
        ml_cols: dict[str, dict[str, float]] = {}
        predictions: list[dict[str, Any]] = []
        for j, s in enumerate(self.symbols):
            bar = bars.get(s)
            if bar is None:
                states[j] = self.decider.state[s]
                continue
            if ml:
                assert prob is not None and payoff is not None
                mb = self.decider.ml_step(bar)
                st, d = mb.state, mb.direction
                prob[j], payoff[j], ml_cols[s] = mb.prob, mb.payoff, mb.columns
                predictions.extend(mb.predictions)
            else:
                st, d = self.decider.signal_step(bar)
            states[j], directions[j], closes[j] = st, d, bar.close
        if predictions:
            self.log.append(self.run_id, "model_predictions", predictions)
        acc = await self.broker.account()
        if self.resting:
            await self._settle_limits(t)
        if self.protect:
            acc = await self._check_exits(t, acc)
        target, reason, equity = self.decider.size(t, closes, directions, acc, prob=prob,
                                                   payoff=payoff)
        self.equity = equity
        rows = []
        from engine.decisions.records import REASON

        for j, s in enumerate(self.symbols):
            if np.isnan(closes[j]):
                continue
            rs = int(reason[j])
            rname = REASON.get(rs, str(rs))
            rejected = states[j] != 0 and rname in ("breaker", "filter", "edge") and target[j] == 0
            rows.append({
                "symbol": s, "open_time": t, "action": ACTION[int(states[j])],
                "target_position": float(target[j]), "confidence": 1.0, "probability": None,
                "risk_check": "pass" if rs == 0 else rname,
                "position_size": abs(target[j]) * closes[j] / equity if equity > 0 else None,
                "rejection_reason": rname if rejected else None, "price": float(closes[j]),
                **{k: (None if np.isnan(v) else v) for k, v in ml_cols.get(s, {}).items()},
            })
        if rows:
            self.log.append(self.run_id, "ensemble_decisions", rows)
        for ev in breaker_events(self.decider):
            self._breaker_event(t, ev)
        await self._settle_funding(t, acc)
        for j, s in enumerate(self.symbols):
            if not np.isnan(closes[j]) and target[j] != acc.qty[j]:
                await self._trade(s, t, float(acc.qty[j]), float(target[j]))
        exposure = float(np.nansum(np.abs(acc.qty) * np.where(np.isnan(closes), 0.0, closes)))
        eq_row = {"time": t, "equity": equity, "cash": acc.wallet, "exposure": exposure}
        self.log.append(self.run_id, "equity", eq_row)
        self.equity_rows.append(eq_row)
        self.last_done = t
        self.bars += 1
        if self.on_bar is not None:
            self.on_bar(t)
        if self.opts.max_bars is not None and self.bars >= self.opts.max_bars:
            self.stop.set()

    async def _trade(self, symbol: str, t: int, q: float, target: float) -> None:
        """The two legs of engine.sim's fill: close/reduce first (``exit``), then open (``entry``).

        Resting stop/target orders are canceled before a leg that closes, flips or adds to the
        position, and placed anew after an entry fill (from the exchange's entry price)."""
        if q != 0.0 and (target == 0.0 or (target > 0) != (q > 0)):
            close_qty = -q
        elif q != 0.0 and abs(target) < abs(q):
            close_qty = target - q
        else:
            close_qty = 0.0
        legs = []
        if close_qty != 0.0:
            legs.append(("exit", close_qty, True))
        open_qty = target - (q + close_qty)
        if open_qty != 0.0:
            legs.append(("entry", open_qty, False))
        if self.protect.get(symbol) and (open_qty != 0.0 or q + close_qty == 0.0):
            await self._cancel_exits(symbol, t + self.step)
        entered = False
        for leg, dq, reduce_only in legs:
            if leg == "entry" and self.limit_entries:
                j = self.symbols.index(symbol)
                await self._send(symbol, t, leg, dq, reduce_only,
                                 limit_price=float(self.decider.pend.limit_price[j]))
                continue
            filled = await self._send(symbol, t, leg, dq, reduce_only)
            entered = entered or (leg == "entry" and filled)
        if entered and self.decider.has_exits:
            await self._place_exits(symbol, t)

    # ------------------------------------------------------------------ stop-loss / take-profit

    async def _place_exits(self, symbol: str, t: int) -> None:
        """STOP_MARKET then TAKE_PROFIT_MARKET (closePosition) at the simulator's trigger prices."""
        from engine.decisions.records import client_order_id

        acc = await self.broker.account()
        j = self.symbols.index(symbol)
        qty, entry = float(acc.qty[j]), float(acc.entry_price[j])
        if qty == 0.0:
            return
        side = 1 if qty > 0 else -1
        stop, target = self.decider.exit_prices(symbol, side, entry)
        digits = self.decider.specs[j].price_precision
        created = t + self.step
        placed = []
        for leg, kind, px in (("stop", "STOP_MARKET", stop), ("target", "TAKE_PROFIT_MARKET", target)):
            if np.isnan(px):
                continue
            cid = client_order_id(self.run_id, symbol, t, leg)
            o_side = "sell" if side > 0 else "buy"
            base = {"client_order_id": cid, "symbol": symbol, "side": o_side,
                    "type": kind.lower(), "quantity": abs(qty), "price": px, "created_at": created,
                    "open_time": t, "leg": leg, "reduce_only": True}
            self.log.append(self.run_id, "orders", {**base, "status": "new", "updated_at": created})
            try:
                r = await self.broker.trigger_order(symbol, kind, o_side, f"{px:.{digits}f}",
                                                    client_order_id=cid)
            except OrderRejected as err:
                self.log.append(self.run_id, "orders", {**base, "status": "rejected",
                                                        "updated_at": created, "message": str(err)})
                self.event("warning", "broker", f"{leg} order {cid} rejected: {err}",
                           {"symbol": symbol, "price": px}, time_ms=created)
                continue
            base["exchange_order_id"] = r.exchange_order_id
            placed.append((leg, cid, base))
        if placed:
            self.protect[symbol] = placed

    async def _cancel_exits(self, symbol: str, now: int) -> None:
        for leg, cid, base in self.protect.pop(symbol, []):
            r = await self.broker.cancel_by_client_id(symbol, cid)
            if r is not None and r.status == "closed" and r.filled > 0:
                self._log_exit_fill(symbol, leg, base, r)
                continue
            self.log.append(self.run_id, "orders", {**base, "status": "canceled", "updated_at": now})

    async def _check_exits(self, t: int, acc: Any) -> Any:
        """After bar ``t``: log the stop/target orders that triggered during it and cancel
        their siblings (a position the exchange closed leaves none of ours resting)."""
        changed = False
        for symbol in list(self.protect):
            j = self.symbols.index(symbol)
            if acc.qty[j] != 0.0:
                continue
            for leg, cid, base in self.protect.pop(symbol):
                r = await self.broker.lookup(symbol, cid)
                if r is not None and r.status == "closed" and r.filled > 0:
                    self._log_exit_fill(symbol, leg, base, r)
                    changed = True
                    continue
                if r is not None and r.status == "open":
                    await self.broker.cancel_by_client_id(symbol, cid)
                self.log.append(self.run_id, "orders", {
                    **base, "status": "canceled" if r is None or r.status == "open" else
                    {"expired": "expired", "canceled": "canceled"}.get(r.status, r.status),
                    "updated_at": t + self.step})
        return await self.broker.account() if changed else acc

    async def _settle_funding(self, t: int, acc: Any) -> None:
        """Funding settled at the close of bar ``t`` (a funding time) on the positions held
        through it (before this close's orders fill), added to their open trades."""
        from engine.features.kernels import FUNDING_PERIOD_MS

        f = t + self.step
        if f % FUNDING_PERIOD_MS or not self.graph.config.data.funding:
            return
        for j, s in enumerate(self.symbols):
            q = float(acc.qty[j])
            if q == 0.0:
                continue
            got = await self.broker.funding_settled(s, f)
            if got is None or np.isnan(got[1]):
                self.event("warning", "funding", f"{s}: funding at {f} not published; not in the trade",
                           {"symbol": s, "funding_time": f}, time_ms=f)
                continue
            paid = q * got[1] * got[0]
            self.book.add_funding(s, paid)
            self.funding_total -= paid

    async def _cancel_resting(self) -> None:
        """At a clean end (``--max-bars``, a signal): no limit entry of ours is left resting;
        one filled in the meantime is logged ``filled`` (its position stays, as any other)."""
        for symbol, (cid, base) in list(self.resting.items()):
            del self.resting[symbol]
            r = await self.broker.cancel_by_client_id(symbol, cid)
            now = await self.broker.server_time()
            filled = r is not None and r.filled > 0
            self.log.append(self.run_id, "orders", {
                **base, "status": "filled" if filled else "canceled", "updated_at": now,
                **({"filled_quantity": r.filled, "avg_price": r.average} if filled and r else {})})

    async def _settle_limits(self, t: int) -> None:
        """After bar ``t``: the limit entries placed at the previous close lived this one bar
        (the simulator's one-bar limit lifetime). Cancel what is left; log and book the fill
        (maker fee, fill bar ``t``) of those the bar touched."""
        for symbol, (cid, base) in list(self.resting.items()):
            del self.resting[symbol]
            r = await self.broker.cancel_by_client_id(symbol, cid)
            now = t + self.step
            if r is not None and r.filled > 0:
                self.log.append(self.run_id, "orders", {
                    **base, "status": "filled", "filled_quantity": r.filled, "avg_price": r.average,
                    "exchange_order_id": r.exchange_order_id,
                    "updated_at": max(r.update_ms or r.time_ms or now, base["created_at"])})
                self.orders += 1
                sgn = 1.0 if base["side"] == "buy" else -1.0
                self._book_fill(symbol, sgn * r.filled, r.average, t, "signal", rate=self.maker_fee)
                if r.filled < base["quantity"]:
                    self.event("warning", "broker", f"limit entry {cid} partly filled; rest canceled",
                               {"symbol": symbol, "filled": r.filled, "quantity": base["quantity"]},
                               time_ms=now)
                continue
            status = "expired" if r is None or r.status in ("open", "canceled") else r.status
            self.log.append(self.run_id, "orders", {**base, "status": status, "updated_at": now})

    def _book_fill(self, symbol: str, qty: float, price: float, time_ms: int, reason: str, *,
                   rate: float | None = None) -> None:
        fee = abs(qty) * price * (self.taker_fee if rate is None else rate)
        self.fees_total += fee
        rows = self.book.fill(symbol, qty, price, fee, time_ms=time_ms, reason=reason)
        if rows:
            self.log.append(self.run_id, "trades", rows)
            self.trade_rows.extend(rows)
            for r in rows:
                # the loss streak the breaker reads at the next close (engine.sim's definition)
                self.decider.trade_closed(float(r["pnl"]))

    def _breaker_event(self, t: int, ev: dict[str, Any]) -> None:
        """A breaker trip or reset at the close of bar ``t``, as the backtest logs it
        (``engine.decisions.records.event_frame``: time = the bar's open time)."""
        from engine.sim.enums import BreakerEvent, names
        from engine.timeutil import fmt_ms

        what = names(BreakerEvent).get(ev["code"], str(ev["code"]))
        if ev["code"] == BreakerEvent.RESET:
            msg, sev = f"circuit breaker reset at {fmt_ms(t)}: new entries allowed", "info"
        else:
            msg = (f"circuit breaker tripped ({what}, {ev['value']:.4g}) at {fmt_ms(t)}: "
                   "new entries halted")
            sev = "warning"
        self.event(sev, "risk", msg, {"event": what, "value": ev["value"], "bar": ev["bar"]}, time_ms=t)

    def _log_exit_fill(self, symbol: str, leg: str, base: dict[str, Any], r: Any) -> None:
        # the row names the bar whose prices triggered it (as the backtest's stop/target rows)
        when = r.update_ms or r.time_ms
        trig = ((when - 1) // self.step) * self.step if when else base["open_time"]
        self.log.append(self.run_id, "orders", {
            **base, "status": "filled", "open_time": trig, "filled_quantity": r.filled,
            "avg_price": r.average, "price": r.average, "updated_at": max(when, trig)})
        self.orders += 1
        sgn = -1.0 if base["side"] == "sell" else 1.0
        self._book_fill(symbol, sgn * r.filled, r.average, trig, leg)

    async def _send(self, symbol: str, t: int, leg: str, dq: float, reduce_only: bool, *,
                    limit_price: float | None = None) -> bool:
        """One market leg; True when it filled. With ``limit_price``: a GTC limit entry left
        resting until the next close (:meth:`_settle_limits`)."""
        from engine.decisions.records import client_order_id

        spec = self.decider.specs[self.symbols.index(symbol)]
        qty = round(abs(dq), spec.qty_precision)
        side = "buy" if dq > 0 else "sell"
        cid = client_order_id(self.run_id, symbol, t, leg)
        created = t + self.step
        base: dict[str, Any] = {
            "client_order_id": cid, "symbol": symbol, "side": side,
            "type": "market" if limit_price is None else "limit", "quantity": qty,
            "created_at": created, "open_time": t, "leg": leg, "reduce_only": reduce_only}
        if limit_price is not None:
            base["price"] = limit_price
        self.log.append(self.run_id, "orders", {**base, "status": "new", "updated_at": created})
        try:
            r = await self.broker.market_order(symbol, side, qty, client_order_id=cid,
                                               reduce_only=reduce_only, limit_price=limit_price)
        except OrderRejected as err:
            self.log.append(self.run_id, "orders", {**base, "status": "rejected", "updated_at": created,
                                                    "message": str(err)})
            self.event("warning", "broker", f"order {cid} rejected: {err}",
                       {"symbol": symbol, "leg": leg, "qty": qty}, time_ms=created)
            return False
        if limit_price is not None and r.status == "open" and r.filled == 0:
            base["exchange_order_id"] = r.exchange_order_id
            self.resting[symbol] = (cid, base)
            return False
        status = {"closed": "filled", "open": "new", "canceled": "canceled", "expired": "expired",
                  "rejected": "rejected"}.get(r.status, r.status)
        self.log.append(self.run_id, "orders", {
            **base, "status": status, "exchange_order_id": r.exchange_order_id,
            "filled_quantity": r.filled, "avg_price": r.average,
            "price": r.average, "updated_at": max(r.time_ms, created)})
        self.orders += 1
        if r.filled > 0:
            self._book_fill(symbol, (1.0 if dq > 0 else -1.0) * r.filled, r.average, t + self.step, "signal")
        return status == "filled" and r.filled > 0


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
