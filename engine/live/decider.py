"""The strategy graph one closed bar at a time: features -> rules -> risk, as the backtest.

:class:`LiveDecider` holds, per symbol, a :class:`engine.features.FeatureStream` and the
last ``graph.lookback`` rows of the columns the rules read; each closed bar steps the
features, evaluates the SAME compiled rule expressions over those rows (their value at the
last row equals the whole-column value, see :mod:`engine.strategy.expr`), steps the rule
state machine :func:`engine.strategy.rules_nb.rule_step_nb` and, when every symbol of the
bar is in, sizes the decisions with the simulator's own decide phase
(:func:`engine.sim.loop.decide_phase_nb`: circuit breaker, then
:func:`engine.sim.risk.risk_target_nb`) on an account synchronised from the exchange.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.strategy.expr import PRICE_COLUMNS
from engine.strategy.graph import StrategyGraph

ACTION = {1: "long", -1: "short", 0: "flat"}


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
    """What the exchange says about the account at a close (per symbol in graph order)."""

    wallet: float
    qty: np.ndarray
    entry_price: np.ndarray
    margin: np.ndarray


@dataclass(frozen=True)
class Decision:
    """One symbol's decision at a close: the rule state, what goes to risk, and the target."""

    symbol: str
    open_time: int
    state: int
    direction: float
    target: float
    reason: int
    price: float
    equity: float


def check_live_supported(graph: StrategyGraph) -> None:
    """Raise ConfigError for the parts of a graph live mode does not run yet (named, with a hint)."""
    cfg = graph.config
    src = getattr(graph, "source", None) or graph.name
    if cfg.models is not None:
        raise ConfigError(
            f"{src}: models: ML strategies are not supported by `engine live` yet",
            hint="run ML strategies with `engine backtest`; live mode runs rule strategies (signals:)",
        )
    e = cfg.execution
    if e.order_type != "market":
        raise ConfigError(
            f"{src}: execution.order_type: live mode sends market orders only, got {e.order_type!r}",
            hint="set execution.order_type: market (or --set execution.order_type=market)",
        )
    if cfg.risk.breaker.max_consecutive_losses is not None:
        raise ConfigError(
            f"{src}: risk.breaker.max_consecutive_losses: the loss-streak breaker is not supported live yet",
            hint="use daily_loss_pct / drawdown_pct, or --set risk.breaker.max_consecutive_losses=null",
        )


def warmup_needed(graph: StrategyGraph) -> int:
    """Closed bars to read before the first live decision: the features' warm-up plus the
    rules' lookback - 1, so the first live bar is the first one with every rule defined."""
    from engine.features import warmup_bars

    names = list(graph.feature_columns)
    w = warmup_bars(names, interval=graph.interval) if names else 0
    return w + max(graph.lookback, 1) - 1


class LiveDecider:
    """Per-bar decisions of a rule graph on the backtest's code path.

    Parameters
    ----------
    graph : a loaded strategy graph (rule signals).
    """

    def __init__(self, graph: StrategyGraph) -> None:
        from engine.backtest.runner import sim_config, symbol_specs
        from engine.features import FeatureStream
        from engine.sim.specs import spec_arrays
        from engine.sim.state import new_account, new_breaker, new_pending, new_records

        check_live_supported(graph)
        self.graph = graph
        self.symbols = tuple(graph.symbols)
        n = len(self.symbols)
        names = list(graph.feature_columns)
        self.streams = {s: FeatureStream(names, interval=graph.interval) for s in self.symbols}
        self.names = names
        read: set[str] = set()
        for r in graph.rules.values():
            read |= set(r.names)
        self.price_cols = [c for c in PRICE_COLUMNS if c in read and c not in names]
        self.window = max(graph.lookback, 1)
        self.rows: dict[str, deque[dict[str, float]]] = {s: deque(maxlen=self.window) for s in self.symbols}
        self.state = dict.fromkeys(self.symbols, 0)
        self.events = "long" not in graph.rules and "short" not in graph.rules
        cfg = sim_config(graph)
        self.config = cfg
        self.prm = cfg.to_params()
        self.specs = symbol_specs(graph)
        self.spa = spec_arrays(self.specs)
        self.acct = new_account(n, cash=cfg.initial_cash)
        self.pend = new_pending(n)
        self.brk = new_breaker(equity=cfg.initial_cash)
        self.recs = new_records(fills=4, trades=4, funding=4, events=64)
        self.bar_index = 0
        self._empty = np.empty(0)
        # funding_rate reads settled funding events (the backtest loads them when data.funding)
        self.needs_funding = "funding_rate" in names and bool(graph.config.data.funding)
        # ATR stops/targets read atr_N at the decision bar (as the backtest's ``atr`` input)
        e = graph.config.execution
        atr_stop = next((x for x in (e.stop_loss, e.take_profit) if x is not None and x.atr is not None), None)
        self.atr_name = f"atr_{atr_stop.atr_period}" if atr_stop is not None else None
        self.atr = dict.fromkeys(self.symbols, float("nan"))
        self.has_exits = e.stop_loss is not None or e.take_profit is not None

    def exit_prices(self, symbol: str, side: int, entry_price: float) -> tuple[float, float]:
        """Stop-loss and take-profit trigger prices after an entry (NaN: none), as the
        simulator sets them (:func:`engine.sim.accounting.stop_target_prices_nb` with the ATR
        of the decision bar)."""
        from engine.sim.accounting import stop_target_prices_nb

        j = self.symbols.index(symbol)
        p = self.prm
        stop, target = stop_target_prices_nb(
            int(side), float(entry_price), p.stop_pct, p.target_pct, p.stop_atr, p.target_atr,
            self.atr[symbol], float(self.spa.tick[j]))
        return float(stop), float(target)

    def add_funding(self, symbol: str, funding_time: int, rate: float) -> None:
        """Record a settled funding event of one symbol (feeds its FeatureStream)."""
        self.streams[symbol].add_funding(int(funding_time), float(rate))

    # ------------------------------------------------------------------ signals

    def signal_step(self, bar: Bar) -> tuple[int, float]:
        """Feed one closed bar of one symbol: step its features and the rule state machine.

        Returns ``(state, direction)`` exactly as :func:`engine.backtest.decide.decide_symbol`
        gives for this bar over the whole history.
        """
        from engine.strategy.rules_nb import rule_step_nb

        feats = self.streams[bar.symbol].update(
            {"open_time": bar.open_time, "open": bar.open, "high": bar.high, "low": bar.low,
             "close": bar.close, "volume": bar.volume}
        )
        row = {k: float(v) for k, v in feats.items()}
        for c in self.price_cols:
            row[c] = float(getattr(bar, c))
        if self.atr_name is not None:
            self.atr[bar.symbol] = row.get(self.atr_name, float("nan"))
        rows = self.rows[bar.symbol]
        rows.append(row)
        cols = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in row}
        le, lx, se, sx = _signals(self.graph, cols)
        old = self.state[bar.symbol]
        new = int(rule_step_nb(old, bool(le), bool(lx), bool(se), bool(sx)))
        self.state[bar.symbol] = new
        direction = float(new) if (not self.events or new != old) else float("nan")
        return new, direction

    # ------------------------------------------------------------------ risk

    def size(
        self,
        open_time: int,
        closes: np.ndarray,
        directions: np.ndarray,
        account: AccountView,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The simulator's decide phase at a close: breaker step, then each symbol's target.

        ``closes``/``directions`` are per symbol (NaN close: the symbol has no bar). The
        account (wallet, positions, margins) comes from the exchange; equity is
        ``wallet + sum(qty * (close - entry))``, the backtest's mark to market at the close.
        Returns ``(target qty, reason code, equity)``.
        """
        from engine.sim.loop import decide_phase_nb

        a = self.acct
        a.wallet[0] = account.wallet
        a.qty[:] = account.qty
        a.entry_price[:] = account.entry_price
        a.margin[:] = account.margin
        for j in range(len(self.symbols)):
            if not np.isnan(closes[j]):
                a.last_price[j] = closes[j]
        with np.errstate(invalid="ignore"):
            upnl = np.where(a.qty != 0.0, a.qty * (a.last_price - a.entry_price), 0.0)
        equity = float(a.wallet[0] + np.nansum(upnl))
        target = np.zeros(len(self.symbols))
        reason = np.zeros(len(self.symbols), dtype=np.int64)
        decide_phase_nb(
            a, self.pend, self.brk, self.spa, self.prm, self.recs, self.bar_index, int(open_time),
            equity, np.ascontiguousarray(closes, dtype=np.float64),
            np.ascontiguousarray(directions, dtype=np.float64),
            self._empty, self._empty, self._empty, target, reason,
        )
        self.bar_index += 1
        return target, reason, equity


def _signals(graph: StrategyGraph, cols: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
    """The four rule signals at the last row (the same expressions as ``decide_symbol``)."""
    r = graph.rules
    if "long" in r:
        le = bool(r["long"].evaluate(cols)[-1])
        lx = not le
    else:
        le = bool(r["long_entry"].evaluate(cols)[-1]) if "long_entry" in r else False
        lx = bool(r["long_exit"].evaluate(cols)[-1]) if "long_exit" in r else False
    if "short" in r:
        se = bool(r["short"].evaluate(cols)[-1])
        sx = not se
    else:
        se = bool(r["short_entry"].evaluate(cols)[-1]) if "short_entry" in r else False
        sx = bool(r["short_exit"].evaluate(cols)[-1]) if "short_exit" in r else False
    return le, lx, se, sx


def breaker_events(decider: LiveDecider) -> list[dict[str, Any]]:
    """Breaker trips/resets recorded by the last :meth:`LiveDecider.size` (then cleared)."""
    ev = decider.recs.events
    out = [
        {"code": int(ev.code[i]), "value": float(ev.value[i])}
        for i in range(min(int(ev.n[0]), ev.code.shape[0]))
    ]
    ev.n[0] = 0
    return out
