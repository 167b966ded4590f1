"""Tickers from the replayed bars: the 24-hour rolling statistics (``GET /fapi/v1/ticker/24hr``,
``<symbol>@ticker`` / ``@miniTicker`` on ``/market``) and the book ticker
(``GET /fapi/v1/ticker/bookTicker``, ``<symbol>@bookTicker`` on ``/public``).

The simulator has no order book. Its book ticker is the replayed bar's last price on both
sides (the price a market order fills at, before slippage) with quantity 0. The 24-hour
window is the bars that opened in the 24 hours up to the market clock, the bar in progress
as far as it went; the volumes and trade count the store lacks (quote volume, trades) are 0,
and so is ``weightedAvgPrice`` then (it is quote volume over volume).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.exchange_sim.exchange import Exchange
from engine.exchange_sim.shapes import fnum, px, qty

DAY_MS = 86_400_000


def _window(ex: Exchange, s: str, now_ms: int) -> dict[str, float]:
    """o, h, l, c, v, q, n of the 24 hours up to ``now_ms`` (bars since ``now - 24h``)."""
    sb = ex.market.bars[s]
    j, k = ex.now_bar()
    cur = ex.row(s, j) if j < ex.n_bars else -1
    upto = cur if cur >= 0 else int(np.searchsorted(sb.open_time, now_ms, side="right"))
    lo = int(np.searchsorted(sb.open_time, now_ms - DAY_MS, side="left"))
    lo = min(lo, max(upto - 1, 0))
    o = float(sb.o[lo]) if upto > lo else ex.last[s]
    hs, ls, vs = list(sb.h[lo:upto]), list(sb.l[lo:upto]), float(sb.v[lo:upto].sum())
    qv = float(sb.extra["quote_volume"][lo:upto].sum()) if "quote_volume" in sb.extra else 0.0
    n = float(sb.extra["trades"][lo:upto].sum()) if "trades" in sb.extra else 0.0
    if cur >= 0:
        _, ph, pl, _, pv, f = ex.market.partial(s, cur, k)
        if f > 0:
            hs.append(ph)
            ls.append(pl)
            vs += pv
            qv += float(sb.extra["quote_volume"][cur]) * f if "quote_volume" in sb.extra else 0.0
            n += float(sb.extra["trades"][cur]) * f if "trades" in sb.extra else 0.0
    c = ex.last[s]
    return {"o": o, "h": max([*hs, c]), "l": min([*ls, c]), "c": c, "v": vs, "q": qv, "n": n}


def ticker_24hr(ex: Exchange, s: str, now_ms: int) -> dict[str, Any]:
    """``GET /fapi/v1/ticker/24hr`` of one symbol (Ticker24hrPriceChangeStatisticsResponse1)."""
    spec = ex.specs[s]
    w = _window(ex, s, now_ms)
    change = w["c"] - w["o"]
    return {
        "symbol": s, "priceChange": px(spec, change),
        "priceChangePercent": fnum(100.0 * change / w["o"] if w["o"] else 0.0, 3),
        "weightedAvgPrice": px(spec, w["q"] / w["v"] if w["v"] and w["q"] else 0.0),
        "lastPrice": px(spec, w["c"]), "lastQty": qty(spec, 0.0), "openPrice": px(spec, w["o"]),
        "highPrice": px(spec, w["h"]), "lowPrice": px(spec, w["l"]), "volume": qty(spec, w["v"]),
        "quoteVolume": fnum(w["q"], 2), "openTime": now_ms - DAY_MS, "closeTime": now_ms,
        "firstId": -1, "lastId": -1, "count": int(round(w["n"])),
    }


def ticker_ws(ex: Exchange, s: str, event_ms: int) -> dict[str, Any]:
    """``<symbol>@ticker``: the same statistics as a ``24hrTicker`` event."""
    t = ticker_24hr(ex, s, event_ms)
    return {
        "e": "24hrTicker", "E": event_ms, "s": s, "p": t["priceChange"], "P": t["priceChangePercent"],
        "w": t["weightedAvgPrice"], "c": t["lastPrice"], "Q": t["lastQty"], "o": t["openPrice"],
        "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
        "O": t["openTime"], "C": t["closeTime"], "F": -1, "L": -1, "n": t["count"],
    }


def mini_ticker_ws(ex: Exchange, s: str, event_ms: int) -> dict[str, Any]:
    """``<symbol>@miniTicker``: a ``24hrMiniTicker`` event."""
    t = ticker_24hr(ex, s, event_ms)
    return {
        "e": "24hrMiniTicker", "E": event_ms, "s": s, "c": t["lastPrice"], "o": t["openPrice"],
        "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
    }


def book_ticker(ex: Exchange, s: str, now_ms: int) -> dict[str, Any]:
    """``GET /fapi/v1/ticker/bookTicker`` of one symbol: the last price both sides, qty 0."""
    spec = ex.specs[s]
    p = px(spec, ex.last[s])
    zero = qty(spec, 0.0)
    return {"symbol": s, "bidPrice": p, "bidQty": zero, "askPrice": p, "askQty": zero, "time": now_ms}


def book_ticker_ws(ex: Exchange, s: str, event_ms: int, update_id: int) -> dict[str, Any]:
    """``<symbol>@bookTicker`` on ``/public``: a ``bookTicker`` event."""
    b = book_ticker(ex, s, event_ms)
    return {
        "e": "bookTicker", "u": update_id, "E": event_ms, "T": event_ms, "s": s,
        "b": b["bidPrice"], "B": b["bidQty"], "a": b["askPrice"], "A": b["askQty"],
    }
