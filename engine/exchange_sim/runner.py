"""Run a simulator in-process: an async context manager, or a thread for sync code."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.server import SimServer


@contextlib.asynccontextmanager
async def serve(config: ExchangeSimSettings, *, market: MarketData | None = None) -> AsyncIterator[SimServer]:
    """Start a simulator in the running loop; yield it (``.port``, ``.url``, ``.ws_url``).

    >>> # async with serve(ExchangeSimSettings(symbols=("BTCUSDT",), interval="5m", start_ms=..., port=0)) as sim:
    >>> #     print(sim.url)
    """
    server = SimServer(config, market=market)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class ServerThread:
    """A simulator on its own event loop in a daemon thread, for synchronous callers.

    ``start()`` returns the bound port; ``stop()`` shuts it down. ``call(fn)`` runs ``fn(server)``
    on the server's loop and returns its result (the state is single-threaded).
    """

    def __init__(self, config: ExchangeSimSettings, *, market: MarketData | None = None) -> None:
        self.config = config
        self._market = market
        self.loop = asyncio.new_event_loop()
        self.server: SimServer | None = None
        self._thread = threading.Thread(target=self._run, name="sim-exchange", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = SimServer(self.config, market=self._market)
            self.loop.run_until_complete(self.server.start())
        except BaseException as err:  # noqa: BLE001 - reported to the starting thread
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self, *, timeout: float = 60.0) -> int:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the simulator did not start in time")
        if self._error is not None:
            raise self._error
        assert self.server is not None and self.server.port is not None
        return self.server.port

    def call(self, fn: Any, *, timeout: float = 10.0) -> Any:
        async def run() -> Any:
            return fn(self.server)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, *, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
