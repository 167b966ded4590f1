"""The kline websocket: ``<symbol>@kline_<interval>`` on a combined stream, closed bars only.

:func:`kline_stream` connects to ``{ws_url}/market/stream?streams=a@kline_5m/b@kline_5m``, decodes
each frame at the edge into a :class:`engine.binance.records.Bar` (only ``x: true`` frames: a
bar exists once it has closed), and reconnects with backoff when the connection drops. It
puts on the queue either a ``Bar`` or a :class:`Connected` marker (after every connect), so
the runner backfills missed bars through REST before it acts on the next frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.binance.records import Bar


@dataclass(frozen=True)
class Connected:
    """The stream (re)connected; ``n`` counts connections (1 = the first)."""

    n: int


def stream_url(ws_url: str, symbols: tuple[str, ...], interval: str) -> str:
    """The combined-stream URL for the symbols' kline streams on the venue's ``/market``
    path (Binance moved market streams there on 2026-04-23; the legacy ``/stream`` is retired).

    >>> stream_url("ws://127.0.0.1:9", ("BTCUSDT",), "5m")
    'ws://127.0.0.1:9/market/stream?streams=btcusdt@kline_5m'
    """
    names = "/".join(f"{s.lower()}@kline_{interval}" for s in symbols)
    return f"{ws_url.rstrip('/')}/market/stream?streams={names}"


def decode(raw: str | bytes, interval: str) -> Bar | None:
    """A closed bar from one combined-stream frame; None for open bars and other events.

    Raises ValueError for a frame that is not valid JSON or lacks the kline fields.
    """
    import orjson

    msg = orjson.loads(raw)
    data = msg.get("data", msg) if isinstance(msg, dict) else None
    if not isinstance(data, dict) or data.get("e") != "kline":
        return None
    k = data["k"]
    if k.get("i") != interval or k.get("x") is not True:
        return None
    return Bar(
        symbol=str(k["s"]).upper(),
        open_time=int(k["t"]),
        open=float(k["o"]),
        high=float(k["h"]),
        low=float(k["l"]),
        close=float(k["c"]),
        volume=float(k["v"]),
    )


async def kline_stream(
    url: str,
    interval: str,
    queue: asyncio.Queue[Any],
    *,
    stop: asyncio.Event,
    event: Callable[[str, str, str, dict[str, Any]], None],
    backoff_s: float = 0.2,
    max_backoff_s: float = 10.0,
) -> None:
    """Read the stream until ``stop`` is set, reconnecting after any drop."""
    import websockets

    n = 0
    delay = backoff_s
    while not stop.is_set():
        try:
            async with websockets.connect(url, open_timeout=10, ping_interval=20, ping_timeout=20,
                                          close_timeout=2, max_size=2**22) as ws:
                n += 1
                delay = backoff_s
                if n > 1:
                    event("warning", "stream", "websocket reconnected", {"connection": n})
                await queue.put(Connected(n))
                async for raw in ws:
                    try:
                        bar = decode(raw, interval)
                    except (ValueError, KeyError, TypeError) as err:
                        event("warning", "stream", "malformed websocket frame skipped",
                              {"error": str(err)[:200]})
                        continue
                    if bar is not None:
                        await queue.put(bar)
                    if stop.is_set():
                        return
        except asyncio.CancelledError:
            raise
        except (TimeoutError, OSError, websockets.exceptions.WebSocketException) as err:
            if stop.is_set():
                return
            event("warning", "stream", f"websocket lost ({type(err).__name__}); reconnecting",
                  {"error": str(err)[:200], "retry_in_s": delay})
        if stop.is_set():
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)
