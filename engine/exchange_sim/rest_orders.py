"""REST handlers for orders: new (plain and algo), query, cancel, open and all orders, trades."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.exchange_sim import errors as E
from engine.exchange_sim import shapes as S
from engine.exchange_sim.order import ALGO_ONLY, CONDITIONAL, PLAIN_TYPES, TIME_IN_FORCE, Order
from engine.exchange_sim.rest_params import (
    NAN,
    Ctx,
    bool_param,
    decimal_param,
    int_param,
    symbol_param,
)

_CID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
ALGO_CONDITIONAL_ONLY = ("STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET")


def _type_param(ctx: Ctx, *, algo: bool) -> str:
    """The order type: on /fapi/v1/order the conditional types get -4120 (Binance, since
    2025-12-09); on /fapi/v1/algoOrder only STOP_MARKET / TAKE_PROFIT_MARKET are simulated."""
    type_ = ctx.params.get("type")
    if not type_:
        raise E.mandatory("type")
    if algo:
        if type_ in CONDITIONAL:
            return type_
        if type_ in ALGO_CONDITIONAL_ONLY:
            raise E.BinanceError(-1116, f"Invalid orderType. The simulator does not support {type_} orders.")
        raise E.bad_order_type()
    if type_ in ALGO_ONLY:
        raise E.algo_endpoint_required()
    if type_ not in PLAIN_TYPES:
        raise E.bad_order_type()
    return type_


def _tif_param(ctx: Ctx, type_: str) -> str:
    p = ctx.params
    if type_ == "LIMIT" and "timeInForce" not in p:
        raise E.mandatory("timeInForce")
    tif = p.get("timeInForce", "GTC") or "GTC"
    if tif not in TIME_IN_FORCE:
        if tif in ("GTD", "GTE_GTC"):
            raise E.BinanceError(-1115, f"Invalid timeInForce. The simulator does not support {tif}.")
        raise E.bad_tif()
    return tif


def _client_id(ctx: Ctx, *, algo: bool) -> str:
    ex = ctx.server.exchange
    key = "clientAlgoId" if algo else "newClientOrderId"
    cid = ctx.params.get(key) or ("sim" + secrets.token_hex(10))
    if not _CID_RE.match(cid):
        raise E.illegal(key)
    if any(o.client_id == cid for o in (ex.open_algo if algo else ex.open_plain).values()):
        raise E.BinanceError(-4116, "ClientOrderId is duplicated.")
    return cid


def _side_and_flags(ctx: Ctx) -> tuple[str, str, bool, bool]:
    """(side, positionSide, closePosition, reduceOnly), each checked."""
    p = ctx.params
    side = p.get("side")
    if not side:
        raise E.mandatory("side")
    if side not in ("BUY", "SELL"):
        raise E.bad_side()
    position_side = p.get("positionSide", "BOTH") or "BOTH"
    if position_side not in ("BOTH", "LONG", "SHORT"):
        raise E.illegal("positionSide")
    close_position = bool_param(ctx, "closePosition")
    reduce_only = bool_param(ctx, "reduceOnly")
    if close_position and reduce_only:
        raise E.not_required("reduceOnly")
    if close_position and p.get("quantity"):
        raise E.not_required("quantity")
    return side, position_side, close_position, reduce_only


def _order_common(ctx: Ctx, *, algo: bool) -> Order:
    ex = ctx.server.exchange
    s = symbol_param(ctx)
    assert s is not None
    spec = ex.specs[s]
    type_ = _type_param(ctx, algo=algo)
    side, position_side, close_position, reduce_only = _side_and_flags(ctx)
    qty = NAN if close_position else decimal_param(ctx, "quantity", spec.qty_precision, required=True)
    tif = _tif_param(ctx, type_)
    price = NAN
    if type_ == "LIMIT":
        price = decimal_param(ctx, "price", spec.price_precision, required=True)
    elif ctx.params.get("price"):
        raise E.not_required("price")
    stop = NAN
    if algo:
        stop = decimal_param(ctx, "triggerPrice", spec.price_precision, required=True)
        if stop <= 0:
            raise E.BinanceError(-4006, "Stop price less than zero.")
        if abs(round(stop / spec.tick_size) * spec.tick_size - stop) > 1e-9 * max(1.0, stop):
            raise E.price_not_tick()
    elif ctx.params.get("stopPrice"):
        raise E.not_required("stopPrice")
    working = ctx.params.get("workingType", "CONTRACT_PRICE") or "CONTRACT_PRICE"
    if working not in ("CONTRACT_PRICE", "MARK_PRICE"):
        raise E.illegal("workingType")
    return Order(
        order_id=0 if algo else next(ex._oid), client_id=_client_id(ctx, algo=algo), symbol=s,
        side=side, position_side=position_side, type=type_, tif=tif, qty=qty, price=price,
        stop_price=stop, reduce_only=reduce_only, close_position=close_position,
        working_type=working, time=ctx.now_ms, update_time=ctx.now_ms,
        algo_id=next(ex._aid) if algo else None, price_protect=bool_param(ctx, "priceProtect"),
    )


def new_order(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    o = _order_common(ctx, algo=False)
    resp_type = ctx.params.get("newOrderRespType", "ACK")
    if resp_type not in ("ACK", "RESULT"):
        raise E.illegal("newOrderRespType")
    ex.new_order(o)
    out = S.order_json(ex, o)
    if resp_type == "ACK":
        ack = replace(o, status="NEW", executed=0.0, cum_quote=0.0, update_time=o.time)
        out = S.order_json(ex, ack)
    return out


def new_algo_order(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    if ctx.params.get("algoType") != "CONDITIONAL":
        raise E.mandatory("algoType") if not ctx.params.get("algoType") else E.illegal("algoType")
    o = _order_common(ctx, algo=True)
    ex.new_order(o)
    return S.algo_json(ex, o, placed=True)


def _find(ctx: Ctx, *, algo: bool, missing: Callable[[], E.BinanceError]) -> Order:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=not algo)
    id_key, cid_key = ("algoId", "clientAlgoId") if algo else ("orderId", "origClientOrderId")
    oid = int_param(ctx, id_key)
    cid = ctx.params.get(cid_key)
    if oid is None and not cid:
        raise E.BinanceError(-1102, f"Param '{cid_key}' or '{id_key}' must be sent, but both were empty/null!")
    book = ex.algo if algo else ex.orders
    o = book.get(oid) if oid is not None else next((x for x in reversed(list(book.values())) if x.client_id == cid), None)
    if o is None or (s is not None and o.symbol != s) or (oid is not None and cid and o.client_id != cid):
        raise missing()
    return o


def get_order(ctx: Ctx) -> Any:
    return S.order_json(ctx.server.exchange, _find(ctx, algo=False, missing=E.no_such_order))


def get_open_order(ctx: Ctx) -> Any:
    """``GET /fapi/v1/openOrder``: an open order; a filled or canceled one is -2013."""
    o = _find(ctx, algo=False, missing=E.no_such_order)
    if not o.is_open:
        raise E.no_such_order()
    return S.order_json(ctx.server.exchange, o)


def cancel_order(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    o = _find(ctx, algo=False, missing=E.cancel_rejected)
    return S.order_json(ex, ex.cancel(o, ctx.now_ms))


def get_algo_order(ctx: Ctx) -> Any:
    return S.algo_json(ctx.server.exchange, _find(ctx, algo=True, missing=E.no_such_order))


def cancel_algo_order(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    o = _find(ctx, algo=True, missing=E.cancel_rejected)
    ex.cancel(o, ctx.now_ms)
    return {"algoId": o.algo_id, "clientAlgoId": o.client_id, "code": "200", "msg": "success"}


def open_orders(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    return [S.order_json(ex, o) for o in ex.open_orders(symbol_param(ctx, required=False), algo=False)]


def open_algo_orders(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    return [S.algo_json(ex, o) for o in ex.open_orders(symbol_param(ctx, required=False), algo=True)]


def _history(ctx: Ctx, *, algo: bool) -> list[Order]:
    ex = ctx.server.exchange
    s = symbol_param(ctx)
    limit = int_param(ctx, "limit", 500, lo=1, hi=1000)
    assert limit is not None
    start, end = int_param(ctx, "startTime"), int_param(ctx, "endTime")
    from_id = int_param(ctx, "algoId" if algo else "orderId")
    rows = []
    for key, o in (ex.algo if algo else ex.orders).items():
        if o.symbol != s or (from_id is not None and key < from_id):
            continue
        if (start is not None and o.time < start) or (end is not None and o.time > end):
            continue
        rows.append(o)
    return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]


def all_orders(ctx: Ctx) -> Any:
    return [S.order_json(ctx.server.exchange, o) for o in _history(ctx, algo=False)]


def all_algo_orders(ctx: Ctx) -> Any:
    return [S.algo_json(ctx.server.exchange, o) for o in _history(ctx, algo=True)]


def cancel_all(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx)
    for o in ex.open_orders(s, algo=False):
        ex.cancel(o, ctx.now_ms)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def cancel_all_algo(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx)
    for o in ex.open_orders(s, algo=True):
        ex.cancel(o, ctx.now_ms)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def user_trades(ctx: Ctx) -> Any:
    """``GET /fapi/v1/userTrades``: the symbol's fills, oldest first (``orderId``,
    ``startTime``/``endTime``, ``fromId`` and ``limit`` as Binance takes them)."""
    ex = ctx.server.exchange
    s = symbol_param(ctx)
    assert s is not None
    limit = int_param(ctx, "limit", 500, lo=1, hi=1000)
    oid, from_id = int_param(ctx, "orderId"), int_param(ctx, "fromId")
    start, end = int_param(ctx, "startTime"), int_param(ctx, "endTime")
    assert limit is not None
    spec = ex.specs[s]
    out = []
    for f in ex.fills:
        if f["symbol"] != s or (oid is not None and f.get("order_id") != oid):
            continue
        if (from_id is not None and f["trade_id"] < from_id) or (start is not None and f["time"] < start):
            continue
        if end is not None and f["time"] > end:
            continue
        out.append({
            "buyer": f["side"] > 0, "commission": S.money(f["fee"]), "commissionAsset": "USDT",
            "id": f["trade_id"], "maker": bool(f.get("maker", False)), "orderId": f.get("order_id", 0),
            "price": S.px(spec, f["price"]), "qty": S.qty(spec, f["qty"]),
            "quoteQty": S.money(f["qty"] * f["price"]), "realizedPnl": S.money(f["realized"]),
            "side": "BUY" if f["side"] > 0 else "SELL", "positionSide": "BOTH", "symbol": s,
            "marginAsset": "USDT", "time": f["time"],
        })
    return out[:limit] if (from_id is not None or start is not None) else out[-limit:]
