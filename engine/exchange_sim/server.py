"""The simulator's HTTP and websocket server (aiohttp, one port).

REST lives under ``/fapi/...`` (handlers in :mod:`.rest`), market streams at ``/ws/<stream>``
and ``/stream?streams=a/b`` (combined ``{"stream","data"}`` form), the user-data stream at
``/ws/<listenKey>``, and a small admin API for tests under ``/sim/...``:

- ``GET /sim/faults``: fault counts and the last fault events;
- ``GET /sim/state``: market clock, replay position, wallet, fills and funding so far;
- ``POST /sim/advance?ms=N``: move the market clock forward by N ms (any speed).

The admin API has no authentication: the simulator is a local test double; bind it to
127.0.0.1 (the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from engine.exchange_sim import errors as E
from engine.exchange_sim import shapes as S
from engine.exchange_sim.accounting import warm_up
from engine.exchange_sim.clock import MarketClock
from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.exchange import Exchange
from engine.exchange_sim.faults import FaultInjector
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.ratelimit import RateLimiter
from engine.exchange_sim.rest import ROUTES, Ctx, dumps
from engine.exchange_sim.signing import check_api_key, check_signed, parse_params
from engine.sim.specs import EXCHANGE_INFO, LEVERAGE_BRACKETS, load_specs

log = logging.getLogger("engine.exchange_sim")

ORDER_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")
MAX_STREAMS = 1024
MAX_IN_PER_S = 10


@dataclass(eq=False)
class Conn:
    """One websocket client: its streams, its outgoing queue and its transport."""

    ws: web.WebSocketResponse
    transport: Any
    combined: bool
    streams: set[str] = field(default_factory=set)
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    user: bool = False
    in_times: list[float] = field(default_factory=list)


class SimServer:
    """One simulator instance: exchange state, clock, limits, faults and the aiohttp app.

    Use :func:`engine.exchange_sim.runner.serve` (async) or
    :class:`engine.exchange_sim.runner.ServerThread` (sync) to run it.
    """

    def __init__(
        self,
        config: ExchangeSimSettings,
        *,
        market: MarketData | None = None,
        notices: list[str] | None = None,
    ) -> None:
        self.config = config
        self.notices = list(notices or [])
        if market is None:
            market, more = MarketData.load(
                list(config.symbols),
                interval=config.interval,
                start_ms=config.start_ms,
                end_ms=config.end_ms,
                store=config.store,
                substeps=config.substeps,
            )
            self.notices.extend(more)
        specs = {s.symbol: s for s in load_specs(list(market.bars))}
        warm_up()
        self.exchange = Exchange(
            market,
            specs,
            start_ms=config.start_ms,
            end_ms=config.end_ms,
            balance=config.balance,
            taker_fee=config.taker_fee,
            maker_fee=config.maker_fee,
            slippage_bps=config.slippage_bps,
            default_leverage=config.default_leverage,
        )
        self.clock = MarketClock(
            start_ms=config.start_ms, speed=config.speed, end_ms=self.exchange.end_ms
        )
        info = json.loads(EXCHANGE_INFO.read_text())
        info["symbols"] = [s for s in info["symbols"] if s["symbol"] in market.bars]
        self.exchange_info = info
        self.leverage_brackets = json.loads(LEVERAGE_BRACKETS.read_text())
        self.limiter = RateLimiter(
            weight_limit=config.weight_limit,
            window_s=config.weight_window_s,
            orders_10s=config.orders_10s,
            orders_1m=config.orders_1m,
            ban_after=config.ban_after,
            ban_s=config.ban_s,
        )
        self.faults = FaultInjector(config.faults, seed=config.seed, log_path=config.fault_log)
        self.conns: set[Conn] = set()
        self.by_stream: dict[str, set[Conn]] = {}
        self.current_listen_key: str | None = None
        self.exchange.sinks.append(self._on_event)
        self._tasks: list[asyncio.Task[Any]] = []
        self._wake: asyncio.Event | None = None  # created in start(), inside the loop
        self.frames_sent = 0
        self.app = self._build_app()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/fapi/{tail:.*}", self._rest)
        app.router.add_get("/ws", self._ws_bare)
        app.router.add_get("/ws/{stream}", self._ws_raw)
        app.router.add_get("/stream", self._ws_combined)
        app.router.add_get("/sim/faults", self._admin_faults)
        app.router.add_get("/sim/state", self._admin_state)
        app.router.add_post("/sim/advance", self._admin_advance)
        return app

    async def start(self) -> int:
        """Bind and start serving; return the bound port (``config.port`` 0 picks one)."""
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._wake = asyncio.Event()
        self.clock.restart()
        self._tasks.append(asyncio.create_task(self._ticker()))
        if self.config.faults.ws_drop_s:
            self._tasks.append(asyncio.create_task(self._ws_dropper(self.config.faults.ws_drop_s)))
        if self.config.ping_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._pinger(self.config.ping_interval_s)))
        return self.port

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for c in list(self.conns):
            with contextlib.suppress(Exception):
                await c.ws.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.faults.close()

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def _ticker(self) -> None:
        """Play sub-steps as the market clock reaches them."""
        ex = self.exchange
        while True:
            nxt = ex.next_event_ms()
            if nxt is None:
                await asyncio.sleep(0.5)
                continue
            delay = self.clock.wall_delay_s(nxt)
            if delay > 0:
                assert self._wake is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 0.5))
                self._wake.clear()
            n = ex.catch_up(self.clock.now_ms())
            if n:
                await asyncio.sleep(0)

    def listen_key(self) -> str:
        if self.current_listen_key is None:
            self.current_listen_key = (
                secrets.token_urlsafe(48).replace("-", "a").replace("_", "b")[:64]
            )
        return self.current_listen_key

    def close_listen_key(self) -> None:
        key = self.current_listen_key
        self.current_listen_key = None
        for c in list(self.by_stream.get(key or "", ())):
            asyncio.ensure_future(c.ws.close())

    # ------------------------------------------------------------------ REST
    def _json(
        self, obj: Any, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            text=dumps(obj), status=status, content_type="application/json", headers=headers
        )

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        spec = faults.spec
        if spec.latency_s:
            faults.record("latency", path=request.path, ms=int(spec.latency_s * 1000))
            await asyncio.sleep(spec.latency_s)
        wall = time.time()
        ip = request.remote or "?"
        route = ROUTES.get((request.method, request.path))
        if route is None:
            return self._json(
                {"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"},
                status=404,
            )
        headers: dict[str, str] = {}
        try:
            burst = faults.burst_retry_after()
            if burst is not None:
                faults.record("http_429_burst", path=request.path, retry_after=burst)
                raise E.too_many_requests(self.config.weight_limit, burst)
            body = ""
            if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
                body = await request.text()
            query = request.query_string
            params = parse_params(query, body)
            used = self.limiter.charge(ip, route.weight(params), wall)
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            api_key = request.headers.get("X-MBX-APIKEY")
            if route.key:
                check_api_key(api_key, self.config.api_key)
            if route.signed:
                check_signed(query=query, body=body, params=params, secret=self.config.api_secret)
            if route.order:
                c10, c60 = self.limiter.count_order(api_key or ip, wall)
                headers["X-MBX-ORDER-COUNT-10S"] = str(c10)
                headers["X-MBX-ORDER-COUNT-1M"] = str(c60)
            after_accept = False
            if faults.draw_5xx():
                if (
                    request.method == "POST"
                    and request.path in ORDER_PATHS
                    and faults.draw_after_accept()
                ):
                    after_accept = True
                else:
                    faults.record("http_5xx", path=request.path, accepted=False)
                    raise E.service_unavailable()
            now = self.clock.now_ms()
            self.exchange.catch_up(now)
            result = route.handler(Ctx(self, params, now, api_key))
            if after_accept:
                faults.record("http_5xx", path=request.path, accepted=True)
                raise E.unknown_status()
            return self._json(result, headers=headers)
        except E.BinanceError as err:
            headers.update(err.headers)
            return self._json(err.body(), status=err.status, headers=headers)

    # ------------------------------------------------------------------ admin
    async def _admin_faults(self, request: web.Request) -> web.Response:
        return self._json(self.faults.snapshot(last=int(request.query.get("last", "200"))))

    async def _admin_state(self, request: web.Request) -> web.Response:
        ex = self.exchange
        now = self.clock.now_ms()
        ex.catch_up(now)
        return self._json(
            {
                "marketTime": now,
                "bar": ex.j,
                "substep": ex.k,
                "substeps": ex.K,
                "barOpen": ex.T0 + ex.j * ex.I,
                "endTime": ex.end_ms,
                "wallet": ex.book.wallet,
                "fees": ex.book.fees_paid,
                "funding": ex.book.funding_paid,
                "realized": ex.book.realized,
                "fills": ex.fills,
                "fundingEvents": ex.funding_events,
                "framesSent": self.frames_sent,
                "connections": len(self.conns),
                "last": ex.last,
            }
        )

    async def _admin_advance(self, request: web.Request) -> web.Response:
        try:
            ms = int(request.query["ms"])
        except (KeyError, ValueError):
            return self._json(
                {"code": -1102, "msg": "Mandatory parameter 'ms' was not sent"}, status=400
            )
        now = self.clock.advance(ms)
        self.exchange.catch_up(now)
        if self._wake is not None:
            self._wake.set()
        return self._json({"marketTime": now, "bar": self.exchange.j, "substep": self.exchange.k})

    # ------------------------------------------------------------------ websockets
    def _valid_stream(self, name: str) -> bool:
        if name == self.current_listen_key:
            return True
        sym, _, kind = name.partition("@")
        if sym.upper() not in self.exchange.market.bars:
            return False
        return kind in (f"kline_{self.config.interval}", "markPrice", "markPrice@1s")

    async def _ws_bare(self, request: web.Request) -> web.StreamResponse:
        return await self._ws(request, [], combined=False)

    async def _ws_raw(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["stream"]
        streams = [s for s in name.split("/") if s]
        return await self._ws(request, streams, combined=False)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        return await self._ws(request, streams, combined=True)

    async def _ws(
        self, request: web.Request, streams: list[str], *, combined: bool
    ) -> web.StreamResponse:
        bad = [s for s in streams if not self._valid_stream(s)]
        if bad:
            return self._json({"code": -1121, "msg": f"Invalid stream name: {bad[0]}"}, status=400)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 16)
        await ws.prepare(request)
        conn = Conn(ws=ws, transport=request.transport, combined=combined)
        for s in streams:
            self._subscribe(conn, s)
        self.conns.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if not self._rate_ok(conn):
                        break
                    reply = self._control(conn, msg.data)
                    if reply is not None:
                        conn.queue.put_nowait(dumps(reply))
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._drop(conn)
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    def _rate_ok(self, conn: Conn) -> bool:
        now = time.monotonic()
        conn.in_times = [t for t in conn.in_times if now - t < 1.0]
        conn.in_times.append(now)
        return len(conn.in_times) <= MAX_IN_PER_S

    def _subscribe(self, conn: Conn, name: str) -> None:
        conn.streams.add(name)
        self.by_stream.setdefault(name, set()).add(conn)

    def _drop(self, conn: Conn) -> None:
        self.conns.discard(conn)
        for s in conn.streams:
            subs = self.by_stream.get(s)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.by_stream[s]

    def _control(self, conn: Conn, text: str) -> dict[str, Any] | None:
        try:
            msg = json.loads(text)
            method = msg["method"]
            mid = msg.get("id")
        except (ValueError, KeyError, TypeError):
            return {
                "error": {"code": 3, "msg": "Invalid JSON: expected a JSON object with a method"}
            }
        params = msg.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return {
                    "error": {
                        "code": 2,
                        "msg": "Invalid request: params must be a list of stream names",
                    },
                    "id": mid,
                }
            bad = [p for p in params if not self._valid_stream(p)]
            if bad:
                return {
                    "error": {"code": 2, "msg": f"Invalid request: unknown stream {bad[0]!r}"},
                    "id": mid,
                }
            if method == "SUBSCRIBE":
                if len(conn.streams | set(params)) > MAX_STREAMS:
                    return {
                        "error": {"code": 2, "msg": "Invalid request: too many streams"},
                        "id": mid,
                    }
                for p in params:
                    self._subscribe(conn, p)
            else:
                for p in params:
                    conn.streams.discard(p)
                    subs = self.by_stream.get(p)
                    if subs is not None:
                        subs.discard(conn)
            return {"result": None, "id": mid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": mid}
        if method == "SET_PROPERTY":
            if (
                isinstance(params, list)
                and len(params) == 2
                and params[0] == "combined"
                and isinstance(params[1], bool)
            ):
                conn.combined = params[1]
                return {"result": None, "id": mid}
            return {
                "error": {"code": 2, "msg": "Invalid request: property name must be 'combined'"},
                "id": mid,
            }
        if method == "GET_PROPERTY":
            return {"result": conn.combined, "id": mid}
        return {
            "error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
            "id": mid,
        }

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

    def _send(self, name: str, payload: dict[str, Any]) -> None:
        subs = self.by_stream.get(name)
        if not subs:
            return
        raw: str | None = None
        comb: str | None = None
        faults = self.faults
        limit = self.config.queue_limit
        for c in list(subs):
            if c.combined:
                if comb is None:
                    comb = dumps({"stream": name, "data": payload})
                text = comb
            else:
                if raw is None:
                    raw = dumps(payload)
                text = raw
            if faults.spec.malformed and faults.draw_malformed():
                faults.record("malformed", stream=name)
                text = text[: max(1, len(text) // 2)]
            if c.queue.qsize() >= limit:
                # a client that cannot keep up is disconnected, as Binance does
                self._drop(c)
                asyncio.ensure_future(c.ws.close())
                continue
            c.queue.put_nowait(text)

    def _on_event(self, kind: str, p: dict[str, Any]) -> None:
        ex = self.exchange
        if kind == "kline":
            name = f"{p['symbol'].lower()}@kline_{self.config.interval}"
            if name in self.by_stream:
                self._send(
                    name,
                    S.kline_ws(ex, p["symbol"], p["row"], p["k"], p["t"], self.config.interval),
                )
        elif kind == "mark":
            for suffix in ("markPrice", "markPrice@1s"):
                name = f"{p['symbol'].lower()}@{suffix}"
                if name in self.by_stream:
                    self._send(name, S.mark_ws(ex, p["symbol"], p["t"]))
        elif self.current_listen_key and self.current_listen_key in self.by_stream:
            t = ex.event_time(ex.j, ex.k) if ex.j < ex.n_bars else ex.end_ms
            if kind == "order":
                self._send(self.current_listen_key, S.order_update_event(ex, p["order"], p["x"], t))
            elif kind == "account":
                self._send(
                    self.current_listen_key, S.account_update_event(ex, p["reason"], p["symbol"], t)
                )

    async def _ws_dropper(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for c in list(self.conns):
                self.faults.record("ws_drop", streams=sorted(c.streams))
                self._drop(c)
                if c.transport is not None:
                    c.transport.abort()

    async def _pinger(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            for c in list(self.conns):
                with contextlib.suppress(Exception):
                    await c.ws.ping()
