"""JSON shapes of Binance's answers and stream payloads (reference section 5 and 6).

Prices and quantities are strings; ids, times and counts are integers. Prices are written
with the symbol's ``pricePrecision`` decimals, quantities with ``quantityPrecision``, money
(USDT) with 8 decimals, average prices with the price precision plus 3 (Binance writes more
digits there, e.g. ``"23452.70000"``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from engine.exchange_sim.accounting import max_notional
from engine.exchange_sim.exchange import Exchange
from engine.exchange_sim.order import Order

if TYPE_CHECKING:
    from engine.sim.specs import SymbolSpec


def fnum(x: float, decimals: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        x = 0.0
    out = f"{x:.{decimals}f}"
    return "0" + out[2:] if out.startswith("-0") and float(out) == 0 else out


def money(x: float) -> str:
    return fnum(x, 8)


def px(spec: SymbolSpec, x: float) -> str:
    return fnum(x, spec.price_precision)


def qty(spec: SymbolSpec, x: float) -> str:
    return fnum(x, spec.qty_precision)


def order_json(ex: Exchange, o: Order) -> dict[str, Any]:
    """A plain order as ``GET /fapi/v1/order`` answers it (QueryOrderResponse)."""
    spec = ex.specs[o.symbol]
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_id,
        "price": px(spec, o.price),
        "avgPrice": fnum(o.avg_price, spec.price_precision + 3),
        "origQty": qty(spec, o.qty),
        "executedQty": qty(spec, o.executed),
        "cumQty": qty(spec, o.executed),
        "cumQuote": fnum(o.cum_quote, spec.price_precision + spec.qty_precision),
        "timeInForce": o.tif,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": o.side,
        "positionSide": o.position_side,
        "stopPrice": px(spec, o.stop_price),
        "workingType": o.working_type,
        "priceProtect": o.price_protect,
        "origType": o.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": o.good_till,
        "time": o.time,
        "updateTime": o.update_time,
    }


TRIGGERED = ("TRIGGERED", "FINISHED")


def algo_json(ex: Exchange, a: Order, *, placed: bool = False) -> dict[str, Any]:
    """An algo order as ``GET /fapi/v1/algoOrder`` answers it (QueryAlgoOrderResponse), or
    as ``POST`` does (``placed``: NewAlgoOrderResponse, without the ``actual*`` fields).

    A close-position order shows quantity 0 and ``reduceOnly`` true, as Binance reports it.
    ``actualOrderId`` is "" until the trigger placed an order; ``actualPrice`` its average
    fill price ("0" before), ``actualType``/``actualQty`` only once placed / filled."""
    spec = ex.specs[a.symbol]
    out: dict[str, Any] = {
        "algoId": a.algo_id, "clientAlgoId": a.client_id, "algoType": "CONDITIONAL",
        "orderType": a.type, "symbol": a.symbol, "side": a.side, "positionSide": a.position_side,
        "timeInForce": a.tif, "quantity": qty(spec, 0.0 if a.close_position else a.qty),
        "algoStatus": a.algo_status, "triggerPrice": px(spec, a.stop_price), "price": px(spec, a.price),
        "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type, "priceMatch": "NONE", "closePosition": a.close_position,
        "priceProtect": a.price_protect, "reduceOnly": a.reduce_only or a.close_position,
        "createTime": a.time, "updateTime": a.update_time, "triggerTime": a.trigger_time,
        "goodTillDate": a.good_till,
    }
    if placed:
        return out
    out.update({
        "actualOrderId": str(a.actual_order_id) if a.actual_order_id is not None else "",
        "actualPrice": fnum(a.avg_price, spec.price_precision + 3) if a.executed else "0",
        "tpTriggerPrice": "0", "tpPrice": "0", "slTriggerPrice": "0", "slPrice": "0", "tpOrderType": "",
    })
    if a.algo_status in TRIGGERED:
        out["actualType"] = "MARKET"
    if a.executed:
        out["actualQty"] = qty(spec, a.executed)
    return out


def kline_row(ex: Exchange, s: str, i: int, k: int, *, base_ms: int | None = None) -> list[Any]:
    """One REST kline row of bar ``i`` after ``k`` sub-steps (k >= K: closed)."""
    spec = ex.specs[s]
    sb = ex.market.bars[s]
    o, h, low, c, v, f = ex.market.partial(s, i, k)
    t = int(sb.open_time[i])
    ex_ = sb.extra
    q = ex_["quote_volume"][i] * f if "quote_volume" in ex_ else 0.0
    n = int(round(ex_["trades"][i] * f)) if "trades" in ex_ else 0
    tb = ex_["taker_buy_volume"][i] * f if "taker_buy_volume" in ex_ else 0.0
    tq = ex_["taker_buy_quote_volume"][i] * f if "taker_buy_quote_volume" in ex_ else 0.0
    vq = spec.qty_precision
    return [
        t, px(spec, o), px(spec, h), px(spec, low), px(spec, c), fnum(v, vq),
        t + (base_ms or ex.I) - 1, fnum(q, 4), n, fnum(tb, vq), fnum(tq, 4), "0",
    ]


def kline_ws(ex: Exchange, s: str, i: int, k: int, event_ms: int, interval: str) -> dict[str, Any]:
    row = kline_row(ex, s, i, k)
    return {
        "e": "kline",
        "E": event_ms,
        "s": s,
        "k": {
            "t": row[0], "T": row[6], "s": s, "i": interval, "f": -1, "L": -1,
            "o": row[1], "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8],
            "x": k >= ex.K, "q": row[7], "V": row[9], "Q": row[10], "B": "0",
        },
    }


def mark_ws(ex: Exchange, s: str, event_ms: int) -> dict[str, Any]:
    spec = ex.specs[s]
    rate, nxt = ex.funding_info(s)
    p = ex.last[s]
    return {
        "e": "markPriceUpdate", "E": event_ms, "s": s, "p": fnum(p, spec.price_precision + 6),
        "i": fnum(p, spec.price_precision + 6), "P": fnum(p, spec.price_precision + 6),
        "r": fnum(rate, 8), "T": nxt,
    }


def premium_index(ex: Exchange, s: str, now_ms: int) -> dict[str, Any]:
    spec = ex.specs[s]
    rate, nxt = ex.funding_info(s)
    p = fnum(ex.last[s], spec.price_precision + 6)
    return {
        "symbol": s, "markPrice": p, "indexPrice": p, "estimatedSettlePrice": p,
        "lastFundingRate": fnum(rate, 8), "interestRate": "0.00010000", "nextFundingTime": nxt, "time": now_ms,
    }


def pos_numbers(ex: Exchange, s: str) -> dict[str, float]:
    b = ex.book
    q = b.qty(s)
    lev = b.leverage[s]
    mark = ex.last[s]
    return {
        "qty": q, "entry": b.entry(s), "upnl": b.upnl(s), "notional": q * mark, "im": abs(q) * mark / lev,
        "mm": b.maint(s), "iso": b.margin(s) if b.isolated[s] else 0.0, "liq": b.liquidation_price(s),
    }


def position_risk(ex: Exchange, s: str, *, v3: bool) -> dict[str, Any]:
    spec = ex.specs[s]
    b = ex.book
    p = pos_numbers(ex, s)
    iso = b.isolated[s]
    out = {
        "symbol": s,
        "positionSide": "BOTH",
        "positionAmt": qty(spec, p["qty"]),
        "entryPrice": fnum(p["entry"], spec.price_precision + 5),
        "breakEvenPrice": fnum(p["entry"] * (1 + ex.taker_fee * (1 if p["qty"] > 0 else -1)) if p["qty"] else 0.0, spec.price_precision + 5),
        "markPrice": fnum(ex.last[s], spec.price_precision + 6),
        "unRealizedProfit": money(p["upnl"]),
        "liquidationPrice": fnum(p["liq"] if not math.isnan(p["liq"]) else 0.0, spec.price_precision + 6),
        "isolatedMargin": money(p["iso"] + (p["upnl"] if iso and p["qty"] else 0.0)),
        "notional": money(p["notional"]),
        "isolatedWallet": money(p["iso"]),
        "updateTime": ex.pos_time[s],
    }
    if v3:
        out.update(
            {
                "marginAsset": "USDT", "initialMargin": money(p["im"]), "maintMargin": money(p["mm"]),
                "positionInitialMargin": money(p["im"]), "openOrderInitialMargin": money(ex.open_order_im(s)),
                "adl": 0, "bidNotional": "0", "askNotional": "0",
            }
        )
    else:
        out.update(
            {
                "leverage": str(b.leverage[s]), "maxNotionalValue": money(max_notional_of(ex, s)),
                "marginType": "isolated" if iso else "cross", "isAutoAddMargin": "false",
            }
        )
    return out


def max_notional_of(ex: Exchange, s: str) -> float:
    return max_notional(ex.specs[s], ex.book.leverage[s])


def cross_wallet(ex: Exchange) -> float:
    b = ex.book
    return b.wallet - sum(b.margin(s) for s in ex.symbols if b.isolated[s])


def cross_upnl(ex: Exchange) -> float:
    b = ex.book
    return sum(b.upnl(s) for s in ex.symbols if not b.isolated[s])


def account(ex: Exchange, *, v3: bool) -> dict[str, Any]:
    b = ex.book
    upnl_total = pos_im = mm_total = 0.0
    positions = []
    for s in ex.symbols:
        p = pos_numbers(ex, s)
        upnl_total += p["upnl"]
        pos_im += p["im"]
        mm_total += p["mm"]
        if v3 and p["qty"] == 0:
            continue
        spec = ex.specs[s]
        iso = b.isolated[s]
        row: dict[str, Any] = {
            "symbol": s, "positionSide": "BOTH", "positionAmt": qty(spec, p["qty"]),
            "unrealizedProfit": money(p["upnl"]),
            "isolatedMargin": money(p["iso"] + (p["upnl"] if iso and p["qty"] else 0.0)),
            "notional": money(p["notional"]), "isolatedWallet": money(p["iso"]),
            "initialMargin": money(p["im"]), "maintMargin": money(p["mm"]), "updateTime": ex.pos_time[s],
        }
        if not v3:
            row.update(
                {
                    "positionInitialMargin": money(p["im"]), "openOrderInitialMargin": money(ex.open_order_im(s)),
                    "leverage": str(b.leverage[s]), "isolated": iso,
                    "entryPrice": fnum(p["entry"], spec.price_precision + 5),
                    "breakEvenPrice": fnum(p["entry"], spec.price_precision + 5),
                    "maxNotional": money(max_notional_of(ex, s)), "bidNotional": "0", "askNotional": "0",
                }
            )
        positions.append(row)
    oo_im = ex.open_order_im()
    avail = ex.available()
    wallet = b.wallet
    asset = {
        "asset": "USDT", "walletBalance": money(wallet), "unrealizedProfit": money(upnl_total),
        "marginBalance": money(wallet + upnl_total), "maintMargin": money(mm_total),
        "initialMargin": money(pos_im + oo_im), "positionInitialMargin": money(pos_im),
        "openOrderInitialMargin": money(oo_im), "crossWalletBalance": money(cross_wallet(ex)),
        "crossUnPnl": money(cross_upnl(ex)), "availableBalance": money(avail),
        "maxWithdrawAmount": money(max(0.0, avail)), "marginAvailable": True, "updateTime": ex.update_time,
    }
    out: dict[str, Any] = {
        "totalInitialMargin": money(pos_im + oo_im), "totalMaintMargin": money(mm_total),
        "totalWalletBalance": money(wallet), "totalUnrealizedProfit": money(upnl_total),
        "totalMarginBalance": money(wallet + upnl_total), "totalPositionInitialMargin": money(pos_im),
        "totalOpenOrderInitialMargin": money(oo_im), "totalCrossWalletBalance": money(cross_wallet(ex)),
        "totalCrossUnPnl": money(cross_upnl(ex)), "availableBalance": money(avail),
        "maxWithdrawAmount": money(max(0.0, avail)), "assets": [asset], "positions": positions,
    }
    if not v3:
        out = {
            "feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True, "canWithdraw": True,
            "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1, **out,
        }
    return out


def balance(ex: Exchange) -> list[dict[str, Any]]:
    avail = ex.available()
    return [
        {
            "accountAlias": "SgsR", "asset": "USDT", "balance": money(ex.book.wallet),
            "crossWalletBalance": money(cross_wallet(ex)), "crossUnPnl": money(cross_upnl(ex)),
            "availableBalance": money(avail), "maxWithdrawAmount": money(max(0.0, avail)),
            "marginAvailable": True, "updateTime": ex.update_time,
        }
    ]


def income_row(r: dict[str, Any]) -> dict[str, Any]:
    """One ``GET /fapi/v1/income`` row (GetIncomeHistoryResponseInner)."""
    return {
        "symbol": r["symbol"], "incomeType": r["incomeType"], "income": money(r["income"]),
        "asset": "USDT", "info": r["incomeType"], "time": r["time"], "tranId": r["tranId"],
        "tradeId": r["tradeId"],
    }
