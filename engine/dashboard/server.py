"""The dashboard's HTTP side: the page at ``/``, its files under ``/static/``, and ``/ws``, a
WebSocket that sends a full snapshot of a :class:`~engine.dashboard.state.DashState` and then
deltas, at most every ``interval_s`` (250 ms).

One push task per server wakes every interval, lets the state's owner refresh it
(``tick``: live mode reads its account, health and the rows it logged since), then wakes the
clients whose socket is free. Each client's own task computes its delta when it is ready to
send (so a slow page gets fewer, merged deltas; nothing queues per client) and a send that
takes longer than ``send_timeout_s`` drops that client. Nothing here is on a decision's path:
the decision code never waits for this server, it only leaves state for the next tick.

A token (``token``) guards the page and the socket: compared in constant time
(:func:`hmac.compare_digest`) before any state is sent; a wrong or missing one is a 403.
:func:`check_bind` refuses a non-loopback address without a token.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.dashboard.state import Cursor, DashState
from engine.errors import UsageError

STATIC = Path(__file__).with_name("static")
#: the files the page may load (nothing else under static/ is served)
FILES = {
    "dash.js": "text/javascript",
    "lightweight-charts.standalone.production.js": "text/javascript",
}
#: the page's headers: no framing, no remote scripts (the page works offline), no referrer
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, *, flag: str = "--dashboard-host") -> None:
    """A usage error for a non-loopback ``host`` without a ``token``."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"{flag} {host} is not a loopback address: the dashboard needs a token there",
            hint=f"pass {flag.replace('host', 'token')} SECRET (the page is then "
            "opened as http://HOST:PORT/?token=SECRET), or bind to 127.0.0.1",
        )


def _dumps(msg: Any) -> str:
    import orjson

    return orjson.dumps(msg, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class DashServer:
    """The page and socket over ``state`` (see the module docstring). ``tick``: called (and
    awaited when it returns an awaitable) once per interval before clients are woken."""

    def __init__(
        self,
        state: DashState,
        *,
        token: str | None = None,
        interval_s: float = 0.25,
        tick: Callable[[], Awaitable[None] | None] | None = None,
        send_timeout_s: float = 5.0,
    ) -> None:
        self.state = state
        self.token = token or None
        self.interval_s = interval_s
        self.tick = tick
        self.send_timeout_s = send_timeout_s
        self.clients: dict[Any, asyncio.Event] = {}  # socket -> its wake-up
        self._transports: dict[Any, Any] = {}  # socket -> its TCP transport (to abort)
        self.pushes = 0  # messages sent (all clients)
        self.refused = 0
        #: CPU seconds this server's own work took on its thread (deltas, JSON, sends; the
        #: tick's is the tick owner's to count): what bench/dashboard.py reports
        self.cpu_s = 0.0  # page or socket requests refused for their token
        self._pump: asyncio.Task[None] | None = None
        self._runner: Any = None
        self.port: int | None = None

    # ------------------------------------------------------------------ app

    def install(self, app: Any) -> None:
        """Add the routes to an aiohttp application (its own, or the metrics server's)."""
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._ws)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    async def serve(self, host: str, port: int) -> int:
        """Serve on ``host:port`` (0: any free port); returns the port."""
        from aiohttp import web

        app = web.Application()
        self.install(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = [int(a[1]) for a in self._runner.addresses if isinstance(a, tuple)]
        self.port = bound[0] if bound else port
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _start(self, _app: Any) -> None:
        self._pump = asyncio.create_task(self._push_loop())

    async def _stop(self, _app: Any) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self.drop_clients()

    async def drop_clients(self) -> None:
        """Close every socket (the pages reconnect by themselves)."""
        for ws in list(self.clients):
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (TimeoutError, ConnectionError, RuntimeError):
                self._abort(ws)

    def _abort(self, ws: Any) -> None:
        """Drop a client's connection at once (no closing handshake: its buffer is full)."""
        self.clients.pop(ws, None)
        tr = self._transports.pop(ws, None)
        if tr is not None:
            tr.abort()

    # ------------------------------------------------------------------ handlers

    def _allowed(self, request: Any) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token", "")
        ok = hmac.compare_digest(given.encode(), self.token.encode())
        if not ok:
            self.refused += 1
        return ok

    async def _page(self, request: Any) -> Any:
        from aiohttp import web

        if not self._allowed(request):
            return web.Response(status=403, text="forbidden: a wrong or missing token")
        return web.Response(
            body=(STATIC / "index.html").read_bytes(), content_type="text/html", headers=HEADERS
        )

    async def _static(self, request: Any) -> Any:
        from aiohttp import web

        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(
            body=(STATIC / name).read_bytes(),
            content_type=FILES[name],
            headers={"Cache-Control": "max-age=3600"},
        )

    async def _ws(self, request: Any) -> Any:
        from aiohttp import web

        if not self._allowed(request):
            return web.Response(status=403, text="forbidden: a wrong or missing token")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, timeout=2.0)
        await ws.prepare(request)
        wake = self.clients[ws] = asyncio.Event()
        self._transports[ws] = request.transport
        wake.set()  # the snapshot at once
        sender = asyncio.create_task(self._client(ws, wake))
        try:
            async for _msg in ws:  # the page sends nothing we act on; this sees the close
                pass
        finally:
            self.clients.pop(ws, None)
            self._transports.pop(ws, None)
            sender.cancel()
        return ws

    # ------------------------------------------------------------------ push

    async def _client(self, ws: Any, wake: asyncio.Event) -> None:
        cur = Cursor()
        while not ws.closed:
            await wake.wait()
            wake.clear()
            c0 = time.thread_time()
            msg = self.state.delta(cur)
            if msg is None:
                self.cpu_s += time.thread_time() - c0
                continue
            try:
                await asyncio.wait_for(ws.send_str(_dumps(msg)), self.send_timeout_s)
            except (TimeoutError, ConnectionError, RuntimeError):
                self._abort(ws)  # too slow, or gone: it reconnects and takes a snapshot
                return
            finally:
                self.cpu_s += time.thread_time() - c0
            self.pushes += 1

    async def _push_loop(self) -> None:
        seq = -1
        while True:
            await asyncio.sleep(self.interval_s)
            if self.tick is not None:
                got = self.tick()
                if got is not None:
                    await got
            c0 = time.thread_time()
            if self.state.seq != seq:
                seq = self.state.seq
                for wake in self.clients.values():
                    wake.set()
            self.cpu_s += time.thread_time() - c0
