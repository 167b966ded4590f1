"""The exchangeInfo the simulator advertises, and the filters of it that
:func:`engine.sim.specs.load_specs` does not carry (PERCENT_PRICE, MAX_NUM_ORDERS,
MAX_NUM_ALGO_ORDERS), enforced with Binance's codes.

Every filter exchangeInfo lists is enforced (codes as in ccxt 4.5.90's Binance table and
Binance's USD-M error-code page):

- PRICE_FILTER: price < minPrice -4013, price > maxPrice -4002, off the tick -4014; a trigger
  price <= 0 -4006, > maxPrice -4007, off the tick -4014.
- LOT_SIZE / MARKET_LOT_SIZE: -4004 (below minQty), -4005 (above maxQty), -4023 (off step).
- MIN_NOTIONAL: -4164 (unless reduce-only).
- PERCENT_PRICE (on a LIMIT price, against the mark price; the simulator's mark is the last
  replayed price): above ``mark * multiplierUp`` -4016 "Limit price can't be higher than X.",
  below ``mark * multiplierDown`` -4024 "Limit price can't be lower than X.".
- MAX_NUM_ORDERS: -2025 "Reach max open order limit."; MAX_NUM_ALGO_ORDERS: -4045 "Reach
  max stop order limit.".

``orderTypes`` and ``timeInForce`` list only what the simulator trades
(:data:`engine.exchange_sim.order.ORDER_TYPES`, :data:`~engine.exchange_sim.order.TIME_IN_FORCE`);
Binance lists STOP, TAKE_PROFIT, TRAILING_STOP_MARKET and GTD too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from engine.exchange_sim import errors as E
from engine.exchange_sim.order import ORDER_TYPES, TIME_IN_FORCE


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's exchangeInfo filters beyond :class:`engine.sim.specs.SymbolSpec`."""

    symbol: str
    multiplier_up: float
    multiplier_down: float
    max_orders: int
    max_algo_orders: int
    tick: float
    price_precision: int

    def check_percent_price(self, price: float, mark: float) -> None:
        """-4016 / -4024 for a limit price outside ``mark * [down, up]``."""
        if math.isnan(price) or not mark > 0:
            return
        cap = mark * self.multiplier_up
        floor = mark * self.multiplier_down
        if price > cap * (1 + 1e-12):
            lim = math.floor(cap / self.tick + 1e-9) * self.tick
            raise E.BinanceError(-4016, f"Limit price can't be higher than {lim:.{self.price_precision}f}.")
        if price < floor * (1 - 1e-12):
            lim = math.ceil(floor / self.tick - 1e-9) * self.tick
            raise E.BinanceError(-4024, f"Limit price can't be lower than {lim:.{self.price_precision}f}.")

    def check_open_count(self, n_open: int, *, algo: bool) -> None:
        """-2025 / -4045 when one more open order would pass MAX_NUM_(ALGO_)ORDERS."""
        if algo and n_open >= self.max_algo_orders:
            raise E.BinanceError(-4045, "Reach max stop order limit.")
        if not algo and n_open >= self.max_orders:
            raise E.BinanceError(-2025, "Reach max open order limit.")


def _filters(sym: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in sym.get("filters", [])}


def symbol_rules(info: dict[str, Any]) -> dict[str, SymbolRules]:
    """The rules of every symbol of an exchangeInfo answer."""
    out = {}
    for sym in info["symbols"]:
        f = _filters(sym)
        pct = f.get("PERCENT_PRICE", {})
        out[sym["symbol"]] = SymbolRules(
            symbol=sym["symbol"],
            multiplier_up=float(pct.get("multiplierUp", "inf")),
            multiplier_down=float(pct.get("multiplierDown", "0")),
            max_orders=int(f.get("MAX_NUM_ORDERS", {}).get("limit", 200)),
            max_algo_orders=int(f.get("MAX_NUM_ALGO_ORDERS", {}).get("limit", 10)),
            tick=float(f["PRICE_FILTER"]["tickSize"]),
            price_precision=int(sym["pricePrecision"]),
        )
    return out


def advertised(info: dict[str, Any], symbols: list[str]) -> dict[str, Any]:
    """The exchangeInfo to serve: the replayed symbols, with only the order types and
    time-in-force values the simulator supports."""
    out = copy.deepcopy(info)
    out["symbols"] = [s for s in out["symbols"] if s["symbol"] in symbols]
    for s in out["symbols"]:
        s["orderTypes"] = list(ORDER_TYPES)
        s["timeInForce"] = list(TIME_IN_FORCE)
    return out
