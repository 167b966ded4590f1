"""The simulator's websocket streams, on Binance's USD-M paths since 2026-04-23.

Paths (``<family>`` is ``market``, ``public`` or ``private``):

- ``/<family>/ws/<s1>/<s2>`` (raw payloads), ``/<family>/ws`` (none yet; SUBSCRIBE later);
- ``/<family>/stream?streams=<s1>/<s2>`` (each payload wrapped ``{"stream", "data"}``);
- ``/private/ws?listenKey=<key>`` and ``/private/stream?listenKey=<key>``: the user-data
  stream; ``&events=A/B`` keeps only those event types (an allow list, as on Binance).

Families: ``/market`` serves ``<sym>@kline_<interval>``, ``@markPrice``, ``@markPrice@1s``,
``@ticker``, ``@miniTicker``; ``/public`` serves ``<sym>@bookTicker``; ``/private`` the listen
key. A stream asked for on another family's path is refused (HTTP 400 at the handshake, an
``{"error": {"code": 2, ...}}`` reply to a SUBSCRIBE) naming the right path. Binance itself
acknowledges such a subscription and then sends nothing (third-party measurements of
2026-07-30); the simulator refuses loudly so a client on the wrong path fails a test instead
of waiting. Streams of data the store does not hold (``@depth*``, ``@aggTrade``, ``@trade``)
are refused with a message saying so.

The legacy ``/ws/...`` and ``/stream?...`` paths, retired by Binance on 2026-04-23, answer
HTTP 404 unless the simulator runs with ``--legacy-ws`` (then they serve every family, as
they did before). On the venue a retired path still opens and carries only what ``/public``
carries (no klines, no user data); a 404 makes the retirement visible at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from engine.exchange_sim import events as EV
from engine.exchange_sim import shapes as S
from engine.exchange_sim import tickers as T
from engine.exchange_sim.clock import MarketClock
from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.exchange import Exchange
from engine.exchange_sim.faults import FaultInjector
from engine.exchange_sim.rest import dumps

MAX_STREAMS = 1024
MAX_IN_PER_S = 10
FAMILIES = ("market", "public", "private")
MARKET_KINDS = ("markPrice", "markPrice@1s", "ticker", "miniTicker")
NO_DATA = {"depth": "order book", "aggTrade": "trade", "trade": "trade"}
RETIRED = (
    "Not Found: Binance retired the USD-M websocket paths /ws and /stream on 2026-04-23; use "
    "/market/... (klines, mark price, tickers), /public/... (book ticker) or /private/... (user "
    "data), or start the simulator with --legacy-ws"
)


class Host(Protocol):
    """What the streams use of the server (:class:`engine.exchange_sim.server.SimServer`)."""

    config: ExchangeSimSettings
    exchange: Exchange
    clock: MarketClock
    faults: FaultInjector
    current_listen_key: str | None

    def json_response(
        self, obj: Any, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response: ...


@dataclass(eq=False)
class Conn:
    """One websocket client: its path family, streams, outgoing queue and transport."""

    ws: web.WebSocketResponse
    transport: Any
    combined: bool
    family: str  # market | public | private | legacy
    streams: set[str] = field(default_factory=set)
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    events: frozenset[str] | None = None  # /private's allow list
    in_times: list[float] = field(default_factory=list)


class Streams:
    """The websocket half of :class:`engine.exchange_sim.server.SimServer`."""

    def __init__(self, server: Host) -> None:
        self.srv = server
        self.conns: set[Conn] = set()
        self.by_stream: dict[str, set[Conn]] = {}
        self.frames_sent = 0
        self.book_update_id = 0

    def add_routes(self, app: web.Application, *, legacy: bool) -> None:
        for fam in FAMILIES:
            app.router.add_get(f"/{fam}/ws", self._handler(fam, combined=False))
            app.router.add_get(f"/{fam}/ws/{{stream:.+}}", self._handler(fam, combined=False))
            app.router.add_get(f"/{fam}/stream", self._handler(fam, combined=True))
        for path in ("/ws", "/ws/{stream:.+}", "/stream"):
            combined = path == "/stream"
            app.router.add_get(path, self._handler("legacy", combined=combined) if legacy else self._retired)

    async def _retired(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text=RETIRED)

    # ------------------------------------------------------------------ stream names
    def family_of(self, name: str) -> tuple[str | None, str]:
        """(family serving ``name`` or None, why not)."""
        if name == self.srv.current_listen_key:
            return "private", ""
        sym, _, kind = name.partition("@")
        if sym.upper() not in self.srv.exchange.market.bars:
            return None, f"unknown stream {name!r}"
        interval = self.srv.config.interval
        if kind == f"kline_{interval}" or kind in MARKET_KINDS:
            return "market", ""
        if kind == "bookTicker":
            return "public", ""
        if kind.startswith("kline_"):
            return None, f"the simulator replays {interval} klines only ({name!r})"
        base = kind.split("@")[0].rstrip("0123456789")
        if base in NO_DATA:
            return None, (f"the simulator has no {NO_DATA[base]} data for {name!r}: the store it "
                          "replays holds klines and funding rates only")
        return None, f"unknown stream {name!r}"

    def refusal(self, family: str, name: str) -> str | None:
        """Why ``name`` cannot be served on ``family``'s path (None: it can)."""
        fam, why = self.family_of(name)
        if fam is None:
            return why
        if family not in ("legacy", fam):
            return f"stream {name!r} is served on /{fam}, not /{family} (Binance's paths since 2026-04-23)"
        return None

    # ------------------------------------------------------------------ connections
    def _handler(self, family: str, *, combined: bool) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._connect(request, family, combined=combined)

        return handle

    def _names(self, request: web.Request, family: str, combined: bool) -> list[str]:
        raw = request.match_info.get("stream", "") if not combined else request.query.get("streams", "")
        names = [s for s in raw.split("/") if s]
        key = request.query.get("listenKey")
        if family in ("private", "legacy") and key:
            names.append(key)
        return names

    async def _connect(self, request: web.Request, family: str, *, combined: bool) -> web.StreamResponse:
        names = self._names(request, family, combined)
        for n in names:
            why = self.refusal(family, n)
            if why is not None:
                code = -1125 if family == "private" else -1121
                msg = "This listenKey does not exist." if family == "private" else f"Invalid stream: {why}"
                return self.srv.json_response({"code": code, "msg": msg}, status=400)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 16)
        await ws.prepare(request)
        allow = request.query.get("events")
        conn = Conn(ws=ws, transport=request.transport, combined=combined, family=family,
                    events=frozenset(e for e in allow.split("/") if e) if allow else None)
        for n in names:
            self._subscribe(conn, n)
        self.conns.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            await self._read(conn)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self.drop(conn)
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _read(self, conn: Conn) -> None:
        async for msg in conn.ws:
            if msg.type == WSMsgType.TEXT:
                if not self._rate_ok(conn):
                    break
                reply = self._control(conn, msg.data)
                if reply is not None:
                    conn.queue.put_nowait(dumps(reply))
            elif msg.type == WSMsgType.PING:
                await conn.ws.pong(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    def _rate_ok(self, conn: Conn) -> bool:
        now = time.monotonic()
        conn.in_times = [t for t in conn.in_times if now - t < 1.0]
        conn.in_times.append(now)
        return len(conn.in_times) <= MAX_IN_PER_S

    def _subscribe(self, conn: Conn, name: str) -> None:
        conn.streams.add(name)
        self.by_stream.setdefault(name, set()).add(conn)

    def _unsubscribe(self, conn: Conn, name: str) -> None:
        conn.streams.discard(name)
        subs = self.by_stream.get(name)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.by_stream[name]

    def drop(self, conn: Conn) -> None:
        self.conns.discard(conn)
        for s in list(conn.streams):
            self._unsubscribe(conn, s)

    # ------------------------------------------------------------------ control messages
    def _control(self, conn: Conn, text: str) -> dict[str, Any] | None:
        try:
            msg = json.loads(text)
            method = msg["method"]
            mid = msg.get("id")
        except (ValueError, KeyError, TypeError):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected a JSON object with a method"}}
        params = msg.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._sub_control(conn, method, params, mid)
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": mid}
        if method == "SET_PROPERTY":
            if isinstance(params, list) and len(params) == 2 and params[0] == "combined" and isinstance(params[1], bool):
                conn.combined = params[1]
                return {"result": None, "id": mid}
            return _error("property name must be 'combined'", mid)
        if method == "GET_PROPERTY":
            return {"result": conn.combined, "id": mid}
        return _error(f"unknown method {method!r}", mid)

    def _sub_control(self, conn: Conn, method: str, params: Any, mid: Any) -> dict[str, Any]:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _error("params must be a list of stream names", mid)
        if method == "UNSUBSCRIBE":
            for p in params:
                self._unsubscribe(conn, p)
            return {"result": None, "id": mid}
        for p in params:
            why = self.refusal(conn.family, p)
            if why is not None:
                return _error(why, mid)
        if len(conn.streams | set(params)) > MAX_STREAMS:
            return _error("too many streams", mid)
        for p in params:
            self._subscribe(conn, p)
        return {"result": None, "id": mid}

    # ------------------------------------------------------------------ sending
    async def _writer(self, conn: Conn) -> None:
        ws = conn.ws
        q = conn.queue
        while True:
            text = await q.get()
            await ws.send_str(text)
            self.frames_sent += 1
            while not q.empty():
                await ws.send_str(q.get_nowait())
                self.frames_sent += 1

    def send(self, name: str, payload: dict[str, Any]) -> None:
        subs = self.by_stream.get(name)
        if not subs:
            return
        raw: str | None = None
        comb: str | None = None
        faults = self.srv.faults
        limit = self.srv.config.queue_limit
        for c in list(subs):
            if c.events is not None and payload.get("e") not in c.events:
                continue
            if c.combined:
                comb = comb or dumps({"stream": name, "data": payload})
                text = comb
            else:
                raw = raw or dumps(payload)
                text = raw
            if faults.spec.malformed and faults.draw_malformed():
                faults.record("malformed", stream=name)
                text = text[: max(1, len(text) // 2)]
            if c.queue.qsize() >= limit:
                # a client that cannot keep up is disconnected, as Binance does
                self.drop(c)
                asyncio.ensure_future(c.ws.close())
                continue
            c.queue.put_nowait(text)

    def close_key(self, key: str, event_ms: int) -> None:
        """The listen key was closed: ``listenKeyExpired``, then the connections close."""
        subs = list(self.by_stream.get(key, ()))
        self.send(key, EV.listen_key_expired(key, event_ms))
        for c in subs:
            self.drop(c)
            asyncio.ensure_future(self._close_after_flush(c))

    async def _close_after_flush(self, c: Conn) -> None:
        for _ in range(100):
            if c.queue.empty():
                break
            await asyncio.sleep(0.01)
        await c.ws.close()

    # ------------------------------------------------------------------ exchange events
    def on_event(self, kind: str, p: dict[str, Any]) -> None:
        if kind in ("kline", "mark"):
            self._market_event(kind, p)
            return
        key = self.srv.current_listen_key
        if not key or key not in self.by_stream:
            return
        ex = self.srv.exchange
        t = int(p["t"])
        e_ms = max(self.srv.clock.now_ms(), t)  # sent now, never before it happened
        if kind == "order":
            self.send(key, EV.order_update(ex, p["order"], p["x"], e_ms))
        elif kind == "trade":
            self.send(key, EV.trade_lite(ex, p["order"], e_ms))
        elif kind == "algo":
            self.send(key, EV.algo_update(ex, p["order"], e_ms))
        elif kind == "account":
            self.send(key, EV.account_update(ex, p["reason"], p["symbol"], balance_change=p["bc"],
                                             t=t, event_ms=e_ms))

    def _market_event(self, kind: str, p: dict[str, Any]) -> None:
        """A kline update (during the sub-step), or the mark price and tickers after it."""
        ex = self.srv.exchange
        s, t = p["symbol"], p["t"]
        low = s.lower()
        interval = self.srv.config.interval
        if kind == "kline":
            name = f"{low}@kline_{interval}"
            if name in self.by_stream:
                self.send(name, S.kline_ws(ex, s, p["row"], p["k"], t, interval))
            return
        for suffix in ("markPrice", "markPrice@1s"):
            if f"{low}@{suffix}" in self.by_stream:
                self.send(f"{low}@{suffix}", S.mark_ws(ex, s, t))
        if f"{low}@ticker" in self.by_stream:
            self.send(f"{low}@ticker", T.ticker_ws(ex, s, t))
        if f"{low}@miniTicker" in self.by_stream:
            self.send(f"{low}@miniTicker", T.mini_ticker_ws(ex, s, t))
        if f"{low}@bookTicker" in self.by_stream:
            self.book_update_id += 1
            self.send(f"{low}@bookTicker", T.book_ticker_ws(ex, s, t, self.book_update_id))

    # ------------------------------------------------------------------ faults, pings
    async def dropper(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for c in list(self.conns):
                self.srv.faults.record("ws_drop", streams=sorted(c.streams))
                self.drop(c)
                if c.transport is not None:
                    c.transport.abort()

    async def pinger(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for c in list(self.conns):
                with contextlib.suppress(Exception):
                    await c.ws.ping()

    async def close_all(self) -> None:
        for c in list(self.conns):
            with contextlib.suppress(Exception):
                await c.ws.close()


def _error(msg: str, mid: Any) -> dict[str, Any]:
    return {"error": {"code": 2, "msg": f"Invalid request: {msg}"}, "id": mid}
