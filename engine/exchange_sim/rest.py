"""The REST route table of the exchange simulator: which handler answers each endpoint, its
request weight, whether it needs an API key and a signature, and whether it counts as an
order (reference sections 4 and 5).

Each handler takes the :class:`Ctx` of one request (parsed parameters, the market time) and
returns a JSON-able object or raises :class:`~engine.exchange_sim.errors.BinanceError`; they
live by job in :mod:`.rest_market`, :mod:`.rest_orders` and :mod:`.rest_account`, the
parameter readers in :mod:`.rest_params`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.exchange_sim import rest_account as A
from engine.exchange_sim import rest_market as M
from engine.exchange_sim import rest_orders as O
from engine.exchange_sim.rest_params import Ctx, Handler

__all__ = ["ROUTES", "Ctx", "Route", "dumps"]


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


def w_depth(p: dict[str, str]) -> int:
    """Binance's depth weights: limit 5-50 -> 2, 100 -> 5, 500 -> 10, 1000 -> 20."""
    try:
        limit = int(p.get("limit", "500"))
    except ValueError:
        return 2
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def _routes() -> dict[tuple[str, str], Route]:
    r = Route
    sig = {"key": True, "signed": True}
    return {
        ("GET", "/fapi/v1/ping"): r(M.ping, w(1)),
        ("GET", "/fapi/v1/time"): r(M.server_time, w(1)),
        ("GET", "/fapi/v1/exchangeInfo"): r(M.exchange_info, w(1)),
        ("GET", "/fapi/v1/klines"): r(M.klines, w_klines),
        ("GET", "/fapi/v1/premiumIndex"): r(M.premium_index, w_symbol(1, 10)),
        ("GET", "/fapi/v1/fundingRate"): r(M.funding_rate, w(1)),
        ("GET", "/fapi/v1/ticker/price"): r(M.ticker_price, w_symbol(1, 2)),
        ("GET", "/fapi/v2/ticker/price"): r(M.ticker_price, w_symbol(1, 2)),
        ("GET", "/fapi/v1/ticker/24hr"): r(M.ticker_24hr, w_symbol(1, 40)),
        ("GET", "/fapi/v1/ticker/bookTicker"): r(M.book_ticker, w_symbol(2, 5)),
        ("GET", "/fapi/v1/depth"): r(M.depth, w_depth),
        ("GET", "/fapi/v1/openInterest"): r(M.open_interest, w(1)),
        ("POST", "/fapi/v1/order"): r(O.new_order, w(0), order=True, **sig),
        ("GET", "/fapi/v1/order"): r(O.get_order, w(1), **sig),
        ("GET", "/fapi/v1/openOrder"): r(O.get_open_order, w(1), **sig),
        ("DELETE", "/fapi/v1/order"): r(O.cancel_order, w(1), **sig),
        ("POST", "/fapi/v1/algoOrder"): r(O.new_algo_order, w(0), order=True, **sig),
        ("GET", "/fapi/v1/algoOrder"): r(O.get_algo_order, w(1), **sig),
        ("DELETE", "/fapi/v1/algoOrder"): r(O.cancel_algo_order, w(1), **sig),
        ("GET", "/fapi/v1/openOrders"): r(O.open_orders, w_symbol(1, 40), **sig),
        ("GET", "/fapi/v1/openAlgoOrders"): r(O.open_algo_orders, w_symbol(1, 40), **sig),
        ("GET", "/fapi/v1/allOrders"): r(O.all_orders, w(5), **sig),
        ("GET", "/fapi/v1/allAlgoOrders"): r(O.all_algo_orders, w(5), **sig),
        ("DELETE", "/fapi/v1/allOpenOrders"): r(O.cancel_all, w(1), **sig),
        ("DELETE", "/fapi/v1/algoOpenOrders"): r(O.cancel_all_algo, w(1), **sig),
        ("GET", "/fapi/v1/userTrades"): r(O.user_trades, w(5), **sig),
        ("GET", "/fapi/v2/account"): r(A.account_v2, w(5), **sig),
        ("GET", "/fapi/v3/account"): r(A.account_v3, w(5), **sig),
        ("GET", "/fapi/v2/balance"): r(A.balance, w(5), **sig),
        ("GET", "/fapi/v3/balance"): r(A.balance, w(5), **sig),
        ("GET", "/fapi/v2/positionRisk"): r(A.position_risk_v2, w(5), **sig),
        ("GET", "/fapi/v3/positionRisk"): r(A.position_risk_v3, w(5), **sig),
        ("POST", "/fapi/v1/leverage"): r(A.leverage, w(1), **sig),
        ("POST", "/fapi/v1/marginType"): r(A.margin_type, w(1), **sig),
        ("GET", "/fapi/v1/positionSide/dual"): r(A.dual_get, w(30), **sig),
        ("POST", "/fapi/v1/positionSide/dual"): r(A.dual_post, w(1), **sig),
        ("GET", "/fapi/v1/multiAssetsMargin"): r(A.multi_assets, w(30), **sig),
        ("GET", "/fapi/v1/leverageBracket"): r(A.leverage_bracket, w(1), **sig),
        ("GET", "/fapi/v1/income"): r(A.income, w(30), **sig),
        ("GET", "/fapi/v1/symbolConfig"): r(A.symbol_config, w(5), **sig),
        ("GET", "/fapi/v1/commissionRate"): r(A.commission_rate, w(20), **sig),
        ("POST", "/fapi/v1/listenKey"): r(A.listen_key_new, w(1), key=True),
        ("PUT", "/fapi/v1/listenKey"): r(A.listen_key_keepalive, w(1), key=True),
        ("DELETE", "/fapi/v1/listenKey"): r(A.listen_key_close, w(1), key=True),
    }


ROUTES = _routes()


def dumps(obj: Any) -> str:
    try:
        import orjson

        return orjson.dumps(obj).decode()
    except ImportError:  # pragma: no cover - orjson is a dependency
        return json.dumps(obj, separators=(",", ":"))
