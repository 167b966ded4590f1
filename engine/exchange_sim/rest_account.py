"""REST handlers for the account: balances, positions, leverage, margin type, position
mode, brackets, commission and the user-data listen key."""

from __future__ import annotations

from typing import Any

from engine.exchange_sim import errors as E
from engine.exchange_sim import shapes as S
from engine.exchange_sim.rest_params import Ctx, bool_param, int_param, symbol_param


def account_v2(ctx: Ctx) -> Any:
    return S.account(ctx.server.exchange, v3=False)


def account_v3(ctx: Ctx) -> Any:
    return S.account(ctx.server.exchange, v3=True)


def balance(ctx: Ctx) -> Any:
    return S.balance(ctx.server.exchange)


def _position_risk(ctx: Ctx, *, v3: bool) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)
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
    s = symbol_param(ctx)
    assert s is not None
    lev = int_param(ctx, "leverage")
    if lev is None:
        raise E.mandatory("leverage")
    lev, cap = ex.set_leverage(s, lev)
    return {"leverage": lev, "maxNotionalValue": S.fnum(cap, 0), "symbol": s}


def margin_type(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx)
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
    ctx.server.exchange.set_dual(bool_param(ctx, "dualSidePosition"))
    return {"code": 200, "msg": "success"}


def multi_assets(ctx: Ctx) -> Any:
    return {"multiAssetsMargin": False}


def leverage_bracket(ctx: Ctx) -> Any:
    """Every replayed symbol's brackets as an array; with ``symbol``, that symbol's one
    object (as Binance answers)."""
    s = symbol_param(ctx, required=False)
    rows = [r for r in ctx.server.leverage_brackets if r["symbol"] in ctx.server.exchange.symbols]
    if s:
        return next(r for r in rows if r["symbol"] == s)
    return rows


WEEK_MS = 7 * 86_400_000
# Binance's incomeType values; the simulator books REALIZED_PNL, COMMISSION and FUNDING_FEE
INCOME_TYPES = (
    "TRANSFER", "WELCOME_BONUS", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION", "INSURANCE_CLEAR",
    "REFERRAL_KICKBACK", "COMMISSION_REBATE", "API_REBATE", "CONTEST_REWARD",
    "CROSS_COLLATERAL_TRANSFER", "OPTIONS_PREMIUM_FEE", "OPTIONS_SETTLE_PROFIT",
    "INTERNAL_TRANSFER", "AUTO_EXCHANGE", "DELIVERED_SETTELMENT", "COIN_SWAP_DEPOSIT",
    "COIN_SWAP_WITHDRAW", "POSITION_LIMIT_INCREASE_FEE", "STRATEGY_UMFUTURES_TRANSFER",
    "FEE_RETURN", "BFUSD_REWARD", "SPECIAL_FUNDING_FEE",
)


def income(ctx: Ctx) -> Any:
    """``GET /fapi/v1/income``: the ledger of fills (REALIZED_PNL, COMMISSION) and funding
    (FUNDING_FEE), oldest first; without ``startTime``/``endTime`` the last 7 days (market
    time), ``limit`` 100 by default, 1000 at most."""
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)
    kind = ctx.params.get("incomeType")
    if kind and kind not in INCOME_TYPES:
        raise E.illegal("incomeType")
    limit = int_param(ctx, "limit", 100, lo=1, hi=1000)
    start, end = int_param(ctx, "startTime"), int_param(ctx, "endTime")
    if start is not None and end is not None and start > end:
        raise E.BinanceError(-1023, "Start time is greater than end time.")
    if start is None and end is None:
        start = ctx.now_ms - WEEK_MS
    rows = [
        r for r in ex.income
        if (s is None or r["symbol"] == s) and (not kind or r["incomeType"] == kind)
        and (start is None or r["time"] >= start) and (end is None or r["time"] <= end)
    ]
    assert limit is not None
    rows = rows[:limit] if ctx.params.get("startTime") else rows[-limit:]
    return [S.income_row(r) for r in rows]


def symbol_config(ctx: Ctx) -> Any:
    ex = ctx.server.exchange
    s = symbol_param(ctx, required=False)
    out = []
    for sym in [s] if s else ex.symbols:
        out.append(
            {
                "symbol": sym, "marginType": "ISOLATED" if ex.book.isolated[sym] else "CROSSED",
                "isAutoAddMargin": False, "leverage": ex.book.leverage[sym],
                "maxNotionalValue": S.fnum(S.max_notional_of(ex, sym), 0),
            }
        )
    return out


def commission_rate(ctx: Ctx) -> Any:
    s = symbol_param(ctx)
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
