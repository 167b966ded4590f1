"""The strategy graph one closed bar at a time: features -> rules or the ensemble -> decisions.

:class:`LiveDecider` holds, per symbol, a :class:`engine.features.FeatureStream` and the
last ``graph.lookback`` rows of the columns the rules read (an array, newest row last).
Each closed bar steps the features, evaluates the SAME compiled rules over those rows with
:func:`engine.decisions.signals.rule_signals` (their value at the last row equals the
whole-column value, see :mod:`engine.strategy.expr`) and steps the rule state machine
(:func:`engine.strategy.rules_nb.rule_bar_nb`, the step the backtest folds); an ML strategy
steps its :class:`engine.ml.LiveEnsemble` and maps the output with the backtest's own
:func:`engine.decisions.ml_slot.symbol_columns`. The result is a one-bar
:class:`engine.decisions.Decisions` that the runner sizes with the simulator's decide phase
(:class:`engine.live.book.Book`) and logs with :mod:`engine.decisions.records`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.binance.records import Bar
from engine.decisions.ml_slot import EXTRA, prediction_columns, symbol_columns
from engine.decisions.records import table_rows
from engine.decisions.signals import event_rules, rule_signals
from engine.decisions.types import Decisions
from engine.errors import ConfigError, DataError
from engine.features import FeatureStream, warmup_bars
from engine.live.ml_summary import LiveMLTrace
from engine.ml.live import LiveEnsemble
from engine.ml.models.external import RemoteWatch, remote_endpoints
from engine.ml.results import SymbolResult
from engine.runlog import features_to_long
from engine.strategy.expr import PRICE_COLUMNS
from engine.strategy.graph import StrategyGraph
from engine.strategy.ml_config import span_ms
from engine.strategy.rules_nb import rule_bar_nb
from engine.timeutil import interval_ms

#: where the decider reports an event: (severity, component, message, data)
EventSink = Callable[[str, str, str, dict[str, Any]], None]


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
    names = list(graph.feature_columns)
    w = warmup_bars(names, interval=graph.interval) if names else 0
    need = w + max(graph.lookback, 1) - 1
    ml = graph.config.ml()
    if ml is not None:
        t = ml.training
        step = interval_ms(graph.interval)
        span = t.train_window if t.warmup is None else t.warmup
        where = "training.train_window" if t.warmup is None else "training.warmup"
        need = max(need, -(-span_ms(span, step, where=where) // step))
    return need


@dataclass(frozen=True, eq=False)
class BarDecisions:
    """What the graph decided at one close, for every symbol (graph order).

    ``decisions`` is a one-bar :class:`Decisions` (``[1, S]`` arrays, as the backtest's
    grid); ``has_bar``/``close`` say which symbols had the bar; ``atr`` is the ATR the
    simulator reads for ATR stops (NaN: none); ``ml`` each ML symbol's one-bar ensemble result
    and its members' prediction times (:meth:`LiveDecider.prediction_rows` makes the
    ``model_predictions`` rows of them, after the bar's orders); ``features`` each symbol's
    feature values at this close (graph order of the names).
    """

    open_time: int
    has_bar: np.ndarray
    close: np.ndarray
    decisions: Decisions
    atr: np.ndarray | None
    ml: list[tuple[Any, dict[str, float]]]
    features: dict[str, np.ndarray]


class LiveDecider:
    """Per-bar decisions of a strategy graph on the backtest's code path."""

    def __init__(self, graph: StrategyGraph, *, event: EventSink | None = None) -> None:
        check_live_supported(graph)
        self.event = event  # (severity, component, message, data): remote members' outages
        self.remote_watch = RemoteWatch()
        self.graph = graph
        self.symbols = tuple(graph.symbols)
        self.names = list(graph.feature_columns)
        self.streams = {s: FeatureStream(self.names, interval=graph.interval) for s in self.symbols}
        read: set[str] = set()
        for r in graph.rules.values():
            read |= set(r.names)
        self.price_cols = [c for c in PRICE_COLUMNS if c in read and c not in self.names]
        self.columns = self.names + self.price_cols
        self.window = max(graph.lookback, 1)
        # the last ``window`` rows of each symbol's rule columns (newest last) and how many are real
        self.rows = {s: np.full((self.window, len(self.columns)), np.nan) for s in self.symbols}
        self.filled = dict.fromkeys(self.symbols, 0)
        self.state = dict.fromkeys(self.symbols, 0)
        self.events = event_rules(graph) if graph.rules else False
        self.needs_funding = "funding_rate" in self.names and bool(graph.config.data.funding)
        e = graph.config.execution
        atr_stop = next((x for x in (e.stop_loss, e.take_profit) if x is not None and x.atr is not None), None)
        self.atr_col = self.names.index(f"atr_{atr_stop.atr_period}") if atr_stop is not None else None
        self.ml = graph.config.ml()
        # remote members' servers (model_predictions.endpoint; in-process members: none)
        self.endpoints = remote_endpoints(self.ml.models) if self.ml is not None else {}
        self.kelly = graph.config.risk.sizing == "kelly"
        self.history: dict[str, list[tuple[Bar, np.ndarray]]] = {s: [] for s in self.symbols}
        self.ensembles: dict[str, Any] = {}
        self.ml_trace = LiveMLTrace(self.symbols)  # live bars' ensemble outputs, for the run's end
        self.last_atr = dict.fromkeys(self.symbols, float("nan"))  # ATR at each symbol's last bar

    # ------------------------------------------------------------------ features

    def _features(self, bar: Bar) -> np.ndarray:
        out = self.streams[bar.symbol].update_values(bar.open_time, bar.open, bar.high, bar.low,
                                                     bar.close, bar.volume)
        return out.copy()  # the stream reuses its output buffer

    def add_funding(self, symbol: str, funding_time: int, rate: float) -> None:
        """Record a settled funding event of one symbol (feeds its FeatureStream)."""
        self.streams[symbol].add_funding(int(funding_time), float(rate))

    # ------------------------------------------------------------------ warm-up

    def warm_step(self, bar: Bar) -> None:
        """Feed one warm-up bar (no decision is acted on): rules step their state machine;
        an ML strategy keeps the bar and its features for :meth:`start_ml`."""
        if self.ml is None:
            self._rule_step(bar, self._features(bar))
            return
        self.history[bar.symbol].append((bar, self._features(bar)))

    def start_ml(self, *, run_start: int, results_dir: Any = None) -> None:
        """Warm up each symbol's :class:`engine.ml.LiveEnsemble` on the warm-up bars: the
        batch walk-forward anchored at ``run_start`` (the first warm-up bar, as a backtest
        from there), models trained or reused from ``<results>/models`` as the backtest does."""
        import polars as pl

        assert self.ml is not None
        t0 = self.ml_trace.clock()
        frames, feats = {}, {}
        for s in self.symbols:
            hist = self.history[s]
            if not hist:
                raise DataError(f"{s}: no warm-up bars from the venue for the ML ensemble",
                                hint="check the symbol and that the venue serves its klines")
            cols = ("open_time", "open", "high", "low", "close", "volume")
            frames[s] = pl.DataFrame(
                {c: [getattr(b, c) for b, _ in hist] for c in cols},
                schema={c: pl.Int64 if c == "open_time" else pl.Float64 for c in cols},
            )
            values = np.array([f for _, f in hist]).reshape(len(hist), len(self.names))
            feats[s] = pl.DataFrame({"open_time": frames[s]["open_time"],
                                     **{n: values[:, i] for i, n in enumerate(self.names)}})
        # one batch run over every symbol: they share each cutoff's pool map, as in a backtest
        self.ensembles = LiveEnsemble.from_histories(
            self.ml, frames, feats, run_start=run_start, results_dir=results_dir)
        for s in self.symbols:
            self.history[s] = []
        for ens in self.ensembles.values():  # a fold the first live bar opens, fitted meanwhile
            ens.fit_ahead()
        self.ml_trace.train_seconds += self.ml_trace.clock() - t0

    # ------------------------------------------------------------------ one close

    def step(self, open_time: int, bars: dict[str, Bar]) -> BarDecisions:
        """Decide at the close of bar ``open_time`` for the symbols in ``bars`` (a symbol
        without a bar keeps its state and gets no decision, as on the backtest's grid)."""
        n = len(self.symbols)
        has = np.zeros((1, n), dtype=bool)
        close = np.full((1, n), np.nan)
        state = np.zeros((1, n), dtype=np.int8)
        direction = np.full((1, n), np.nan)
        prob = np.full((1, n), np.nan)
        conf = np.full((1, n), np.nan)
        extra = {k: np.full((1, n), np.nan) for k in EXTRA} if self.ml is not None else {}
        atr = np.full((1, n), np.nan) if self.atr_col is not None else None
        ml: list[tuple[Any, dict[str, float]]] = []
        values: dict[str, np.ndarray] = {}
        for j, s in enumerate(self.symbols):
            bar = bars.get(s)
            if bar is None:
                state[0, j] = self.state[s]
                continue
            has[0, j], close[0, j] = True, bar.close
            feats = values[s] = self._features(bar)
            if atr is not None:
                self.last_atr[s] = float(feats[self.atr_col])
                atr[0, j] = self.last_atr[s]
            if self.ml is None:
                state[0, j], direction[0, j] = self._rule_step(bar, feats)
                conf[0, j] = 1.0
                continue
            cols, one = self._ml_step(bar, feats)
            state[0, j], direction[0, j] = cols["state"][0], cols["direction"][0]
            prob[0, j] = conf[0, j] = cols["kelly_p"][0]
            for k in EXTRA:
                extra[k][0, j] = cols[k][0]
            if one is not None:
                ml.append(one)
        dec = Decisions(state=state, direction=direction, probability=prob, confidence=conf,
                        extra=extra)
        return BarDecisions(open_time, has, close, dec, atr, ml, values)

    def prediction_rows(self, bd: BarDecisions) -> list[dict[str, Any]]:
        """``model_predictions`` rows of one close (the backtest's columns,
        :func:`engine.decisions.ml_slot.prediction_columns`, of each symbol's one-bar result),
        with each member's own prediction time (``latency_ms``)."""
        rows: list[dict[str, Any]] = []
        for r, per_model in bd.ml:
            for cols in prediction_columns(r, self.endpoints):
                for row in table_rows("model_predictions", cols):
                    row["latency_ms"] = float(per_model[row["model"]])
                    rows.append(row)
        return rows

    def snapshot_rows(self, bd: BarDecisions) -> list[dict[str, Any]]:
        """``snapshots`` rows of one close (one per feature per symbol with a bar), as the
        backtest's :func:`engine.decisions.records.snapshot_frame` logs them."""
        import polars as pl

        parts = [features_to_long(pl.DataFrame({"open_time": [bd.open_time],
                                                **{n: [float(v[i])] for i, n in enumerate(self.names)}}),
                                  symbol=s)
                 for s, v in bd.features.items() if self.names]
        return pl.concat(parts).to_dicts() if parts else []

    def _rule_step(self, bar: Bar, feats: np.ndarray) -> tuple[int, float]:
        buf = self.rows[bar.symbol]
        buf[:-1] = buf[1:]
        buf[-1, : len(self.names)] = feats
        for i, c in enumerate(self.price_cols):
            buf[-1, len(self.names) + i] = getattr(bar, c)
        k = self.filled[bar.symbol] = min(self.filled[bar.symbol] + 1, self.window)
        cols = {c: buf[self.window - k:, i] for i, c in enumerate(self.columns)}
        le, lx, se, sx = rule_signals(self.graph, cols)
        new, d = rule_bar_nb(self.state[bar.symbol], bool(le[-1]), bool(lx[-1]), bool(se[-1]),
                             bool(sx[-1]), self.events)
        self.state[bar.symbol] = int(new)
        return int(new), float(d)

    def _ml_step(
        self, bar: Bar, feats: np.ndarray
    ) -> tuple[dict[str, np.ndarray], tuple[Any, dict[str, float]] | None]:
        """One closed bar of an ML strategy: LiveEnsemble.on_bar, then the backtest's mapping
        of an ensemble result to decision columns; with the one-bar result and its members'
        times for :meth:`prediction_rows` (None before the first fold: no prediction)."""
        assert self.ml is not None
        ens = self.ensembles[bar.symbol]
        k = ens._fold_for(bar.open_time)
        rolled = k >= 0 and k != ens.last_fold  # the first bar of a fold
        t0 = self.ml_trace.clock()
        out = ens.on_bar(bar.open_time, bar.close, dict(zip(self.names, feats.tolist(), strict=True)))
        took = self.ml_trace.clock() - t0
        self.ml_trace.add(bar.symbol, bar.close, out, took, rolled=rolled)
        names = [m.name for m in self.ml.models]
        if ens.pipe.external and self.event is not None:  # a remote member down or back
            answered = dict(zip(names, np.isfinite(out["raw"]).tolist(), strict=True))
            for ev in self.remote_watch.step(bar.symbol, bar.open_time, ens.pipe.external, answered):
                self.event(*ev)
        r = one_bar_result(bar.symbol, out, names)
        self.state[bar.symbol] = int(r.direction[0])
        # each model's own time when the ensemble reports it, else the whole step's
        own = out.get("latency_ms")
        per_model = dict(zip(names, [took * 1000.0] * len(names) if own is None else own, strict=True))
        return symbol_columns(r), ((r, per_model) if int(out["fold"]) >= 0 else None)


def one_bar_result(symbol: str, out: dict[str, Any], model_names: list[str]) -> Any:
    """One :meth:`engine.ml.LiveEnsemble.on_bar` output as a one-bar
    :class:`engine.ml.SymbolResult`, the object the batch path maps to decisions."""
    k = int(out["fold"])
    one = np.array
    return SymbolResult(
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
        expected_edge_bps=one([out["expected_edge_bps"]]),
        direction=one([out["direction"]], dtype=np.int8),
        gate_code=one([out["gate_code"]], dtype=np.int8),
        weights=np.asarray(out["weights"], dtype=np.float64)[None, :],
        labels=one([np.nan]),  # the label of a live bar is not known at its close
    )
