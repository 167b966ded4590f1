"""Names and ids both modes write: actions, risk reasons, order legs and types, client ids.

Client order ids follow invariant 7: :func:`client_order_id` is a pure function of
(run, symbol, bar open time, leg), so live mode, given the same run and bar, derives the
same id as a backtest would, and a retry can never double an order.
"""

from __future__ import annotations

import hashlib

from engine.sim.enums import FillKind, OrderType, Reason, names

LEG = {
    FillKind.ENTRY: "entry",
    FillKind.EXIT: "exit",
    FillKind.STOP: "stop",
    FillKind.TARGET: "target",
    FillKind.LIQUIDATION: "liquidation",
    FillKind.END: "end",
}
EXIT_REASON = {
    FillKind.ENTRY: "signal",
    FillKind.EXIT: "signal",
    FillKind.STOP: "stop",
    FillKind.TARGET: "target",
    FillKind.LIQUIDATION: "liquidation",
    FillKind.END: "end",
}
ORDER_TYPE = {
    OrderType.MARKET: "market",
    OrderType.LIMIT: "limit",
    OrderType.STOP_MARKET: "stop_market",
    OrderType.TAKE_PROFIT_MARKET: "take_profit_market",
    OrderType.LIQUIDATION: "liquidation",
}
REASON = names(Reason)
ACTION = {1: "long", -1: "short", 0: "flat"}


def client_order_id(run_id: str, symbol: str, open_time: int, leg: str) -> str:
    """Deterministic Binance-valid client order id (<= 36 chars of ``[A-Za-z0-9_-]``).

    ``open_time`` is the open time of the bar whose close made the decision (for stop,
    target and liquidation legs: the bar that triggered them).

    >>> client_order_id("r1", "BTCUSDT", 1704067200000, "entry")
    'e-f62163c3baa17738f12bbe3fb8b35869'
    """
    digest = hashlib.sha256(f"{run_id}|{symbol}|{int(open_time)}|{leg}".encode()).hexdigest()
    return f"e-{digest[:32]}"
