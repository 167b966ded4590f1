"""Round trips from live fills, booked as :func:`engine.sim.steps.execute_fill_nb` books them.

A trade opens when a position leaves zero and closes when it returns to zero (or flips: one
fill through zero closes the trade and opens the next, its fee split pro rata). Its row is
the backtest's ``trades`` row (:func:`engine.decisions.records.trade_frame`): entry and exit
prices are the quantity-weighted averages of the opening and closing fills, ``quantity`` the
quantity opened, ``fees`` the fees of its fills, ``funding`` the funding settled while it
was open (+ = received) and ``pnl = realised - fees - funding paid``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class _Open:
    qty: float = 0.0
    entry: float = 0.0
    entry_time: int = -1
    qty_in: float = 0.0
    value_in: float = 0.0
    qty_out: float = 0.0
    value_out: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    funding: float = 0.0  # paid (+) as the simulator keeps it


class TradeBook:
    """Per-symbol open trades; :meth:`fill` returns the rows of the trades it closes."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.open = {s: _Open() for s in symbols}

    def adopt(self, symbol: str, qty: float, entry_price: float, time_ms: int) -> None:
        """Start from a position found on the exchange (a restart): its trade opens now."""
        if qty != 0.0:
            self.open[symbol] = _Open(qty=qty, entry=entry_price, entry_time=time_ms, qty_in=abs(qty),
                                      value_in=abs(qty) * entry_price)

    def add_funding(self, symbol: str, paid: float) -> None:
        """Funding settled on the open position (``paid`` > 0 leaves the wallet)."""
        if self.open[symbol].qty != 0.0:
            self.open[symbol].funding += paid

    def fill(self, symbol: str, qty: float, price: float, fee: float, *, time_ms: int,
             reason: str) -> list[dict[str, Any]]:
        """Book a signed fill at ``time_ms`` (the open time of the bar it filled in)."""
        t = self.open[symbol]
        out: list[dict[str, Any]] = []
        q = t.qty
        closed = min(abs(qty), abs(q)) if q != 0.0 and (q > 0) != (qty > 0) else 0.0
        opened = abs(qty) - closed
        if opened < 1e-12:
            opened = 0.0
        fee_close = fee * closed / abs(qty) if qty else 0.0
        if closed > 0.0:
            side = 1.0 if q > 0 else -1.0
            t.realized += closed * (price - t.entry) * side
            t.qty_out += closed
            t.value_out += closed * price
            t.fees += fee_close
            t.qty = q + (closed if q < 0 else -closed)
            if abs(t.qty) <= 1e-12:
                out.append({
                    "symbol": symbol, "side": "long" if q > 0 else "short",
                    "entry_time": t.entry_time, "exit_time": time_ms,
                    "entry_price": t.value_in / t.qty_in, "exit_price": t.value_out / t.qty_out,
                    "quantity": t.qty_in, "pnl": t.realized - t.fees - t.funding, "fees": t.fees,
                    "funding": -t.funding, "exit_reason": reason,
                })
                t = self.open[symbol] = _Open()
        if opened > 0.0:
            sgn = 1.0 if qty > 0 else -1.0
            if t.qty == 0.0:
                t = self.open[symbol] = _Open(entry_time=time_ms)
            t.entry = (abs(t.qty) * t.entry + opened * price) / (abs(t.qty) + opened)
            t.qty += sgn * opened
            t.qty_in += opened
            t.value_in += opened * price
            t.fees += fee - fee_close
        return out
