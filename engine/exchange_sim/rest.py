"""REST endpoint handlers: parameters in, Binance's JSON out.

Each handler takes the :class:`Ctx` of one request (parsed parameters, the market time) and
returns a JSON-able object or raises :class:`~engine.exchange_sim.errors.BinanceError`.
The route table at the bottom gives each endpoint its weight, whether it needs an API key,
a signature, and whether it counts as an order (reference sections 4 and 5).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.exchange_sim import errors as E
from engine.exchange_sim import shapes as S
from engine.exchange_sim.exchange import Order
from engine.timeutil import INTERVALS

if TYPE_CHECKING:
    from engine.exchange_sim.server import SimServer

NAN = float("nan")
_CID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


@dataclass
class Ctx:
    server: SimServer
    params: dict[str, str]
    now_ms: int  # market clock
    api_key: str | None


Handler = Callable[[Ctx], Any]


@dataclass(frozen=True)
class Route:
    handler: Handler
    weight: Callable[[dict[str, str]], int]
    key: bool = False  # needs X-MBX-APIKEY
    signed: bool = False  # needs timestamp + signature
    order: bool = False  # counts on X-MBX-ORDER-COUNT-*


def w(n: int) -> Callable[[dict[str, str]], int]:
    return lambda p: n


def w_symbol(with_symbol: int, without: int) -> Callable[[dict[str, str]], int]:
    return lambda p: with_symbol if p.get("symbol") else without


def w_klines(p: dict[str, str]) -> int:
    try:
        limit = int(p.get("limit", "500"))
    except ValueError:
        return 1
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


# ---------------------------------------------------------------------- parameter helpers
def _symbol(ctx: Ctx, *, required: bool = True) -> str | None:
    s = ctx.params.get("symbol")
    if not s:
        if required:
            raise E.mandatory("symbol")
        return None
    if s not in ctx.server.exchange.specs or s not in ctx.server.exchange.market.bars:
        raise E.bad_symbol()
    return s


def _int(ctx: Ctx, name: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None) -> int | None:
    raw = ctx.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise E.illegal(name) from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise E.illegal(name)
    return v


def _bool(ctx: Ctx, name: str, default: bool = False) -> bool:
    raw = ctx.params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false"):
        raise E.illegal(name)
    return raw.lower() == "true"


def _decimal(ctx: Ctx, name: str, decimals: int, *, required: bool) -> float:
    raw = ctx.params.get(name)
    if raw is None or raw == "":
        if required:
            raise E.mandatory(name)
        return NAN
    try:
        d = Decimal(raw)
    except InvalidOperation:
        raise E.illegal(name) from None
    if not d.is_finite():
        raise E.illegal(name)
    exp = d.normalize().as_tuple().exponent
    if isinstance(exp, int) and -exp > decimals:
        raise E.bad_precision()
    return float(d)


# ---------------------------------------------------------------------- market data
def ping(ctx: Ctx) -> Any:
    return {}


def server_time(ctx: Ctx) -> Any:
    return {"serverTime": ctx.now_ms}


def exchange_info(ctx: Ctx) -> Any:
    srv = ctx.server
    info = dict(srv.exchange_info)
    info["serverTime"] = ctx.now_ms
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
    s = _symbol(ctx)
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
    limit = _int(ctx, "limit", 500, lo=1, hi=1500)
    assert limit is not None
    start = _int(ctx, "startTime")
    end = _int(ctx, "endTime")
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
    s = _symbol(ctx, required=False)
    if s is None:
        return [S.premium_index(ex, x, ctx.now_ms) for x in ex.symbols]
    return S.premium_index(ex, s, ctx.now_ms)


def funding_rate(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx, required=False)
    limit = _int(ctx, "limit", 100, lo=1, hi=1000)
    assert limit is not None
    start = _int(ctx, "startTime")
    end = _int(ctx, "endTime")
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
    s = _symbol(ctx, required=False)

    def one(x: str) -> dict[str, Any]:
        return {"symbol": x, "price": S.px(ex.specs[x], ex.last[x]), "time": ctx.now_ms}

    return one(s) if s else [one(x) for x in ex.symbols]


# ---------------------------------------------------------------------- orders
def _order_common(ctx: Ctx, *, algo: bool) -> Order:
    ex = ctx.server.exchange
    s = _symbol(ctx)
    assert s is not None
    spec = ex.specs[s]
    p = ctx.params
    side = p.get("side")
    if not side:
        raise E.mandatory("side")
    if side not in ("BUY", "SELL"):
        raise E.bad_side()
    type_ = p.get("type")
    if not type_:
        raise E.mandatory("type")
    supported = ("STOP_MARKET", "TAKE_PROFIT_MARKET") if algo else ("LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET")
    if type_ not in supported:
        if type_ in ("STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"):
            raise E.BinanceError(-1116, f"Invalid orderType. The simulator does not support {type_} orders.")
        raise E.bad_order_type()
    position_side = p.get("positionSide", "BOTH") or "BOTH"
    if position_side not in ("BOTH", "LONG", "SHORT"):
        raise E.illegal("positionSide")
    close_position = _bool(ctx, "closePosition")
    reduce_only = _bool(ctx, "reduceOnly")
    if close_position and reduce_only:
        raise E.BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
    if close_position and p.get("quantity"):
        raise E.BinanceError(-1106, "Parameter 'quantity' sent when not required.")
    qty = NAN if close_position else _decimal(ctx, "quantity", spec.qty_precision, required=True)
    price = NAN
    tif = p.get("timeInForce", "GTC") or "GTC"
    if type_ == "LIMIT":
        if "timeInForce" not in p:
            raise E.mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK", "GTX"):
            if tif == "GTD":
                raise E.BinanceError(-1115, "Invalid timeInForce. The simulator does not support GTD.")
            raise E.bad_tif()
        price = _decimal(ctx, "price", spec.price_precision, required=True)
    elif p.get("price") and type_ == "MARKET":
        raise E.not_required("price")
    stop = NAN
    if type_ in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
        stop = _decimal(ctx, "triggerPrice" if algo else "stopPrice", spec.price_precision, required=True)
        if stop <= 0:
            raise E.price_le_zero()
        if abs(round(stop / spec.tick_size) * spec.tick_size - stop) > 1e-9 * max(1.0, stop):
            raise E.price_not_tick()
    cid_key = "clientAlgoId" if algo else "newClientOrderId"
    cid = p.get(cid_key) or ("sim" + secrets.token_hex(10))
    if not _CID_RE.match(cid):
        raise E.illegal(cid_key)
    book = ex.algo if algo else ex.orders
    if any(o.client_id == cid and o.is_open for o in book.values()):
        raise E.BinanceError(-4116, "ClientOrderId is duplicated.")
    working = p.get("workingType", "CONTRACT_PRICE") or "CONTRACT_PRICE"
    if working not in ("CONTRACT_PRICE", "MARK_PRICE"):
        raise E.illegal("workingType")
    return Order(
        order_id=0 if algo else next(ex._oid), client_id=cid, symbol=s, side=side, position_side=position_side,
        type=type_, tif=tif, qty=qty, price=price, stop_price=stop, reduce_only=reduce_only,
        close_position=close_position, working_type=working, time=ctx.now_ms, update_time=ctx.now_ms,
        algo_id=next(ex._aid) if algo else None, price_protect=_bool(ctx, "priceProtect"),
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
    return S.algo_json(ex, o)


def _find(ctx: Ctx, *, algo: bool, missing: Callable[[], E.BinanceError]) -> Order:
    ex = ctx.server.exchange
    s = _symbol(ctx, required=not algo)
    id_key, cid_key = ("algoId", "clientAlgoId") if algo else ("orderId", "origClientOrderId")
    oid = _int(ctx, id_key)
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
    return [S.order_json(ex, o) for o in ex.open_orders(_symbol(ctx, required=False), algo=False)]


def open_algo_orders(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    return [S.algo_json(ex, o) for o in ex.open_orders(_symbol(ctx, required=False), algo=True)]


def _history(ctx: Ctx, *, algo: bool) -> list[Order]:
    ex = ctx.server.exchange
    s = _symbol(ctx)
    limit = _int(ctx, "limit", 500, lo=1, hi=1000)
    assert limit is not None
    start, end = _int(ctx, "startTime"), _int(ctx, "endTime")
    from_id = _int(ctx, "algoId" if algo else "orderId")
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
    s = _symbol(ctx)
    for o in ex.open_orders(s, algo=False):
        ex.cancel(o, ctx.now_ms)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def cancel_all_algo(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx)
    for o in ex.open_orders(s, algo=True):
        ex.cancel(o, ctx.now_ms)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def user_trades(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx)
    limit = _int(ctx, "limit", 500, lo=1, hi=1000)
    assert limit is not None
    out = []
    assert s is not None
    spec = ex.specs[s]
    for n, f in enumerate(ex.fills):
        if f["symbol"] != s:
            continue
        out.append(
            {
                "buyer": f["side"] > 0, "commission": S.money(f["fee"]), "commissionAsset": "USDT", "id": n + 1,
                "maker": f.get("type") == "LIMIT", "orderId": f.get("order_id", 0), "price": S.px(spec, f["price"]),
                "qty": S.qty(spec, f["qty"]), "quoteQty": S.money(f["qty"] * f["price"]),
                "realizedPnl": S.money(f["realized"]), "side": "BUY" if f["side"] > 0 else "SELL",
                "positionSide": "BOTH", "symbol": s, "time": f["time"],
            }
        )
    return out[-limit:]


# ---------------------------------------------------------------------- account
def account_v2(ctx: Ctx) -> Any:
    return S.account(ctx.server.exchange, v3=False)


def account_v3(ctx: Ctx) -> Any:
    return S.account(ctx.server.exchange, v3=True)


def balance(ctx: Ctx) -> Any:
    return S.balance(ctx.server.exchange)


def _position_risk(ctx: Ctx, *, v3: bool) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx, required=False)
    out = []
    for sym in [s] if s else ex.symbols:
        if v3 and ex.book.qty(sym) == 0 and not ex.open_orders(sym, algo=False):
            continue
        out.append(S.position_risk(ex, sym, v3=v3))
    return out


def position_risk_v2(ctx: Ctx) -> Any:
    return _position_risk(ctx, v3=False)


def position_risk_v3(ctx: Ctx) -> Any:
    return _position_risk(ctx, v3=True)


def leverage(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx)
    assert s is not None
    lev = _int(ctx, "leverage")
    if lev is None:
        raise E.mandatory("leverage")
    lev, cap = ex.set_leverage(s, lev)
    return {"leverage": lev, "maxNotionalValue": S.fnum(cap, 0), "symbol": s}


def margin_type(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx)
    assert s is not None
    mt = ctx.params.get("marginType")
    if not mt:
        raise E.mandatory("marginType")
    if mt.upper() not in ("ISOLATED", "CROSSED", "CROSS"):
        raise E.illegal("marginType")
    ex.set_margin_type(s, mt.upper() == "ISOLATED")
    return {"code": 200, "msg": "success"}


def dual_get(ctx: Ctx) -> Any:
    return {"dualSidePosition": False}


def dual_post(ctx: Ctx) -> Any:
    raw = ctx.params.get("dualSidePosition")
    if not raw:
        raise E.mandatory("dualSidePosition")
    ctx.server.exchange.set_dual(_bool(ctx, "dualSidePosition"))
    return {"code": 200, "msg": "success"}


def multi_assets(ctx: Ctx) -> Any:
    return {"multiAssetsMargin": False}


def leverage_bracket(ctx: Ctx) -> Any:
    s = _symbol(ctx, required=False)
    rows = [r for r in ctx.server.leverage_brackets if r["symbol"] in ctx.server.exchange.symbols]
    if s:
        rows = [r for r in rows if r["symbol"] == s]
    return rows


def symbol_config(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = _symbol(ctx, required=False)
    out = []
    for sym in [s] if s else ex.symbols:
        out.append(
            {
                "symbol": sym, "marginType": "ISOLATED" if ex.book.isolated[sym] else "CROSSED",
                "isAutoAddMargin": False, "leverage": ex.book.leverage[sym],
                "maxNotionalValue": S.fnum(S._max_notional(ex, sym), 0),
            }
        )
    return out


def commission_rate(ctx: Ctx) -> Any:
    s = _symbol(ctx)
    cfg = ctx.server.config
    return {"symbol": s, "makerCommissionRate": S.fnum(cfg.maker_fee, 6), "takerCommissionRate": S.fnum(cfg.taker_fee, 6)}


def listen_key_new(ctx: Ctx) -> Any:
    return {"listenKey": ctx.server.listen_key()}


def listen_key_keepalive(ctx: Ctx) -> Any:
    key = ctx.server.current_listen_key
    if key is None:
        raise E.listen_key_missing()
    return {"listenKey": key}


def listen_key_close(ctx: Ctx) -> Any:
    ctx.server.close_listen_key()
    return {}


def _routes() -> dict[tuple[str, str], Route]:
    r = Route
    sig = {"key": True, "signed": True}
    return {
        ("GET", "/fapi/v1/ping"): r(ping, w(1)),
        ("GET", "/fapi/v1/time"): r(server_time, w(1)),
        ("GET", "/fapi/v1/exchangeInfo"): r(exchange_info, w(1)),
        ("GET", "/fapi/v1/klines"): r(klines, w_klines),
        ("GET", "/fapi/v1/premiumIndex"): r(premium_index, w_symbol(1, 10)),
        ("GET", "/fapi/v1/fundingRate"): r(funding_rate, w(1)),
        ("GET", "/fapi/v1/ticker/price"): r(ticker_price, w_symbol(1, 2)),
        ("GET", "/fapi/v2/ticker/price"): r(ticker_price, w_symbol(1, 2)),
        ("POST", "/fapi/v1/order"): r(new_order, w(0), order=True, **sig),
        ("GET", "/fapi/v1/order"): r(get_order, w(1), **sig),
        ("DELETE", "/fapi/v1/order"): r(cancel_order, w(1), **sig),
        ("POST", "/fapi/v1/algoOrder"): r(new_algo_order, w(0), order=True, **sig),
        ("GET", "/fapi/v1/algoOrder"): r(get_algo_order, w(1), **sig),
        ("DELETE", "/fapi/v1/algoOrder"): r(cancel_algo_order, w(1), **sig),
        ("GET", "/fapi/v1/openOrders"): r(open_orders, w_symbol(1, 40), **sig),
        ("GET", "/fapi/v1/openAlgoOrders"): r(open_algo_orders, w_symbol(1, 40), **sig),
        ("GET", "/fapi/v1/allOrders"): r(all_orders, w(5), **sig),
        ("GET", "/fapi/v1/allAlgoOrders"): r(all_algo_orders, w(5), **sig),
        ("DELETE", "/fapi/v1/allOpenOrders"): r(cancel_all, w(1), **sig),
        ("DELETE", "/fapi/v1/algoOpenOrders"): r(cancel_all_algo, w(1), **sig),
        ("GET", "/fapi/v1/userTrades"): r(user_trades, w(5), **sig),
        ("GET", "/fapi/v2/account"): r(account_v2, w(5), **sig),
        ("GET", "/fapi/v3/account"): r(account_v3, w(5), **sig),
        ("GET", "/fapi/v2/balance"): r(balance, w(5), **sig),
        ("GET", "/fapi/v3/balance"): r(balance, w(5), **sig),
        ("GET", "/fapi/v2/positionRisk"): r(position_risk_v2, w(5), **sig),
        ("GET", "/fapi/v3/positionRisk"): r(position_risk_v3, w(5), **sig),
        ("POST", "/fapi/v1/leverage"): r(leverage, w(1), **sig),
        ("POST", "/fapi/v1/marginType"): r(margin_type, w(1), **sig),
        ("GET", "/fapi/v1/positionSide/dual"): r(dual_get, w(30), **sig),
        ("POST", "/fapi/v1/positionSide/dual"): r(dual_post, w(1), **sig),
        ("GET", "/fapi/v1/multiAssetsMargin"): r(multi_assets, w(30), **sig),
        ("GET", "/fapi/v1/leverageBracket"): r(leverage_bracket, w(1), **sig),
        ("GET", "/fapi/v1/symbolConfig"): r(symbol_config, w(5), **sig),
        ("GET", "/fapi/v1/commissionRate"): r(commission_rate, w(20), **sig),
        ("POST", "/fapi/v1/listenKey"): r(listen_key_new, w(1), key=True),
        ("PUT", "/fapi/v1/listenKey"): r(listen_key_keepalive, w(1), key=True),
        ("DELETE", "/fapi/v1/listenKey"): r(listen_key_close, w(1), key=True),
    }


ROUTES = _routes()


def dumps(obj: Any) -> str:
    try:
        import orjson

        return orjson.dumps(obj).decode()
    except ImportError:  # pragma: no cover - orjson is a dependency
        return json.dumps(obj, separators=(",", ":"))


def is_nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)
