"""REST handlers for market data: time, exchangeInfo, klines, premium index, funding, tickers,
and the two endpoints the store has no data for (depth, open interest)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.exchange_sim import errors as E
from engine.exchange_sim import shapes as S
from engine.exchange_sim import tickers as T
from engine.exchange_sim.rest_params import Ctx, int_param, symbol_param
from engine.timeutil import INTERVALS


def ping(ctx: Ctx) -> Any:
    return {}


def server_time(ctx: Ctx) -> Any:
    """The market clock; the offset to the wall clock it implies is one a client may sign
    with from now on (:mod:`engine.exchange_sim.clock`)."""
    return {"serverTime": ctx.server.clock.serve()}


def exchange_info(ctx: Ctx) -> Any:
    srv = ctx.server
    info = dict(srv.exchange_info)
    info["serverTime"] = srv.clock.serve()
    cfg = srv.config
    info["rateLimits"] = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": cfg.weight_limit},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": cfg.orders_1m},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": cfg.orders_10s},
    ]
    return info


def klines(ctx: Ctx) -> Any:
    """Klines up to the market clock: closed bars, then the bar in progress as far as it went."""
    ex = ctx.server.exchange
    s = symbol_param(ctx)
    assert s is not None
    interval = ctx.params.get("interval")
    if not interval:
        raise E.mandatory("interval")
    if interval not in INTERVALS and interval != "1M":
        raise E.bad_interval()
    if interval != ctx.server.config.interval:
        raise E.BinanceError(
            -1120, f"Invalid interval. The simulator replays {ctx.server.config.interval} klines only."
        )
    limit = int_param(ctx, "limit", 500, lo=1, hi=1500)
    assert limit is not None
    start = int_param(ctx, "startTime")
    end = int_param(ctx, "endTime")
    sb = ex.market.bars[s]
    j, k = ex.now_bar()
    if j < ex.n_bars:
        cur_open = ex.T0 + j * ex.I
        vis = int(np.searchsorted(sb.open_time, cur_open, side="right"))
        cur_row = ex.row(s, j)
    else:
        vis = int(np.searchsorted(sb.open_time, ex.end_ms - 1, side="right"))
        cur_row = -1
    hi = vis
    if end is not None:
        hi = min(hi, int(np.searchsorted(sb.open_time, end, side="right")))
    if start is not None:
        lo = int(np.searchsorted(sb.open_time, start, side="left"))
        hi = min(hi, lo + limit)
    else:
        lo = max(0, hi - limit)
    K = ex.K
    return [S.kline_row(ex, s, i, k if i == cur_row else K) for i in range(lo, hi)]


def premium_index(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)
    if s is None:
        return [S.premium_index(ex, x, ctx.now_ms) for x in ex.symbols]
    return S.premium_index(ex, s, ctx.now_ms)


def funding_rate(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)
    limit = int_param(ctx, "limit", 100, lo=1, hi=1000)
    assert limit is not None
    start = int_param(ctx, "startTime")
    end = int_param(ctx, "endTime")
    rows = []
    for sym in [s] if s else ex.symbols:
        sb = ex.market.bars[sym]
        spec = ex.specs[sym]
        upto = min(ctx.now_ms, end) if end is not None else ctx.now_ms
        for ft, rate in zip(sb.funding_time.tolist(), sb.funding_rate.tolist(), strict=True):
            if ft > upto or (start is not None and ft < start):
                continue
            i = int(np.searchsorted(sb.open_time, ft, side="right")) - 1
            mark = float(sb.o[i]) if i >= 0 and int(sb.open_time[i]) == ft else (float(sb.c[i]) if i >= 0 else 0.0)
            rows.append({"symbol": sym, "fundingTime": ft, "fundingRate": S.fnum(rate, 8), "markPrice": S.fnum(mark, spec.price_precision + 6)})
    rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
    return rows[:limit] if start is not None else rows[-limit:]


def ticker_price(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)

    def one(x: str) -> dict[str, Any]:
        return {"symbol": x, "price": S.px(ex.specs[x], ex.last[x]), "time": ctx.now_ms}

    return one(s) if s else [one(x) for x in ex.symbols]


def _per_symbol(ctx: Ctx, one: Any) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)
    return one(s) if s else [one(x) for x in ex.symbols]


def ticker_24hr(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    return _per_symbol(ctx, lambda s: T.ticker_24hr(ex, s, ctx.now_ms))


def book_ticker(ctx: Ctx) -> Any:
    """The replayed bar's last price on both sides (:mod:`engine.exchange_sim.tickers`)."""
    ex = ctx.server.exchange
    return _per_symbol(ctx, lambda s: T.book_ticker(ex, s, ctx.now_ms))


def depth(ctx: Ctx) -> Any:
    s = symbol_param(ctx)
    assert s is not None
    raise E.no_data("order book (depth snapshots)", s)


def open_interest(ctx: Ctx) -> Any:
    s = symbol_param(ctx)
    assert s is not None
    raise E.no_data("open interest", s)
