"""User-data stream payloads (``/private``), field for field as the official SDK's models
(``binance-sdk-derivatives-trading-usds-futures`` 18.1.0, ``websocket_streams/models``:
OrderTradeUpdate, AccountUpdate, AlgoUpdate, TradeLite, ListenKeyExpired).

``T`` is when the change happened (transaction time), ``E`` when the event was sent; both
are market time and ``E >= T`` always (the server stamps ``E``).
"""

from __future__ import annotations

from typing import Any

from engine.exchange_sim.exchange import Exchange
from engine.exchange_sim.order import Order
from engine.exchange_sim.shapes import cross_wallet, fnum, money, pos_numbers, px, qty

PLACED = ("TRIGGERED", "FINISHED")


def _side_notional(ex: Exchange, s: str) -> tuple[float, float]:
    """(bid, ask) notional of the open LIMIT orders on ``s`` (Binance's ``b`` / ``a``)."""
    bid = ask = 0.0
    for o in ex.open_orders(s, algo=False):
        n = (o.qty - o.executed) * o.price
        if o.sgn > 0:
            bid += n
        else:
            ask += n
    return bid, ask


def order_update(ex: Exchange, o: Order, exec_type: str, event_ms: int) -> dict[str, Any]:
    """``ORDER_TRADE_UPDATE``: ``x`` NEW / TRADE / CANCELED / EXPIRED of a plain order."""
    spec = ex.specs[o.symbol]
    trade = exec_type == "TRADE"
    bid, ask = _side_notional(ex, o.symbol)
    return {
        "e": "ORDER_TRADE_UPDATE", "E": event_ms, "T": o.update_time,
        "o": {
            "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "f": o.tif, "q": qty(spec, o.qty),
            "p": px(spec, o.price), "ap": fnum(o.avg_price, spec.price_precision + 3), "sp": px(spec, o.stop_price),
            "x": exec_type, "X": o.status, "i": o.order_id,
            "l": qty(spec, o.last_fill_qty if trade else 0.0), "z": qty(spec, o.executed),
            "L": px(spec, o.last_fill_price if trade else 0.0), "N": "USDT",
            "n": money(o.last_fee if trade else 0.0), "T": o.update_time, "t": o.last_trade_id if trade else 0,
            "b": fnum(bid, 8), "a": fnum(ask, 8), "m": o.maker if trade else False, "R": o.reduce_only,
            "wt": o.working_type, "ot": o.type, "ps": o.position_side, "cp": o.close_position,
            "rp": money(o.last_realized if trade else 0.0), "pP": o.price_protect, "si": 0, "ss": 0,
            "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": o.good_till, "er": "0",
        },
    }


def trade_lite(ex: Exchange, o: Order, event_ms: int) -> dict[str, Any]:
    """``TRADE_LITE``: the short fill report Binance sends before the ORDER_TRADE_UPDATE."""
    spec = ex.specs[o.symbol]
    return {
        "e": "TRADE_LITE", "E": event_ms, "T": o.update_time, "s": o.symbol, "q": qty(spec, o.qty),
        "p": px(spec, o.price), "m": o.maker, "c": o.client_id, "S": o.side,
        "L": px(spec, o.last_fill_price), "l": qty(spec, o.last_fill_qty), "t": o.last_trade_id,
        "i": o.order_id,
    }


def algo_update(ex: Exchange, a: Order, event_ms: int) -> dict[str, Any]:
    """``ALGO_UPDATE`` of an algo order (status ``X``; ``ai`` the order its trigger placed,
    ``ap``/``aq``/``act`` that order's average price, filled quantity and type once placed)."""
    spec = ex.specs[a.symbol]
    o: dict[str, Any] = {
        "caid": a.client_id, "aid": a.algo_id, "at": "CONDITIONAL", "o": a.type, "s": a.symbol,
        "S": a.side, "ps": a.position_side, "f": a.tif, "q": qty(spec, 0.0 if a.close_position else a.qty),
        "X": a.algo_status, "ai": str(a.actual_order_id) if a.actual_order_id is not None else "",
        "tp": px(spec, a.stop_price), "p": px(spec, a.price), "V": "EXPIRE_MAKER", "wt": a.working_type,
        "pm": "NONE", "cp": a.close_position, "pP": a.price_protect, "R": a.reduce_only or a.close_position,
        "tt": a.trigger_time, "gtd": a.good_till,
    }
    if a.algo_status in PLACED:
        o.update({"ap": fnum(a.avg_price, spec.price_precision + 3), "aq": qty(spec, a.executed), "act": "MARKET"})
    if a.algo_status == "REJECTED":
        o["rm"] = "ReduceOnly Order is rejected." if (a.reduce_only or a.close_position) else "Margin is insufficient."
    return {"e": "ALGO_UPDATE", "T": a.update_time, "E": event_ms, "o": o}


def account_update(
    ex: Exchange, reason: str, s: str, *, balance_change: float, t: int, event_ms: int
) -> dict[str, Any]:
    """``ACCOUNT_UPDATE``: the USDT balance (``bc``: the change other than PnL and commission,
    the funding fee for reason FUNDING_FEE) and the position of ``s``. A FUNDING_FEE update
    carries no position in cross margin and the isolated position in isolated margin, as
    Binance documents."""
    b = ex.book
    balances = [{"a": "USDT", "wb": money(b.wallet), "cw": money(cross_wallet(ex)), "bc": money(balance_change)}]
    positions = []
    if reason != "FUNDING_FEE" or b.isolated[s]:
        spec = ex.specs[s]
        p = pos_numbers(ex, s)
        positions.append({
            "s": s, "pa": qty(spec, p["qty"]), "ep": fnum(p["entry"], spec.price_precision + 5),
            "bep": fnum(p["entry"], spec.price_precision + 5), "cr": money(b.realized),
            "up": money(p["upnl"]), "mt": "isolated" if b.isolated[s] else "cross",
            "iw": money(p["iso"]), "ps": "BOTH", "ma": "USDT",
        })
    return {"e": "ACCOUNT_UPDATE", "E": event_ms, "T": t, "a": {"m": reason, "B": balances, "P": positions}}


def listen_key_expired(key: str, event_ms: int) -> dict[str, Any]:
    return {"e": "listenKeyExpired", "E": event_ms, "listenKey": key}
