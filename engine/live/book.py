"""Live mode's books: a mirror of the simulator's account, advanced by the simulator's kernels.

The backtest folds :mod:`engine.sim`'s kernels over bars; live mode keeps the same state
(:class:`engine.sim.state.Account`, the pending orders, the breaker, the record buffers)
and advances it with the same kernels, fed with what the exchange reports:

* a fill: :func:`engine.sim.steps.execute_fill_nb` (trade accounting, the ``tr_*`` fields,
  the trade record when a position returns to zero or flips, the loss streak), with the
  fee of :func:`engine.sim.accounting.fee_nb`;
* a funding settlement: :func:`engine.sim.steps.funding_step_nb`;
* a close: :func:`engine.sim.loop.decide_phase_nb` (the breaker, then the risk manager's
  targets), after :meth:`Book.sync` has taken the exchange's wallet, positions and margins
  (the venue is the authority; a difference from the mirror is reported);
* an entry: :func:`engine.sim.accounting.stop_target_prices_nb` for its stop and target.

Live records are booked with the bar's open time as the simulator's ``bar`` (an integer
clock), so the record arrays map to rows with ``bar_time=None``
(:mod:`engine.decisions.records`). The breaker steps with the bar index counted from the
first warm-up bar, which is the backtest's bar index over the same span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.sim.accounting import (
    fee_nb,
    funding_payment_nb,
    order_legs_nb,
    stop_target_prices_nb,
)
from engine.sim.api import records_to_arrays
from engine.sim.config import SimConfig
from engine.sim.enums import FillKind, MarginMode, OrderType
from engine.sim.loop import decide_phase_nb
from engine.sim.specs import SymbolSpec, spec_arrays
from engine.sim.state import new_account, new_breaker, new_pending, new_records
from engine.sim.steps import equity_nb, execute_fill_nb, funding_step_nb

#: live order legs and what the simulator calls their fills
LEG_KIND = {"entry": FillKind.ENTRY, "exit": FillKind.EXIT, "stop": FillKind.STOP,
            "target": FillKind.TARGET, "end": FillKind.END}
ORDER_KIND = {"market": OrderType.MARKET, "limit": OrderType.LIMIT,
              "stop_market": OrderType.STOP_MARKET,
              "take_profit_market": OrderType.TAKE_PROFIT_MARKET}


@dataclass(frozen=True)
class AccountState:
    """The exchange's account at a close, per symbol in graph order."""

    wallet: float
    qty: np.ndarray
    entry_price: np.ndarray
    margin: np.ndarray


#: the parts of :meth:`Book.state` that are record buffers (a count ``n``, then the records)
RECORD_PARTS = ("fills", "trades", "funding", "events")


class Book:
    """The simulator's account state for the symbols of one live run.

    Parameters
    ----------
    symbols : exchange symbols in graph order.
    config, specs : the strategy's simulator settings and exchange rules
        (:func:`engine.strategy.execution.sim_config` / ``symbol_specs``).
    """

    def __init__(self, symbols: Sequence[str], config: SimConfig, specs: list[SymbolSpec]) -> None:
        n = len(symbols)
        self.symbols = tuple(symbols)
        self.config = config
        self.prm = config.to_params()
        self.specs = specs
        self.spa = spec_arrays(specs)
        self.acct = new_account(n, cash=config.execution.initial_cash)
        self.pend = new_pending(n)
        self.brk = new_breaker(equity=config.execution.initial_cash)
        self.recs = new_records(fills=64, trades=64, funding=64, events=64)
        self._empty = np.empty(0)

    # ------------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, dict[str, list[Any]]]:
        """Everything the kernels keep (account, pending orders, breaker, undrained
        records) as plain lists: a checkpoint (:mod:`engine.live.checkpoint`). A record
        buffer gives its count ``n`` and its first ``n`` records only (the rest is unused:
        64 rows a buffer, most bars none)."""
        out: dict[str, dict[str, list[Any]]] = {}
        for name, tup in self._parts().items():
            if name in RECORD_PARTS:
                k = min(int(tup.n[0]), len(tup[1]))
                out[name] = {f: (a.tolist() if f == "n" else a[:k].tolist())
                             for f, a in zip(tup._fields, tup, strict=True)}
            else:
                out[name] = {f: a.tolist() for f, a in zip(tup._fields, tup, strict=True)}
        return out

    def restore(self, state: dict[str, dict[str, list[Any]]]) -> None:
        """Put back a :meth:`state` (the arrays are filled in place; a record buffer's first
        records, as many as were saved)."""
        for name, tup in self._parts().items():
            for f in tup._fields:
                arr = getattr(tup, f)
                vals = np.asarray(state[name][f], dtype=arr.dtype)
                if name in RECORD_PARTS and f != "n":
                    arr[: vals.shape[0]] = vals
                else:
                    arr[...] = vals.reshape(arr.shape)

    def _parts(self) -> dict[str, Any]:
        r = self.recs
        return {"acct": self.acct, "pend": self.pend, "brk": self.brk, "fills": r.fills,
                "trades": r.trades, "funding": r.funding, "events": r.events}

    # ------------------------------------------------------------------ the exchange's truth

    def sync(self, account: AccountState, closes: np.ndarray, time_ms: int) -> list[str]:
        """Take the exchange's wallet, positions and margins at the close ``time_ms``; mark
        each symbol with a bar at its close. Returns the symbols whose position differs from
        what the mirror booked (a fill it was not told of: a liquidation, a manual order).

        Such a difference is booked first as fills without a fee (:meth:`fill`, split into
        the simulator's exit and entry legs), so that the trade accounting (entry time,
        quantities, values) follows the position and the trades it closes and opens are
        whole ones: what was closed at the close (the venue did not say at what price),
        what was opened at the price the exchange's average entry implies. The wallet is
        then the exchange's, whatever those fills realised."""
        a = self.acct
        differs = []
        for j, s in enumerate(self.symbols):
            q0, q1 = float(a.qty[j]), float(account.qty[j])
            if abs(q1 - q0) <= 1e-12:
                continue
            differs.append(s)
            out, into = order_legs_nb(q0, q1)
            e0, e1, close = float(a.entry_price[j]), float(account.entry_price[j]), float(closes[j])
            if out != 0.0:
                self.fill(s, out, close if np.isfinite(close) and close > 0.0 else e0, time_ms,
                          leg="exit", order_type="market", rate=0.0)
            if into != 0.0:
                held = q0 + out if abs(q0 + out) >= 1e-12 else 0.0
                price = (q1 * e1 - held * e0) / into
                self.fill(s, into, price if np.isfinite(price) and price > 0.0 else e1, time_ms,
                          leg="entry", order_type="market", rate=0.0)
        a.wallet[0] = account.wallet
        a.qty[:] = account.qty
        a.entry_price[:] = account.entry_price
        a.margin[:] = account.margin
        has = ~np.isnan(closes)
        a.last_price[has] = closes[has]
        return differs

    def unsettle(self, settlements: list[tuple[str, float, float]]) -> None:
        """Take back funding the exchange settled at this close: ``(symbol, rate, mark)``.

        The venue pays funding at the funding time itself, which is the close of the bar
        before it; the simulator books it after that close's decision (at the next bar's
        open, before the order fills). So the decision, and the equity row, see the wallet
        before it; :meth:`funding` then books it with the simulator's kernel."""
        a = self.acct
        for symbol, rate, mark in settlements:
            j = self.symbols.index(symbol)
            amount = funding_payment_nb(float(a.qty[j]), float(mark), float(rate))
            a.wallet[0] += amount
            if self.prm.margin_mode == MarginMode.ISOLATED:
                a.margin[j] += amount

    def adopt(self, symbol: str, qty: float, entry_price: float, time_ms: int) -> None:
        """A position found on the exchange at start: its trade opens at ``time_ms`` (an
        entry fill at its entry price without a fee)."""
        if qty != 0.0:
            self.fill(symbol, qty, entry_price, time_ms, leg="entry", order_type="market",
                      rate=0.0)

    def equity(self) -> float:
        """Wallet plus unrealised PnL at the last closes (the simulator's mark to market)."""
        return float(equity_nb(self.acct))

    # ------------------------------------------------------------------ booking

    def fill(self, symbol: str, qty: float, price: float, time_ms: int, *, leg: str,
             order_type: str, rate: float) -> None:
        """Book a signed fill of ``qty`` at ``price`` in the bar opening at ``time_ms``,
        paying ``rate`` (taker or maker) on its notional."""
        j = self.symbols.index(symbol)
        fee = fee_nb(qty, price, rate)
        execute_fill_nb(self.acct, self.recs, int(time_ms), j, float(qty), float(price), fee,
                        LEG_KIND[leg], ORDER_KIND[order_type], self.prm.leverage)

    def funding(self, symbol: str, rate: float, mark: float, time_ms: int) -> float:
        """Settle funding on the position held now; returns the amount paid (+) or received."""
        j = self.symbols.index(symbol)
        return float(funding_step_nb(self.acct, self.prm, self.recs, int(time_ms), j,
                                     float(rate), float(mark)))

    def drain(self) -> dict[str, np.ndarray]:
        """The records booked since the last drain (fills, trades, funding, events) as the
        simulator's structured arrays; the buffers start over."""
        out = records_to_arrays(self.recs)
        for buf in self.recs:
            buf.n[0] = 0
        return out

    # ------------------------------------------------------------------ decisions

    def decide(self, bar_index: int, open_time: int, closes: np.ndarray, direction: np.ndarray,
               *, prob: np.ndarray | None, payoff: np.ndarray | None,
               atr: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
        """The simulator's decide phase at the close of bar ``open_time`` (after
        :meth:`sync`): ``(target qty, reason code, equity)`` per symbol."""
        n = len(self.symbols)
        equity = self.equity()
        target = np.zeros(n)
        reason = np.zeros(n, dtype=np.int64)

        def arr(x: np.ndarray | None) -> np.ndarray:
            return self._empty if x is None else np.ascontiguousarray(x, dtype=np.float64)

        decide_phase_nb(self.acct, self.pend, self.brk, self.spa, self.prm, self.recs,
                        int(bar_index), int(open_time), equity,
                        np.ascontiguousarray(closes, dtype=np.float64),
                        np.ascontiguousarray(direction, dtype=np.float64), arr(prob),
                        arr(payoff), arr(atr), target, reason)
        return target, reason, equity

    def legs(self, symbol: str, target: float) -> tuple[float, float]:
        """``(exit qty, entry qty)`` from the position to ``target`` (the simulator's split)."""
        q = float(self.acct.qty[self.symbols.index(symbol)])
        exit_qty, entry_qty = order_legs_nb(q, float(target))
        return float(exit_qty), float(entry_qty)

    def exit_prices(self, symbol: str, side: int, entry_price: float, atr: float) -> tuple[float, float]:
        """Stop-loss and take-profit trigger prices after an entry (NaN: none), as the
        simulator sets them (with the ATR of the decision bar)."""
        j = self.symbols.index(symbol)
        p = self.prm
        stop, target = stop_target_prices_nb(int(side), float(entry_price), p.stop_pct,
                                             p.target_pct, p.stop_atr, p.target_atr, float(atr),
                                             float(self.spa.tick[j]))
        return float(stop), float(target)
