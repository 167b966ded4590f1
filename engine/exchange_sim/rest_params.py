"""What every REST handler of the exchange simulator gets: the request's :class:`Ctx`, and
the parameter readers that answer a bad parameter with Binance's own error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from engine.exchange_sim import errors as E
from engine.exchange_sim.clock import MarketClock
from engine.exchange_sim.config import ExchangeSimSettings
from engine.exchange_sim.exchange import Exchange

NAN = float("nan")


class Server(Protocol):
    """What a REST handler may use of the server (:class:`engine.exchange_sim.server.SimServer`)."""

    config: ExchangeSimSettings
    exchange: Exchange
    clock: MarketClock
    leverage_brackets: Any
    exchange_info: Any
    current_listen_key: str | None

    def listen_key(self) -> str: ...

    def close_listen_key(self) -> None: ...


@dataclass
class Ctx:
    """One request: its parsed parameters, the market clock and the API key it came with."""

    server: Server
    params: dict[str, str]
    now_ms: int  # market clock
    api_key: str | None


Handler = Callable[[Ctx], Any]


def symbol_param(ctx: Ctx, *, required: bool = True) -> str | None:
    s = ctx.params.get("symbol")
    if not s:
        if required:
            raise E.mandatory("symbol")
        return None
    if s not in ctx.server.exchange.specs or s not in ctx.server.exchange.market.bars:
        raise E.bad_symbol()
    return s


def int_param(ctx: Ctx, name: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None) -> int | None:
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


def bool_param(ctx: Ctx, name: str, default: bool = False) -> bool:
    raw = ctx.params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false"):
        raise E.illegal(name)
    return raw.lower() == "true"


def decimal_param(ctx: Ctx, name: str, decimals: int, *, required: bool) -> float:
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
