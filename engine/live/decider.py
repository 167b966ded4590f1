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
    e = cfg.execution
    if e.order_type == "limit" and (e.stop_loss is not None or e.take_profit is not None):
        raise ConfigError(
            f"{src}: execution.order_type: limit entries with stop_loss/take_profit are not supported "
            "live yet (the backtest arms the stop inside the bar the limit fills in)",
            hint="use execution.order_type: market with stops, or drop stop_loss/take_profit",
        )
    if e.order_type == "limit" and not e.limit_offset_bps:
        raise ConfigError(
            f"{src}: execution.limit_offset_bps: 0 puts a live limit entry at the close, where the "
            "exchange fills it at once as a taker (the backtest fills it in the next bar as a maker)",
            hint="set execution.limit_offset_bps > 0, e.g. 2, or execution.order_type: market",
        )


def warmup_needed(graph: StrategyGraph) -> int:
    """Closed bars to read before the first live decision: the features' warm-up plus the
    rules' lookback - 1, so the first live bar is the first one with every rule defined.

    An ML strategy needs at least the walk-forward warm-up (``training.warmup``, default
    ``training.train_window``) too, so that its first fold's cutoff is at or before the
    first live bar (the schedule is anchored at the first warm-up bar, as a backtest's at
    its first bar)."""
    from engine.features import warmup_bars

    names = list(graph.feature_columns)
    w = warmup_bars(names, interval=graph.interval) if names else 0
    need = w + max(graph.lookback, 1) - 1
    ml = graph.config.ml()
    if ml is not None:
        from engine.strategy.ml_config import span_ms
        from engine.timeutil import interval_ms

        t = ml.training
        step = interval_ms(graph.interval)
        span = t.train_window if t.warmup is None else t.warmup
        where = "training.train_window" if t.warmup is None else "training.warmup"
        need = max(need, -(-span_ms(span, step, where=where) // step))
    return need


@dataclass(frozen=True)
class MLBar:
    """The ensemble's output for one closed bar of one symbol, as the backtest maps it.

    ``state``/``direction``: the gated side; ``prob``: P(the chosen side is right), the
    Kelly p (``SymbolResult.confidence``); ``payoff``: the Kelly b (``payoff_ratio``);
    ``columns``: the ``ensemble_decisions`` ML columns; ``predictions``: the
    ``model_predictions`` rows (one per model, none before the first cutoff).
    """

    state: int
    direction: float
    prob: float
    payoff: float
    columns: dict[str, float]
    predictions: list[dict[str, Any]]


def ml_bar(symbol: str, out: dict[str, Any], model_names: list[str]) -> MLBar:
    """Map one :meth:`engine.ml.LiveEnsemble.on_bar` output to the simulator's inputs and the
    log's rows through the batch path's own objects: a one-bar
    :class:`engine.ml.SymbolResult` (its ``confidence``) and
    :func:`engine.decisions.ml_slot.predictions_frame`; the fields taken are those
    ``engine.decisions.ml_slot.decide`` puts on the market grid (direction, confidence as the Kelly
    probability, payoff_ratio as the Kelly payoff, p as the logged probability)."""
    from engine.decisions.ml_slot import predictions_frame
    from engine.ml.pipeline import SymbolResult

    k = int(out["fold"])
    one = np.array
    r = SymbolResult(
        symbol=symbol,
        open_time=one([out["open_time"]], dtype=np.int64),
        model_names=list(model_names),
        raw=np.asarray(out["raw"], dtype=np.float64)[None, :],
        probs=np.asarray(out["probs"], dtype=np.float64)[None, :],
        fold=one([0 if k >= 0 else -1], dtype=np.int32),
        versions={m: [out["model_versions"][m]] for m in model_names},
        p=one([out["p"]]),
        agreement=one([out["agreement"]]),
        disagreement=one([out["disagreement"]]),
        entropy=one([out["entropy"]]),
        uncertainty=one([out["uncertainty"]]),
        payoff_ratio=one([out["payoff_ratio"]]),
        expected_value=one([out["expected_value"]]),
        direction=one([out["direction"]], dtype=np.int8),
        gate_code=one([out["gate_code"]], dtype=np.int8),
        weights=np.asarray(out["weights"], dtype=np.float64)[None, :],
        labels=one([np.nan]),  # the label of a live bar is not known at its close
    )
    d = int(r.direction[0])
    return MLBar(
        state=d,
        direction=float(d),
        prob=float(r.confidence[0]),
        payoff=float(r.payoff_ratio[0]),
        columns={
            "confidence": float(r.confidence[0]),
            "probability": float(r.p[0]),
            "agreement": float(r.agreement[0]),
            "uncertainty": float(r.uncertainty[0]),
            "expected_value": float(r.expected_value[0]),
        },
        predictions=predictions_frame(r).to_dicts() if k >= 0 else [],
    )


class LiveDecider:
    """Per-bar decisions of a rule graph on the backtest's code path.

    Parameters
    ----------
    graph : a loaded strategy graph (rule signals).
    """

    def __init__(self, graph: StrategyGraph) -> None:
        from engine.strategy.execution import sim_config, symbol_specs
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
        # ML strategies: candles and features of the warm-up per symbol, then a LiveEnsemble
        self.ml = graph.config.ml()
        self.kelly = graph.config.risk.sizing == "kelly"
        self.history: dict[str, list[tuple[Bar, dict[str, float]]]] = {s: [] for s in self.symbols}
        self.ensembles: dict[str, Any] = {}
        from engine.live.ml_summary import LiveMLTrace

        self.ml_trace = LiveMLTrace(self.symbols)  # live bars' ensemble outputs, for the run's end

    # ------------------------------------------------------------------ warm-up

    def warm_step(self, bar: Bar) -> None:
        """Feed one warm-up bar (no decision is acted on): rules step their state machine;
        an ML strategy keeps the bar and its features for :meth:`start_ml`."""
        if self.ml is None:
            self.signal_step(bar)
            return
        self.history[bar.symbol].append((bar, self._features(bar)))

    def start_ml(self, *, run_start: int, results_dir: Any = None) -> None:
        """Warm up each symbol's :class:`engine.ml.LiveEnsemble` on the warm-up bars: the
        batch walk-forward anchored at ``run_start`` (the first warm-up bar, as a backtest
        from there), models trained or reused from ``<results>/models`` as the backtest does."""
        import polars as pl

        from engine.errors import DataError
        from engine.ml.live import LiveEnsemble

        assert self.ml is not None
        t0 = self.ml_trace.clock()
        for s in self.symbols:
            hist = self.history[s]
            if not hist:
                raise DataError(f"{s}: no warm-up bars from the venue for the ML ensemble",
                                hint="check the symbol and that the venue serves its klines")
            cols = ("open_time", "open", "high", "low", "close", "volume")
            candles = pl.DataFrame(
                {c: [getattr(b, c) for b, _ in hist] for c in cols},
                schema={c: pl.Int64 if c == "open_time" else pl.Float64 for c in cols},
            )
            feats = pl.DataFrame(
                {"open_time": candles["open_time"],
                 **{n: pl.Series(n, [f[n] for _, f in hist], dtype=pl.Float64) for n in self.names}},
            )
            self.ensembles[s] = LiveEnsemble.from_history(
                self.ml, candles, feats, symbol=s, run_start=run_start, results_dir=results_dir)
            self.history[s] = []
        self.ml_trace.train_seconds += self.ml_trace.clock() - t0

    def ml_step(self, bar: Bar) -> MLBar:
        """Feed one live closed bar of an ML strategy: FeatureStream -> LiveEnsemble.on_bar ->
        the backtest's mapping (:func:`ml_bar`)."""
        assert self.ml is not None
        feats = self._features(bar)
        ens = self.ensembles[bar.symbol]
        k = ens._fold_for(bar.open_time)
        rolled = k >= 0 and not any(f.index == k for f in ens.pipe.sched.folds)
        t0 = self.ml_trace.clock()
        out = ens.on_bar(bar.open_time, bar.close, feats)
        self.ml_trace.add(bar.symbol, bar.close, out, self.ml_trace.clock() - t0, rolled=rolled)
        r = ml_bar(bar.symbol, out, [m.name for m in self.ml.models])
        self.state[bar.symbol] = r.state
        return r

    def _features(self, bar: Bar) -> dict[str, float]:
        feats = self.streams[bar.symbol].update(
            {"open_time": bar.open_time, "open": bar.open, "high": bar.high, "low": bar.low,
             "close": bar.close, "volume": bar.volume}
        )
        row = {k: float(v) for k, v in feats.items()}
        if self.atr_name is not None:
            self.atr[bar.symbol] = row.get(self.atr_name, float("nan"))
        return row

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

    def trade_closed(self, pnl: float) -> None:
        """Count one closed trade into the loss streak the breaker reads, as
        ``engine.sim.steps._close_trade_nb`` does: ``pnl < 0`` (net of fees and funding)
        adds one, anything else resets it (the breaker's reset zeroes it too)."""
        if pnl < 0.0:
            self.acct.loss_streak[0] += 1
        else:
            self.acct.loss_streak[0] = 0

    def add_funding(self, symbol: str, funding_time: int, rate: float) -> None:
        """Record a settled funding event of one symbol (feeds its FeatureStream)."""
        self.streams[symbol].add_funding(int(funding_time), float(rate))

    # ------------------------------------------------------------------ signals

    def signal_step(self, bar: Bar) -> tuple[int, float]:
        """Feed one closed bar of one symbol: step its features and the rule state machine.

        Returns ``(state, direction)`` exactly as :func:`engine.decisions.decide.decide_symbol`
        gives for this bar over the whole history.
        """
        from engine.strategy.rules_nb import rule_step_nb

        row = self._features(bar)
        for c in self.price_cols:
            row[c] = float(getattr(bar, c))
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
        *,
        prob: np.ndarray | None = None,
        payoff: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The simulator's decide phase at a close: breaker step, then each symbol's target.

        ``closes``/``directions`` are per symbol (NaN close: the symbol has no bar). The
        account (wallet, positions, margins) comes from the exchange; equity is
        ``wallet + sum(qty * (close - entry))``, the backtest's mark to market at the close.
        ``prob``/``payoff`` (ML strategies, per symbol): the Kelly p and b, passed as the
        backtest passes them (p only with ``risk.sizing: kelly``).
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
            np.ascontiguousarray(prob, dtype=np.float64) if prob is not None and self.kelly else self._empty,
            np.ascontiguousarray(payoff, dtype=np.float64) if payoff is not None else self._empty,
            self._empty, target, reason,
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
        {"code": int(ev.code[i]), "value": float(ev.value[i]), "bar": int(ev.bar[i])}
        for i in range(min(int(ev.n[0]), ev.code.shape[0]))
    ]
    ev.n[0] = 0
    return out
