"""The Binance USD-M broker and REST market data for live mode, through ccxt ``binanceusdm``.

Every REST call goes through :meth:`Broker.call`: retried with tenacity on network errors
and ``OperationFailed`` (5xx, -1001/-1007) (``ExchangeNotAvailable``), ``DDoSProtection`` and ``RateLimitExceeded`` (429/418),
waiting ``Retry-After`` when the server sends it and exponential backoff otherwise. Orders
are idempotent (invariant 7): :meth:`Broker.market_order` sends the client order id the
caller derived (and logged as ``new``) and, when an attempt ends with an unknown status
(5xx, timeout, dropped connection), looks the order up by that id before sending again, so
an order the exchange accepted is never sent twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from engine.errors import ExchangeError
from engine.live.decider import AccountView, Bar

EventFn = Callable[[str, str, str, dict[str, Any]], None]

TESTNET_REST = "https://testnet.binancefuture.com"
TESTNET_WS = "wss://fstream.binancefuture.com"
PROD_REST = "https://fapi.binance.com"
PROD_WS = "wss://fstream.binance.com"
HOUR_MS = 3_600_000


class OrderRejected(Exception):
    """The exchange refused the order (filters, margin): record it and continue."""


@dataclass(frozen=True)
class OrderResult:
    """A placed order as the exchange reports it."""

    client_order_id: str
    exchange_order_id: str
    status: str
    filled: float
    average: float
    time_ms: int
    update_ms: int = 0  # the last change (a triggered stop: when it filled)


class Broker:
    """ccxt (async) access to one Binance-compatible USD-M venue.

    Parameters
    ----------
    exchange : a ``ccxt.async_support.binanceusdm`` (see :func:`engine.exchange_sim.client.make_ccxt`).
    symbols : exchange symbols (``BTCUSDT``) in graph order.
    interval : the base kline interval.
    event : callback ``(severity, component, message, data)`` for system events.
    max_attempts, max_wait_s : retry budget (attempts per call, the longest single wait).
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
    ) -> None:
        from engine.timeutil import interval_ms

        self.ex = exchange
        self.symbols = symbols
        self.interval = interval
        self.step = interval_ms(interval)
        self.event = event
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.market_ids: dict[str, str] = {}
        self.retries = 0

    # ------------------------------------------------------------------ plumbing

    def _wait(self, err: BaseException, attempt: int) -> float:
        import ccxt

        wait = min(0.2 * 2 ** (attempt - 1), self.max_wait_s)
        if isinstance(err, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
            headers = getattr(self.ex, "last_response_headers", None) or {}
            ra = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
            if ra is not None:
                try:
                    wait = min(max(float(ra), 0.0), self.max_wait_s)
                except ValueError:
                    pass
        return wait

    async def call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one REST call with retries on temporary trouble (see the module docstring)."""
        import ccxt
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

        def wait(state: Any) -> float:
            return self._wait(state.outcome.exception(), state.attempt_number)

        def before_sleep(state: Any) -> None:
            self.retries += 1
            err = state.outcome.exception()
            self.event(
                "warning", "broker", f"{what}: {type(err).__name__}, retrying",
                {"attempt": state.attempt_number, "error": _short(err)},
            )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(ccxt.OperationFailed),
                wait=wait,
                stop=stop_after_attempt(self.max_attempts),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    return await fn()
        except ccxt.OperationFailed as err:
            raise ExchangeError(
                f"{what}: the exchange did not answer after {self.max_attempts} attempts ({_short(err)})",
                hint="check --url / network; the run can be restarted (it reconciles with the exchange)",
            ) from err
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ setup

    async def load(self) -> None:
        await self.call("load markets", self.ex.load_markets)
        by_id = {m["id"]: m["symbol"] for m in self.ex.markets.values() if m.get("swap")}
        missing = [s for s in self.symbols if s not in by_id]
        if missing:
            raise ExchangeError(
                f"the exchange does not list {', '.join(missing)}",
                hint="check data.symbols / --symbols against the venue's exchangeInfo",
            )
        self.market_ids = {s: by_id[s] for s in self.symbols}

    async def configure(self, *, leverage: int, margin_mode: str) -> None:
        """Set leverage and margin type per symbol ("no need to change" counts as done)."""
        import ccxt

        for s in self.symbols:
            m = self.market_ids[s]
            await self.call(f"set leverage {s}", partial(self.ex.set_leverage, leverage, m))
            try:
                await self.call(f"set margin mode {s}", partial(self.ex.set_margin_mode, margin_mode, m))
            except (ccxt.MarginModeAlreadySet, ccxt.NoChange):
                pass
            except ccxt.BadRequest as err:
                if "No need to change" not in str(err):
                    raise ExchangeError(f"set margin mode {s}: {_short(err)}") from err

    async def server_time(self) -> int:
        return int(await self.call("server time", self.ex.fetch_time))

    # ------------------------------------------------------------------ market data

    async def closed_bars(self, symbol: str, *, start: int, end: int, now: int) -> list[Bar]:
        """Closed bars with ``start <= open_time <= end`` (and closed by ``now``), paginated."""
        out: list[Bar] = []
        since = start
        m = self.market_ids[symbol]
        while since <= end:
            rows = await self.call(
                f"klines {symbol}",
                partial(self.ex.fetch_ohlcv, m, self.interval, since=since, limit=1500),
            )
            if not rows:
                break
            for r in rows:
                t = int(r[0])
                if t < since or t > end or t + self.step > now:
                    continue
                out.append(Bar(symbol, t, float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])))
            last = int(rows[-1][0])
            if last < since:
                break
            since = last + self.step
            # no break on a short page: a server may cap pages below the limit asked for
            # (the simulator serves 1000, as Binance's default); an empty page ends the loop
        return out

    async def funding_settled(self, symbol: str, funding_time: int) -> tuple[float, float] | None:
        """``(rate, mark price)`` of the funding settled at ``funding_time`` (None: not known)."""
        exid = self.ex.markets[self.market_ids[symbol]]["id"]
        rows = await self.call(f"funding rate {symbol}", lambda: self.ex.fapiPublicGetFundingRate(
            {"symbol": exid, "startTime": funding_time - 60_000, "endTime": funding_time + 60_000,
             "limit": 10}))
        for r in rows or []:
            if abs(int(r["fundingTime"]) - funding_time) <= 60_000:
                return float(r["fundingRate"]), float(r.get("markPrice") or "nan")
        return None

    async def funding_events(self, symbol: str, *, start: int, end: int) -> list[tuple[int, float]]:
        """Settled funding events ``(funding_time, rate)`` with ``start <= time <= end``, paginated
        (``GET /fapi/v1/fundingRate``); times rounded to the hour (Binance's ms jitter removed,
        as at data import)."""
        m = self.market_ids[symbol]
        exid = self.ex.markets[m]["id"]
        out: dict[int, float] = {}
        since = start
        while since <= end:
            rows = await self.call(
                f"funding rates {symbol}",
                partial(
                    self.ex.fapiPublicGetFundingRate,
                    {"symbol": exid, "startTime": since, "endTime": end, "limit": 1000},
                ),
            )
            if not rows:
                break
            last = since
            for r in rows:
                raw = int(r["fundingTime"])
                last = max(last, raw)
                t = ((raw + HOUR_MS // 2) // HOUR_MS) * HOUR_MS
                if start <= t <= end:
                    out[t] = float(r["fundingRate"])
            if len(rows) < 1000:
                break
            since = last + 1
        return sorted(out.items())

    # ------------------------------------------------------------------ account

    async def account(self) -> AccountView:
        """Wallet, positions, entry prices and margins (isolated wallet or initial margin)."""
        acc = await self.call("account", lambda: self.ex.fapiPrivateV2GetAccount())
        wallet = next(float(a["walletBalance"]) for a in acc["assets"] if a["asset"] == "USDT")
        n = len(self.symbols)
        qty, entry, margin = np.zeros(n), np.zeros(n), np.zeros(n)
        index = {s: j for j, s in enumerate(self.symbols)}
        for p in acc["positions"]:
            j = index.get(p["symbol"])
            if j is None or p.get("positionSide", "BOTH") != "BOTH":
                continue
            qty[j] = float(p["positionAmt"])
            entry[j] = float(p.get("entryPrice") or 0.0)
            iso = p.get("isolated") in (True, "true")
            margin[j] = float(p["isolatedWallet"] if iso else p["initialMargin"])
        return AccountView(wallet=wallet, qty=qty, entry_price=entry, margin=margin)

    async def open_orders(self, symbol: str) -> list[dict[str, Any]]:
        m = self.market_ids[symbol]
        return list(await self.call(f"open orders {symbol}", lambda: self.ex.fetch_open_orders(m)))

    async def cancel(self, symbol: str, order_id: str) -> None:
        m = self.market_ids[symbol]
        await self.call(f"cancel {symbol}", lambda: self.ex.cancel_order(order_id, m))

    async def lookup(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """The order with this client id, or None when the exchange does not know it."""
        import ccxt

        m = self.market_ids[symbol]
        try:
            o = await self.call(
                f"look up {client_order_id}",
                lambda: self.ex.fetch_order("", m, params={"origClientOrderId": client_order_id}),
            )
        except ccxt.OrderNotFound:
            return None
        return _result(o, client_order_id)

    async def market_order(
        self, symbol: str, side: str, qty: float, *, client_order_id: str, reduce_only: bool,
        limit_price: float | None = None,
    ) -> OrderResult:
        """Send a market order at most once (see the module docstring); wait for its fill.

        With ``limit_price``: a GTC LIMIT order at that price instead, sent at most once the
        same way, and returned as the exchange acknowledged it (not waited for)."""
        import ccxt

        m = self.market_ids[symbol]
        params: dict[str, Any] = {"newClientOrderId": client_order_id, "newOrderRespType": "RESULT"}
        if reduce_only:
            params["reduceOnly"] = True
        kind = "market"
        if limit_price is not None:
            kind = "limit"
            params["timeInForce"] = "GTC"
        result: OrderResult | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                o = await self.ex.create_order(m, kind, side, qty, limit_price, params)
                result = _result(o, client_order_id)
                break
            except (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest) as err:
                if isinstance(err, ccxt.DuplicateOrderId):
                    result = await self.lookup(symbol, client_order_id)
                    if result is not None:
                        break
                raise OrderRejected(_short(err)) from err
            except ccxt.OperationFailed as err:  # NetworkError, 5xx (-1001/-1007): status unknown
                self.retries += 1
                self.event(
                    "warning", "broker",
                    f"order {client_order_id}: {type(err).__name__}, status unknown; looking it up",
                    {"attempt": attempt, "error": _short(err), "symbol": symbol},
                )
                import asyncio

                await asyncio.sleep(self._wait(err, attempt))
                result = await self.lookup(symbol, client_order_id)
                if result is not None:
                    self.event("info", "broker", f"order {client_order_id} was accepted; not resent",
                               {"symbol": symbol})
                    break
        if result is None:
            raise ExchangeError(
                f"order {client_order_id} ({symbol} {side} {qty:g}) could not be placed after "
                f"{self.max_attempts} attempts",
                hint="the intent is in the run log; restart to reconcile",
            )
        for _ in range(self.max_attempts if limit_price is None else 0):
            if result.status in ("closed", "canceled", "rejected", "expired"):
                break
            import asyncio

            await asyncio.sleep(0.05)
            found = await self.lookup(symbol, client_order_id)
            result = found or result
        return result


    async def trigger_order(
        self, symbol: str, kind: str, side: str, stop_price: str, *, client_order_id: str
    ) -> OrderResult:
        """Place a reduce-only ``STOP_MARKET`` / ``TAKE_PROFIT_MARKET`` order with
        ``closePosition=true`` (it closes whatever position is held when it triggers, on the
        last traded price). Sent at most once, as :meth:`market_order`. Raises
        :class:`OrderRejected` when the exchange refuses it (e.g. -2021: would trigger now)."""
        import asyncio

        import ccxt

        exid = self.ex.markets[self.market_ids[symbol]]["id"]
        req = {"symbol": exid, "side": side.upper(), "type": kind, "stopPrice": stop_price,
               "closePosition": "true", "workingType": "CONTRACT_PRICE",
               "newClientOrderId": client_order_id}
        for attempt in range(1, self.max_attempts + 1):
            try:
                o = await self.ex.fapiPrivatePostOrder(dict(req))
                return OrderResult(client_order_id=client_order_id,
                                   exchange_order_id=str(o.get("orderId")),
                                   status="open", filled=0.0, average=float("nan"),
                                   time_ms=int(o.get("updateTime") or 0))
            except (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest) as err:
                if isinstance(err, ccxt.DuplicateOrderId):
                    found = await self.lookup(symbol, client_order_id)
                    if found is not None:
                        return found
                raise OrderRejected(_short(err)) from err
            except ccxt.OperationFailed as err:
                self.retries += 1
                self.event("warning", "broker",
                           f"order {client_order_id}: {type(err).__name__}, status unknown; looking it up",
                           {"attempt": attempt, "error": _short(err), "symbol": symbol})
                await asyncio.sleep(self._wait(err, attempt))
                found = await self.lookup(symbol, client_order_id)
                if found is not None:
                    return found
        raise ExchangeError(
            f"order {client_order_id} ({symbol} {kind} at {stop_price}) could not be placed after "
            f"{self.max_attempts} attempts",
            hint="the intent is in the run log; restart to reconcile",
        )

    async def cancel_by_client_id(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """Cancel an order by client id; returns its final state (None if unknown)."""
        import ccxt

        m = self.market_ids[symbol]
        try:
            await self.call(f"cancel {client_order_id}", lambda: self.ex.cancel_order(
                "", m, params={"origClientOrderId": client_order_id}))
        except (ccxt.OrderNotFound, ccxt.InvalidOrder):
            pass  # already triggered, expired or canceled: its state says which
        return await self.lookup(symbol, client_order_id)


def _result(o: dict[str, Any], cid: str) -> OrderResult:
    info = o.get("info") or {}
    t = o.get("timestamp") or o.get("lastTradeTimestamp") or info.get("updateTime") or 0
    return OrderResult(
        client_order_id=str(o.get("clientOrderId") or cid),
        exchange_order_id=str(o.get("id")),
        status=str(o.get("status") or ""),
        filled=float(o.get("filled") or 0.0),
        average=float(o.get("average") or o.get("price") or float("nan")),
        time_ms=int(t),
        update_ms=int(info.get("updateTime") or o.get("lastUpdateTimestamp") or t or 0),
    )


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) <= 300 else text[:300] + "..."
