"""The Binance USD-M client: market data, account and orders over ccxt ``binanceusdm`` (async).

Every REST call goes through :meth:`BinanceClient.call`: it waits for the one
:class:`engine.binance.budget.RequestBudget` (request weight and order counts, corrected from
every answer's headers; a 429/418 halts every caller; orders first), is retried by the one :class:`engine.binance.retry.RetryPolicy` while
:func:`engine.binance.errors.classify` says TEMPORARY (each retry a ``broker`` event and one
more in :attr:`BinanceClient.retries`), and ended in a typed error otherwise. Every order,
whatever its kind, goes through :meth:`BinanceClient.send`: sent with the caller's client order id and, after an unknown-status outcome, looked up by
that id before it is sent again, so an order the exchange accepted is never sent twice
(invariant 7). Answers are decoded at the edge into the records of
:mod:`engine.binance.records`. :meth:`BinanceClient.venue_specs` reads the venue's own
exchangeInfo and leverage brackets into the engine's :class:`engine.sim.specs.SymbolSpec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from engine.binance.budget import RequestBudget, order_scope
from engine.binance.errors import (
    FATAL_HINT,
    OrderRejected,
    RequestRejected,
    VenueFatal,
    VenueUnavailable,
    classify,
    short,
)
from engine.binance.klines import KlinePager
from engine.binance.records import (
    FINAL,
    AccountView,
    Bar,
    OrderRequest,
    OrderResult,
    account_from_binance,
    bar_from_kline,
    order_from_algo,
    order_from_ccxt,
)
from engine.binance.retry import RetryPolicy
from engine.errors import ExchangeError
from engine.sim.specs import SymbolSpec, specs_from_documents
from engine.timeutil import interval_ms

T = TypeVar("T")
# event(severity, component, message, data): a system event for the caller's run log
EventFn = Callable[[str, str, str, dict[str, Any]], None]
HOUR_MS = 3_600_000
FUNDING_PAGE = 1000


class BinanceClient:
    """ccxt (async) access to one Binance-compatible USD-M venue.

    Parameters
    ----------
    exchange : a ``ccxt.async_support.binanceusdm`` (see :func:`engine.binance.venue.make_ccxt`);
        the caller closes it.
    symbols : exchange symbols (``BTCUSDT``) in the caller's order (AccountView's order).
    interval : the base kline interval.
    event : callback ``(severity, component, message, data)`` for system events.
    max_attempts, max_wait_s : retry budget (attempts per call, the longest backoff wait);
        ignored when ``retry`` is given.
    retry : the retry policy (inject one with fake sleeps in tests); by default its waits
        sleep through the budget, so the stop event ends them too.
    budget : the request budget (default: 80 % of Binance's usual limits until
        :meth:`venue_specs` reads the venue's); it observes every answer of ``exchange``.
    stop : an ``asyncio.Event``: once set, every call that has to wait (budget, 429 halt,
        retry backoff) raises :class:`engine.binance.budget.Stopped` at once.
    """

    def __init__(
        self,
        exchange: Any,
        symbols: tuple[str, ...],
        interval: str,
        *,
        event: EventFn,
        max_attempts: int = 8,
        max_wait_s: float = 60.0,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.ex = exchange
        self.symbols = symbols
        self.interval = interval
        self.step = interval_ms(interval)
        self.event = event
        self.budget = budget or RequestBudget()
        if stop is not None:
            self.budget.stop = stop
        self.budget.attach(exchange)
        self.retry = retry or RetryPolicy(max_attempts=max_attempts, max_wait_s=max_wait_s,
                                          asleep=self.budget.sleep)
        self.max_attempts = self.retry.max_attempts
        self.max_wait_s = self.retry.max_wait_s
        self.market_ids: dict[str, str] = {}
        self.retries = 0

    # ------------------------------------------------------------------ plumbing

    def _headers(self) -> Any:
        return getattr(self.ex, "last_response_headers", None)

    def _paced(
        self, fn: Callable[[], Awaitable[T]], weight: int, orders: int,
        priority: bool | None = None,
    ) -> Callable[[], Awaitable[T]]:
        async def paced() -> T:
            async with self.budget.use(weight=weight, orders=orders, priority=priority):
                return await fn()

        return paced

    def _on_retry(self, what: str, err: BaseException, attempt: int, wait: float) -> None:
        self.retries += 1
        self.event("warning", "broker", f"{what}: {type(err).__name__}, retrying",
                   {"attempt": attempt, "error": short(err), "wait_s": round(wait, 3)})

    async def call(
        self, what: str, fn: Callable[[], Awaitable[T]], *, weight: int = 1, orders: int = 0,
        priority: bool | None = None,
    ) -> T:
        """One REST call, budgeted and retried (see the module docstring); ``weight`` and
        ``orders`` are its cost on the venue's limits; ``priority`` (default: an order, or a
        call inside :func:`engine.binance.budget.order_scope`) goes before reads. Raises
        :class:`engine.binance.errors.VenueUnavailable` / ``RequestRejected`` / ``VenueFatal``,
        and :class:`engine.binance.budget.Stopped` when the stop event ends a wait."""
        return await self.retry.arun(what, self._paced(fn, weight, orders, priority),
                                     headers=self._headers, on_retry=self._on_retry)

    # ------------------------------------------------------------------ setup

    async def load(self) -> None:
        """Load the venue's markets; every symbol must be listed as a perpetual."""
        await self.call("load markets", self.ex.load_markets, weight=1)
        by_id = {m["id"]: m["symbol"] for m in self.ex.markets.values() if m.get("swap")}
        missing = [s for s in self.symbols if s not in by_id]
        if missing:
            raise ExchangeError(
                f"the exchange does not list {', '.join(missing)}",
                hint="check data.symbols / --symbols against the venue's exchangeInfo",
            )
        self.market_ids = {s: by_id[s] for s in self.symbols}

    async def configure(self, *, leverage: int, margin_mode: str) -> None:
        """Set leverage and margin type per symbol ("no need to change" counts as done).

        A setting the venue refuses is a configuration error: :class:`VenueFatal`."""
        for s in self.symbols:
            m = self.market_ids[s]
            calls = ((f"set leverage {s}", partial(self.ex.set_leverage, leverage, m)),
                     (f"set margin mode {s}", partial(self.ex.set_margin_mode, margin_mode, m)))
            for what, fn in calls:
                try:
                    await self.call(what, fn)
                except RequestRejected as err:
                    if not err.no_change:
                        raise VenueFatal(err.message, verdict=err.verdict,
                                         hint="check execution.leverage / margin_mode") from err

    async def venue_specs(self, symbols: Sequence[str] | None = None) -> list[SymbolSpec]:
        """The trading rules of ``symbols`` (default: the client's) as this venue has them.

        Reads ``GET /fapi/v1/exchangeInfo`` (filters, precisions, and ``rateLimits``, which
        size the budget from now on) and, per symbol, the account's leverage brackets (signed
        ``GET /fapi/v1/leverageBracket?symbol=``: one object; an array is taken too), and
        builds each :class:`SymbolSpec` with the shipped snapshot's parser
        (:func:`engine.sim.specs.specs_from_documents`). A symbol the venue does not list,
        or lists but not as a trading perpetual, raises :class:`ExchangeError` right after
        the exchangeInfo read: nothing else is sent.
        """
        want = list(self.symbols if symbols is None else symbols)
        info = await self.call("exchangeInfo", self.ex.fapiPublicGetExchangeInfo, weight=1)
        if not isinstance(info, dict):
            raise ExchangeError(f"{self.venue}: exchangeInfo is not an object",
                                hint="check the venue's URL")
        self.budget.configure(info.get("rateLimits") or [])
        check_listed(want, info, self.venue)
        answers = [await self.call(f"leverage brackets {s}", partial(
            self.ex.fapiPrivateGetLeverageBracket, {"symbol": s})) for s in want]
        return specs_from_documents(want, info, answers, source=self.venue)

    @property
    def venue(self) -> str:
        """The venue's base URL (``https://fapi.binance.com``), for messages."""
        parts = urlsplit(str(self.ex.urls["api"]["fapiPublic"]))
        return f"{parts.scheme}://{parts.netloc}"

    async def server_time(self) -> int:
        """The venue's clock (UTC ms)."""
        return int(await self.call("server time", self.ex.fetch_time))

    # ------------------------------------------------------------------ market data

    async def closed_bars(self, symbol: str, *, start: int, end: int, now: int) -> list[Bar]:
        """Closed bars with ``start <= open_time <= end`` (and closed by ``now``), paginated."""
        pager = KlinePager(start=start, stop=end, now=now, step=self.step)
        out: list[Bar] = []
        while not pager.done:
            rows = await self.call(
                f"klines {symbol}",
                partial(self.ex.fapiPublicGetKlines, pager.params(symbol, self.interval)),
                weight=pager.weight,
            )
            out.extend(bar_from_kline(symbol, r) for r in pager.take(rows))
        return out

    async def funding_settled(self, symbol: str, funding_time: int) -> tuple[float, float] | None:
        """``(rate, mark price)`` of the funding settled at ``funding_time`` (None: not known):
        :meth:`funding_events` over the minute around it."""
        for t, rate, mark in await self.funding_events(symbol, start=funding_time - 60_000,
                                                       end=funding_time + 60_000):
            if t == funding_time:
                return rate, mark
        return None

    async def funding_events(self, symbol: str, *, start: int,
                             end: int) -> list[tuple[int, float, float]]:
        """Settled funding events ``(funding_time, rate, mark price)`` with ``start <= time <=
        end``, paginated (``GET /fapi/v1/fundingRate``); times rounded to the hour (Binance's ms
        jitter removed, as at data import); a mark the venue does not give is NaN."""
        out: dict[int, tuple[float, float]] = {}
        since = start
        while since <= end:
            rows = await self.call(f"funding rates {symbol}", partial(
                self.ex.fapiPublicGetFundingRate,
                {"symbol": symbol, "startTime": since, "endTime": end, "limit": FUNDING_PAGE}))
            if not rows:
                break
            last = since
            for r in rows:
                raw = int(r["fundingTime"])
                last = max(last, raw)
                t = ((raw + HOUR_MS // 2) // HOUR_MS) * HOUR_MS
                if start <= t <= end:
                    out[t] = (float(r["fundingRate"]), float(r.get("markPrice") or "nan"))
            if len(rows) < FUNDING_PAGE:
                break
            since = last + 1
        return [(t, rate, mark) for t, (rate, mark) in sorted(out.items())]

    # ------------------------------------------------------------------ account

    async def account(self) -> AccountView:
        """Wallet, positions, entry prices and margins (isolated wallet or initial margin)."""
        acc = await self.call("account", self.ex.fapiPrivateV2GetAccount, weight=5)
        return account_from_binance(acc, self.symbols)

    async def open_orders(self, symbol: str) -> list[dict[str, Any]]:
        """The symbol's open orders as ccxt reports them (``id``, ``clientOrderId``, ...)."""
        m = self.market_ids[symbol]
        return list(await self.call(f"open orders {symbol}",
                                    partial(self.ex.fetch_open_orders, m)))

    async def cancel(self, symbol: str, order_id: str) -> None:
        """Cancel an order by the exchange's id (an order's call: before reads)."""
        m = self.market_ids[symbol]
        await self.call(f"cancel {symbol}", partial(self.ex.cancel_order, order_id, m),
                        priority=True)

    # ------------------------------------------------------------------ orders

    async def lookup(self, symbol: str, client_order_id: str, *,
                     algo: bool = False) -> OrderResult | None:
        """The order with this client id, or None when the exchange does not know it.

        ``algo``: a conditional (stop / take-profit) order, kept by Binance as an algo order
        (``GET /fapi/v1/algoOrder?clientAlgoId=``); once triggered, its fill is that of the
        order the trigger created (``actualOrderId``), see :func:`order_from_algo`."""
        if algo:
            return await self._lookup_algo(symbol, client_order_id)
        m = self.market_ids[symbol]
        try:
            o = await self.call(f"look up {client_order_id}", partial(
                self.ex.fetch_order, "", m, params={"origClientOrderId": client_order_id}))
        except RequestRejected as err:
            if err.not_found:
                return None
            raise
        return order_from_ccxt(o, client_order_id)

    async def _lookup_algo(self, symbol: str, client_algo_id: str) -> OrderResult | None:
        exid = self._exid(symbol)
        try:
            a = await self.call(f"look up {client_algo_id}", partial(
                self.ex.fapiPrivateGetAlgoOrder, {"clientAlgoId": client_algo_id}))
        except RequestRejected as err:
            if err.not_found:
                return None
            raise
        actual = None
        if str(a.get("actualOrderId") or "") and a.get("algoStatus") in ("TRIGGERED", "FINISHED"):
            actual = await self.call(f"look up the order {client_algo_id} triggered", partial(
                self.ex.fapiPrivateGetOrder, {"symbol": exid, "orderId": a["actualOrderId"]}))
        return order_from_algo(a, actual, client_algo_id)

    def _exid(self, symbol: str) -> str:
        return str(self.ex.markets[self.market_ids[symbol]]["id"])

    async def open_algo_orders(self, symbol: str) -> list[OrderResult]:
        """The conditional orders resting on ``symbol`` (``GET /fapi/v1/openAlgoOrders``)."""
        rows = await self.call(f"open algo orders {symbol}", partial(
            self.ex.fapiPrivateGetOpenAlgoOrders, {"symbol": self._exid(symbol)}))
        return [order_from_algo(a, None) for a in rows or []]

    async def _post(self, req: OrderRequest) -> OrderResult:
        """One attempt at sending ``req`` (no retry here)."""
        cid = req.client_order_id
        if req.trigger:
            # since 2025-12-09 conditional orders go to the algo endpoint (/order answers -4120)
            a = await self.ex.fapiPrivatePostAlgoOrder({
                "algoType": "CONDITIONAL", "symbol": self._exid(req.symbol),
                "side": req.side.upper(), "type": req.kind, "triggerPrice": req.stop_price,
                "closePosition": "true", "workingType": "CONTRACT_PRICE", "clientAlgoId": cid})
            return order_from_algo(a, None, cid)
        params: dict[str, Any] = {"newClientOrderId": cid, "newOrderRespType": "RESULT"}
        if req.reduce_only:
            params["reduceOnly"] = True
        if req.kind == "limit":
            params["timeInForce"] = "GTC"
        m = self.market_ids[req.symbol]
        o = await self.ex.create_order(m, req.kind, req.side, req.qty, req.price, params)
        return order_from_ccxt(o, cid)

    async def _found(self, req: OrderRequest) -> OrderResult | None:
        """The order when the exchange has it (logged: not resent). A lookup the exchange
        refuses for another reason than "unknown order" is FATAL, never an order rejection."""
        try:
            found = await self.lookup(req.symbol, req.client_order_id, algo=req.trigger)
        except RequestRejected as err:
            raise VenueFatal(err.message, verdict=err.verdict, hint=FATAL_HINT) from err
        if found is not None:
            self.event("info", "broker", f"order {req.client_order_id} was accepted; not resent",
                       {"symbol": req.symbol})
        return found

    def _on_order_retry(self, what: str, err: BaseException, attempt: int, wait: float) -> None:
        self.retries += 1
        status = "status unknown; looking it up" if classify(err).unknown_status else "retrying"
        self.event("warning", "broker", f"{what}: {type(err).__name__}, {status}",
                   {"attempt": attempt, "error": short(err), "wait_s": round(wait, 3)})

    async def send(self, req: OrderRequest) -> OrderResult:
        """Send one order of any kind AT MOST ONCE, as the exchange acknowledged it.

        Retried as every call; but after an attempt whose outcome is unknown (5xx, -1007,
        timeout, dropped connection) the order is looked up by its client id first and
        returned, not resent, when the exchange has it. A duplicate client id (-4116) is
        looked up too. Raises :class:`OrderRejected` when the exchange refuses it, and
        ``VenueUnavailable`` when it cannot be placed within the retry budget. Its calls,
        lookups included, go before reads (:func:`order_scope`).
        """
        with order_scope():
            return await self._send(req)

    async def _send(self, req: OrderRequest) -> OrderResult:
        import ccxt

        cid = req.client_order_id
        unknown = False

        async def attempt() -> OrderResult:
            nonlocal unknown
            if unknown and (found := await self._found(req)) is not None:
                return found
            try:
                return await self._post(req)
            except ccxt.BaseError as err:
                unknown = unknown or classify(err).unknown_status
                raise

        try:
            return await self.retry.arun(f"order {cid}", self._paced(attempt, 0, 1),
                                         headers=self._headers, on_retry=self._on_order_retry)
        except RequestRejected as err:
            if err.code == -4116 or err.verdict.reason == "DuplicateOrderId":
                if (found := await self._found(req)) is not None:
                    return found
            cause = err.__cause__ or err
            raise OrderRejected(short(cause), verdict=err.verdict, client_order_id=cid) from cause
        except VenueUnavailable as err:
            if unknown:  # one last look: it may have been accepted by the last attempt
                with contextlib.suppress(VenueUnavailable):
                    if (found := await self._found(req)) is not None:
                        return found
            status = "its status is unknown" if unknown else "it was not placed"
            raise VenueUnavailable(
                f"order {cid} ({req.describe()}) could not be placed after "
                f"{self.retry.max_attempts} attempts; {status}", verdict=err.verdict,
                hint="the intent is in the run log; restart to reconcile",
            ) from err

    async def market_order(
        self, symbol: str, side: str, qty: float, *, client_order_id: str, reduce_only: bool,
        limit_price: float | None = None,
    ) -> OrderResult:
        """A market order through :meth:`send`, waited for until its fill is final.

        With ``limit_price``: a GTC LIMIT order at that price instead, returned as the
        exchange acknowledged it (not waited for)."""
        kind = "market" if limit_price is None else "limit"
        req = OrderRequest(symbol, side, kind, client_order_id, qty=qty, price=limit_price,
                           reduce_only=reduce_only)
        result = await self.send(req)
        with order_scope():
            for _ in range(self.retry.max_attempts if kind == "market" else 0):
                if result.status in FINAL:
                    break
                await self.retry.asleep(0.05)
                result = await self.lookup(symbol, client_order_id) or result
        return result

    async def trigger_order(
        self, symbol: str, kind: str, side: str, stop_price: str, *, client_order_id: str
    ) -> OrderResult:
        """A ``STOP_MARKET`` / ``TAKE_PROFIT_MARKET`` algo order (``POST /fapi/v1/algoOrder``,
        ``algoType=CONDITIONAL``, ``closePosition=true``: it closes whatever position is held
        when the last traded price reaches ``stop_price``), through :meth:`send`; its client
        id is the ``clientAlgoId``. Raises :class:`OrderRejected` when refused (e.g. -2021: would trigger
        now)."""
        return await self.send(OrderRequest(symbol, side, kind, client_order_id,
                                            stop_price=stop_price, reduce_only=True))

    async def cancel_by_client_id(self, symbol: str, client_order_id: str, *,
                                  algo: bool = False) -> OrderResult | None:
        """Cancel an order by client id (``algo``: a conditional order, by its
        ``clientAlgoId``); returns its final state (None if unknown). An order's calls:
        before reads."""
        m = self.market_ids[symbol]
        cancel = (partial(self.ex.fapiPrivateDeleteAlgoOrder, {"clientAlgoId": client_order_id})
                  if algo else
                  partial(self.ex.cancel_order, "", m, params={"origClientOrderId": client_order_id}))
        with order_scope():
            try:
                await self.call(f"cancel {client_order_id}", cancel)
            except RequestRejected:
                pass  # already triggered, expired or canceled: its state says which
            return await self.lookup(symbol, client_order_id, algo=algo)


def check_listed(symbols: Sequence[str], info: dict[str, Any], venue: str) -> None:
    """Raise :class:`ExchangeError` unless exchangeInfo ``info`` lists every symbol as a
    trading perpetual (the message names the symbol and what the venue lists)."""
    listed = {e["symbol"]: e for e in info.get("symbols") or []
              if isinstance(e, dict) and "symbol" in e}
    missing = [s for s in symbols if s not in listed]
    if missing:
        names = sorted(listed)
        if len(names) <= 20:
            lists = f"it lists {', '.join(names) or 'no symbol'}"
        else:
            close = sorted({c for s in missing for c in difflib.get_close_matches(s, names, n=3)})
            lists = f"it lists {len(names)} symbols" + (f", e.g. {', '.join(close)}" if close else "")
        raise ExchangeError(
            f"{venue} does not list {', '.join(missing)}; no order or setting was sent",
            hint=f"{lists}; check data.symbols / --symbols")
    for s in symbols:
        status = listed[s].get("status", "TRADING")
        contract = listed[s].get("contractType", "PERPETUAL")
        if status != "TRADING" or contract != "PERPETUAL":
            raise ExchangeError(
                f"{venue} lists {s} as {contract} with status {status}, not a trading "
                "perpetual; no order or setting was sent",
                hint="trade a perpetual whose status is TRADING")


Broker = BinanceClient  # the name live mode used (engine/live/broker.py)
