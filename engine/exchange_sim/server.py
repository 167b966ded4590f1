"""The simulator's HTTP and websocket server (aiohttp, one port).

REST lives under ``/fapi/...`` (handlers in :mod:`.rest`), the websocket streams on Binance's
paths since 2026-04-23 (``/market``, ``/public``, ``/private``; :mod:`.ws`), and a small admin
API for tests under ``/sim/...``:

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
from typing import Any

from aiohttp import web

from engine.exchange_sim import errors as E
from engine.exchange_sim import rules
from engine.exchange_sim.accounting import warm_up
from engine.exchange_sim.clock import MarketClock
from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.exchange import Exchange
from engine.exchange_sim.faults import FaultInjector
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.ratelimit import RateLimiter
from engine.exchange_sim.rest import ROUTES, Ctx, dumps
from engine.exchange_sim.signing import check_api_key, check_signed, parse_params
from engine.exchange_sim.ws import Streams
from engine.sim.specs import EXCHANGE_INFO, LEVERAGE_BRACKETS, load_specs

log = logging.getLogger("engine.exchange_sim")

ORDER_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")


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
        info = rules.advertised(json.loads(EXCHANGE_INFO.read_text()), list(market.bars))
        self.exchange = Exchange(
            market,
            specs,
            rules=rules.symbol_rules(info),
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
        self.streams = Streams(self)
        self.current_listen_key: str | None = None
        self.exchange.sinks.append(self.streams.on_event)
        self._tasks: list[asyncio.Task[Any]] = []
        self._wake: asyncio.Event | None = None  # created in start(), inside the loop
        self.app = self._build_app()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/fapi/{tail:.*}", self._rest)
        self.streams.add_routes(app, legacy=self.config.legacy_ws)
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
            self._tasks.append(asyncio.create_task(self.streams.dropper(self.config.faults.ws_drop_s)))
        if self.config.ping_interval_s > 0:
            self._tasks.append(asyncio.create_task(self.streams.pinger(self.config.ping_interval_s)))
        return self.port

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.streams.close_all()
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
        if key is not None:
            self.streams.close_key(key, self.clock.now_ms())

    @property
    def frames_sent(self) -> int:
        return self.streams.frames_sent

    @property
    def conns(self) -> set[Any]:
        return self.streams.conns

    # ------------------------------------------------------------------ REST
    def json_response(
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
            return self.json_response(
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
                check_signed(query=query, body=body, params=params, secret=self.config.api_secret,
                             now_ms=self.clock.candidates())
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
            return self.json_response(result, headers=headers)
        except E.BinanceError as err:
            headers.update(err.headers)
            return self.json_response(err.body(), status=err.status, headers=headers)

    # ------------------------------------------------------------------ admin
    async def _admin_faults(self, request: web.Request) -> web.Response:
        return self.json_response(self.faults.snapshot(last=int(request.query.get("last", "200"))))

    async def _admin_state(self, request: web.Request) -> web.Response:
        ex = self.exchange
        now = self.clock.now_ms()
        ex.catch_up(now)
        return self.json_response(
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
            return self.json_response(
                {"code": -1102, "msg": "Mandatory parameter 'ms' was not sent"}, status=400
            )
        now = self.clock.advance(ms)
        self.exchange.catch_up(now)
        if self._wake is not None:
            self._wake.set()
        return self.json_response({"marketTime": now, "bar": self.exchange.j, "substep": self.exchange.k})
