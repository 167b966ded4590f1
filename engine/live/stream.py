"""The kline websocket: ``<symbol>@kline_<interval>`` on a combined stream, closed bars only.

:func:`kline_stream` connects to ``{ws_url}/market/stream?streams=a@kline_5m/b@kline_5m``,
decodes each frame at the edge (:func:`decode`) and reconnects with backoff when the
connection drops. It puts on the queue a :class:`engine.binance.records.Bar` (a closed bar
whose every field is possible), a :class:`Rejected` (a frame that is not: it never reaches the
indicators; the feed counts it and takes the bar from REST) or a :class:`Connected` marker
(after every connect), so the runner backfills missed bars through REST before it acts on
the next frame. Frames that are not closed klines (updates with ``x: false``, other events,
subscription answers) are dropped silently: they carry no bar.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.binance.records import Bar

#: frames larger than this are rejected unread (a kline frame is ~400 bytes)
MAX_FRAME_BYTES = 64 * 1024


@dataclass(frozen=True)
class Connected:
    """The stream (re)connected; ``n`` counts connections (1 = the first)."""

    n: int


@dataclass(frozen=True)
class Opened:
    """A kline of a bar still open (``"x": false``): the venue sends them several times a
    second, so one proves that the bars before ``open_time`` have closed (the feed then
    fetches a closed kline that never came through REST, after its grace period)."""

    symbol: str
    open_time: int


@dataclass(frozen=True)
class Rejected:
    """A frame that claimed to be a closed bar and is not a possible one.

    ``reason`` names the check it failed (``not_json``, ``shape``, ``oversized``,
    ``symbol``, ``price``, ``range``, ``volume``, ``grid``; the feed adds ``stale`` and
    ``not_closed``); ``symbol``/``open_time`` are what it claimed when they could be read.
    """

    reason: str
    symbol: str | None = None
    open_time: int | None = None
    detail: str = ""


def stream_url(ws_url: str, symbols: tuple[str, ...], interval: str) -> str:
    """The combined-stream URL for the symbols' kline streams on the venue's ``/market``
    path (Binance moved market streams there on 2026-04-23; the legacy ``/stream`` is retired).

    >>> stream_url("ws://127.0.0.1:9", ("BTCUSDT",), "5m")
    'ws://127.0.0.1:9/market/stream?streams=btcusdt@kline_5m'
    """
    names = "/".join(f"{s.lower()}@kline_{interval}" for s in symbols)
    return f"{ws_url.rstrip('/')}/market/stream?streams={names}"


def decode(raw: str | bytes, interval: str, step_ms: int,
           symbols: tuple[str, ...]) -> Bar | Opened | Rejected | None:
    """A closed bar from one combined-stream frame, a :class:`Rejected`, an :class:`Opened`
    for a subscribed symbol's kline still open (on the interval's grid), or None for a frame
    that carries neither (an open kline that is not one of ours is ignored, as before).

    >>> ok = ('{"stream":"btcusdt@kline_5m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":'
    ...       '{"t":300000,"s":"BTCUSDT","i":"5m","o":"10","h":"12","l":"9","c":"11","v":"3","x":true}}}')
    >>> decode(ok, "5m", 300_000, ("BTCUSDT",))
    Bar(symbol='BTCUSDT', open_time=300000, open=10.0, high=12.0, low=9.0, close=11.0, volume=3.0)
    >>> decode(ok.replace('"l":"9"', '"l":"13"'), "5m", 300_000, ("BTCUSDT",)).reason
    'range'
    >>> decode('{"data":{"e":"kline","k":[]}}', "5m", 300_000, ("BTCUSDT",)).reason
    'shape'
    """
    import orjson

    if len(raw) > MAX_FRAME_BYTES:
        return Rejected("oversized", detail=f"{len(raw)} bytes")
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return Rejected("not_json", detail=str(err)[:120])
    data = msg.get("data", msg) if isinstance(msg, dict) else None
    if not isinstance(data, dict) or data.get("e") != "kline":
        return None  # not a kline event: a subscription answer, another stream
    k = data.get("k")
    if not isinstance(k, dict):
        return Rejected("shape", detail="'k' is not an object")
    if k.get("x") is False:
        return _opened(k, interval, step_ms, symbols)
    if k.get("x") is not True:
        return Rejected("shape", detail="'x' is not a boolean")
    return _closed_bar(k, interval, step_ms, symbols)


def _opened(k: dict[str, Any], interval: str, step_ms: int,
            symbols: tuple[str, ...]) -> Opened | None:
    sym = k.get("s")
    t = k.get("t")
    if not isinstance(sym, str) or type(t) is not int or k.get("i") != interval or t % step_ms:
        return None
    sym = sym.upper()
    return Opened(sym, t) if sym in symbols else None


def _closed_bar(k: dict[str, Any], interval: str, step_ms: int,
                symbols: tuple[str, ...]) -> Bar | Rejected:
    sym = k.get("s")
    t = k.get("t")
    if not isinstance(sym, str) or not isinstance(t, int) or isinstance(t, bool):
        return Rejected("shape", detail="'s' or 't' missing or of the wrong type")
    sym = sym.upper()
    if sym not in symbols or k.get("i") != interval:
        return Rejected("symbol", sym, t, f"{sym} {k.get('i')!r} is not subscribed")
    try:
        o, h, low, c, v = (float(k[f]) for f in ("o", "h", "l", "c", "v"))
    except (KeyError, TypeError, ValueError):
        return Rejected("shape", sym, t, "a price or the volume is missing or not a number")
    if not all(math.isfinite(x) and x > 0 for x in (o, h, low, c)):
        return Rejected("price", sym, t, "a price is NaN, infinite, zero or negative")
    if not (low <= min(o, c) and h >= max(o, c) and low <= h):
        return Rejected("range", sym, t, "high/low do not enclose open and close")
    if not (math.isfinite(v) and v >= 0):
        return Rejected("volume", sym, t, "volume is negative or not finite")
    if t % step_ms:
        return Rejected("grid", sym, t, f"open time is not on the {interval} grid")
    return Bar(sym, t, o, h, low, c, v)


async def kline_stream(
    url: str,
    decode_frame: Callable[[str | bytes], Bar | Opened | Rejected | None],
    queue: asyncio.Queue[Any],
    *,
    stop: asyncio.Event,
    event: Callable[[str, str, str, dict[str, Any]], None],
    on_down: Callable[[bool], None] = lambda down: None,
    backoff_s: float = 0.2,
    max_backoff_s: float = 10.0,
) -> None:
    """Read the stream until ``stop`` is set, reconnecting after any drop. Never raises on a
    frame: whatever a frame holds, the reader goes on. ``on_down(True)`` when the connection
    is lost (or the first one fails), ``on_down(False)`` when one is made."""
    import websockets

    n = 0
    delay = backoff_s
    while not stop.is_set():
        try:
            async with websockets.connect(url, open_timeout=10, ping_interval=20, ping_timeout=20,
                                          close_timeout=2, max_size=2**22) as ws:
                n += 1
                delay = backoff_s
                on_down(False)
                if n > 1:
                    event("warning", "stream", "websocket reconnected", {"connection": n})
                await queue.put(Connected(n))
                async for raw in ws:
                    item = decode_frame(raw)
                    if item is not None:
                        await queue.put(item)
                    if stop.is_set():
                        return
        except asyncio.CancelledError:
            raise
        except (TimeoutError, OSError, websockets.exceptions.WebSocketException) as err:
            if stop.is_set():
                return
            on_down(True)
            event("warning", "stream", f"websocket lost ({type(err).__name__}); reconnecting",
                  {"error": str(err)[:200], "retry_in_s": delay})
        if stop.is_set():
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)
