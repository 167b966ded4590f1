"""The venue's answers as small frozen typed records, decoded at the edge.

Nothing above :mod:`engine.binance` sees Binance's or ccxt's JSON: a closed kline is a
:class:`Bar`, the account a :class:`AccountView`, an order's state an :class:`OrderResult`,
and what to send an :class:`OrderRequest`. A refused order is
:class:`engine.binance.errors.OrderRejected`.

>>> bar_from_kline("BTCUSDT", [1704067200000, "42283.6", "42337.0", "42261.0", "42320.0", "101.5",
...                            1704067499999, "0", 0, "0", "0", "0"])
Bar(symbol='BTCUSDT', open_time=1704067200000, open=42283.6, high=42337.0, low=42261.0, close=42320.0, volume=101.5)
>>> order_from_binance({"orderId": 7, "clientOrderId": "c1", "status": "NEW", "executedQty": "0",
...                     "avgPrice": "0.00", "updateTime": 1704067500000}).status
'open'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TRIGGER_KINDS = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
ORDER_KINDS = ("market", "limit", *TRIGGER_KINDS)
# Binance order status -> ccxt's unified status (the one OrderResult.status carries)
STATUS = {
    "NEW": "open", "PARTIALLY_FILLED": "open", "FILLED": "closed", "CANCELED": "canceled",
    "REJECTED": "rejected", "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired",
}
FINAL = ("closed", "canceled", "rejected", "expired")


@dataclass(frozen=True)
class Bar:
    """One closed bar of one symbol (times UTC ms, prices as floats)."""

    symbol: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class AccountView:
    """What the exchange says about the account (per symbol, in the client's symbol order)."""

    wallet: float
    qty: np.ndarray
    entry_price: np.ndarray
    margin: np.ndarray


@dataclass(frozen=True)
class OrderResult:
    """A placed order as the exchange reports it (status in ccxt's words: open, closed,
    canceled, rejected, expired)."""

    client_order_id: str
    exchange_order_id: str
    status: str
    filled: float
    average: float
    time_ms: int
    update_ms: int = 0  # the last change (a triggered stop: when it filled)


@dataclass(frozen=True)
class OrderRequest:
    """One order to send, for every kind the client sends.

    ``kind``: ``market``, ``limit`` (GTC at ``price``) or a trigger order ``STOP_MARKET`` /
    ``TAKE_PROFIT_MARKET`` at ``stop_price`` (already formatted to the tick) with
    ``closePosition=true``. ``client_order_id`` is the caller's, derived from the decision,
    so a resend is recognised.
    """

    symbol: str
    side: str  # "buy" | "sell"
    kind: str
    client_order_id: str
    qty: float = 0.0
    price: float | None = None
    stop_price: str | None = None
    reduce_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ORDER_KINDS:
            raise ValueError(f"order kind must be one of {ORDER_KINDS}, got {self.kind!r}")
        if self.side not in ("buy", "sell"):
            raise ValueError(f"order side must be buy or sell, got {self.side!r}")
        if self.kind == "limit" and self.price is None:
            raise ValueError("a limit order needs a price")
        if self.kind in TRIGGER_KINDS and not self.stop_price:
            raise ValueError(f"a {self.kind} order needs a stop_price")

    @property
    def trigger(self) -> bool:
        return self.kind in TRIGGER_KINDS

    def describe(self) -> str:
        """``BTCUSDT buy 0.01 market`` / ``BTCUSDT sell STOP_MARKET at 41000.0``, for messages."""
        if self.trigger:
            return f"{self.symbol} {self.side} {self.kind} at {self.stop_price}"
        return f"{self.symbol} {self.side} {self.qty:g} {self.kind}"


def bar_from_kline(symbol: str, row: Sequence[Any]) -> Bar:
    """A Binance kline row (``[open_time, open, high, low, close, volume, ...]``) as a Bar."""
    return Bar(symbol, int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]),
               float(row[5]))


def account_from_binance(acc: Mapping[str, Any], symbols: Sequence[str]) -> AccountView:
    """``GET /fapi/v2/account`` as an AccountView over ``symbols`` (one-way positions only);
    margin is the isolated wallet for an isolated position, else its initial margin."""
    wallet = next(float(a["walletBalance"]) for a in acc["assets"] if a["asset"] == "USDT")
    n = len(symbols)
    qty, entry, margin = np.zeros(n), np.zeros(n), np.zeros(n)
    index = {s: j for j, s in enumerate(symbols)}
    for p in acc["positions"]:
        j = index.get(p["symbol"])
        if j is None or p.get("positionSide", "BOTH") != "BOTH":
            continue
        qty[j] = float(p["positionAmt"])
        entry[j] = float(p.get("entryPrice") or 0.0)
        iso = p.get("isolated") in (True, "true")
        margin[j] = float(p["isolatedWallet"] if iso else p["initialMargin"])
    return AccountView(wallet=wallet, qty=qty, entry_price=entry, margin=margin)


def order_from_ccxt(o: Mapping[str, Any], cid: str) -> OrderResult:
    """A ccxt unified order (``create_order``/``fetch_order``) as an OrderResult."""
    info = o.get("info") or {}
    t = o.get("timestamp") or o.get("lastTradeTimestamp") or info.get("updateTime") or 0
    return OrderResult(
        client_order_id=str(o.get("clientOrderId") or cid),
        exchange_order_id=str(o.get("id")),
        status=str(o.get("status") or ""),
        filled=float(o.get("filled") or 0.0),
        average=float(o.get("average") or o.get("price") or float("nan")),
        time_ms=int(t),
        update_ms=int(info.get("updateTime") or o.get("lastUpdateTimestamp") or t or 0),
    )


def order_from_binance(o: Mapping[str, Any], cid: str = "") -> OrderResult:
    """Binance's raw order JSON (``POST /fapi/v1/order``'s answer) as an OrderResult."""
    filled = float(o.get("executedQty") or 0.0)
    avg = float(o.get("avgPrice") or 0.0)
    t = int(o.get("updateTime") or o.get("time") or 0)
    return OrderResult(
        client_order_id=str(o.get("clientOrderId") or cid),
        exchange_order_id=str(o.get("orderId")),
        status=STATUS.get(str(o.get("status")), str(o.get("status") or "").lower()),
        filled=filled,
        average=avg if filled > 0 and avg > 0 else float("nan"),
        time_ms=t,
        update_ms=t,
    )


#: an algo (conditional) order's status -> ccxt's words; TRIGGERED/FINISHED are decided by
#: the order the trigger created (:func:`order_from_algo`)
ALGO_STATUS = {"NEW": "open", "CANCELED": "canceled", "EXPIRED": "expired", "REJECTED": "rejected"}


def order_from_algo(a: Mapping[str, Any], actual: Mapping[str, Any] | None,
                    cid: str = "") -> OrderResult:
    """An algo order (``GET /fapi/v1/algoOrder``) as an OrderResult, with ``actual`` the
    order its trigger created (``GET /fapi/v1/order?orderId=<actualOrderId>``), if any.

    Since 2025-12-09 Binance keeps stop and take-profit orders as algo orders: ``NEW`` until
    the trigger price is reached, then ``TRIGGERED`` (a market order, ``actualOrderId``, is
    sent) and ``FINISHED``. The fill (quantity, average price, time) is the actual order's;
    the exchange id stays the algo id.

    >>> order_from_algo({"algoId": 9, "clientAlgoId": "s1", "algoStatus": "NEW",
    ...                  "createTime": 5, "updateTime": 5}, None).status
    'open'
    >>> r = order_from_algo({"algoId": 9, "clientAlgoId": "s1", "algoStatus": "FINISHED",
    ...                      "createTime": 5, "updateTime": 8, "actualOrderId": "77"},
    ...                     {"orderId": 77, "status": "FILLED", "executedQty": "0.010",
    ...                      "avgPrice": "42000.10", "updateTime": 7})
    >>> r.status, r.filled, r.average, r.update_ms, r.exchange_order_id
    ('closed', 0.01, 42000.1, 7, '9')
    """
    status = str(a.get("algoStatus") or "")
    created = int(a.get("createTime") or 0)
    updated = int(a.get("updateTime") or created)
    base = OrderResult(client_order_id=str(a.get("clientAlgoId") or cid),
                       exchange_order_id=str(a.get("algoId")), status=ALGO_STATUS.get(status, "open"),
                       filled=0.0, average=float("nan"), time_ms=created, update_ms=updated)
    if actual is None or status not in ("TRIGGERED", "FINISHED"):
        return base
    child = order_from_binance(actual)
    return OrderResult(client_order_id=base.client_order_id,
                       exchange_order_id=base.exchange_order_id, status=child.status,
                       filled=child.filled, average=child.average, time_ms=created,
                       update_ms=child.update_ms or updated)
