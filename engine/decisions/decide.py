"""Features -> signals (or the ML ensemble) -> decisions: the part live mode shares.

Everything here reads the past only: the features of bar t use bars <= t, a rule's value at
bar t reads its ``lookback`` rows ending at t, and the rule state machine folds forward. So
the decisions of a run over the first k bars are exactly the first k decisions of the full
run (prefix invariance, tested in ``tests/backtest``).

Rules become signals through :func:`engine.decisions.signals.rule_signals` and a state
through the rule state machine: the batch path folds :func:`engine.strategy.rules_nb.rule_bar_nb`
over a symbol's whole history; live mode (:mod:`engine.live.decider`) evaluates the same
rules over its last ``graph.lookback`` rows and steps the same kernel once per bar.

ML slot: when the strategy has ``models:``, :func:`decide` hands the features to
:func:`engine.decisions.ml_slot.decide` (imported when needed: it loads the model
libraries), which returns
a :class:`Decisions` (direction, probability, the ensemble columns and the model
predictions, and on ``Decisions.ml`` the ensemble result whose metrics and events the
runner logs); risk and execution are then the same as for rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from engine.decisions.signals import event_rules, rule_signals
from engine.decisions.types import Decisions
from engine.features import compute
from engine.progress import Progress, step
from engine.strategy.expr import PRICE_COLUMNS
from engine.strategy.graph import StrategyGraph
from engine.strategy.rules_nb import rule_fold_nb

if TYPE_CHECKING:
    import polars as pl

    from engine.decisions.market import Market


def compute_features(
    graph: StrategyGraph, candles: pl.DataFrame, funding: pl.DataFrame | None
) -> pl.DataFrame:
    """The graph's feature columns over one symbol's own bars (``open_time`` + one per feature)."""
    import polars as pl

    names = list(graph.feature_columns)
    if not names:
        return candles.select(pl.col("open_time"))
    return compute(candles, names, funding=funding, interval=graph.interval)


def rule_columns(candles: pl.DataFrame, features: pl.DataFrame) -> dict[str, np.ndarray]:
    """Columns a rule may read: the features and the candle prices, as float64 arrays."""
    cols = {c: features[c].to_numpy() for c in features.columns if c != "open_time"}
    for c in PRICE_COLUMNS:
        if c in candles.columns and c not in cols:
            cols[c] = candles[c].cast(float).to_numpy()
    return cols


def decide_symbol(
    graph: StrategyGraph, columns: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Rule decisions over one symbol's consecutive bars: ``(state int8[n], direction float64[n])``.

    ``columns`` holds equal-length arrays ending at the latest bar (see :func:`rule_columns`).
    """
    le, lx, se, sx = rule_signals(graph, columns)
    has_bar = np.ones(le.shape[0], dtype=np.bool_)
    return rule_fold_nb(le, lx, se, sx, has_bar, event_rules(graph))


def decide(
    graph: StrategyGraph,
    market: Market,
    *,
    results_dir: Any = None,
    progress: Progress | None = None,
    features: dict[str, pl.DataFrame] | None = None,
) -> tuple[Decisions, dict[str, pl.DataFrame]]:
    """Features for every symbol, then decisions on the market grid.

    ``features`` (each symbol's frame of the graph's feature columns over its own bars)
    skips computing them: sweeps compute each distinct feature once for the whole grid.
    Returns the decisions and each symbol's features frame (over its own bars).
    """
    if features is None:
        features = {}
        for sym in market.symbols:
            step(progress, "features", len(features), len(market.symbols))
            features[sym] = compute_features(graph, market.candles[sym], market.funding.get(sym))
    if graph.config.models is not None:
        from engine.decisions.ml_slot import decide as ml_decide  # loads the ML stack

        return ml_decide(
            graph, market, features, results_dir=results_dir, progress=progress
        ), features
    n, s = market.n_bars, len(market.symbols)
    state = np.zeros((n, s), dtype=np.int8)
    direction = np.full((n, s), np.nan)
    for j, sym in enumerate(market.symbols):
        step(progress, "signals", j, len(market.symbols))
        st, d = decide_symbol(graph, rule_columns(market.candles[sym], features[sym]))
        rows = market.rows[sym]
        state[rows, j] = st
        direction[rows, j] = d
        # a grid bar the symbol lacks keeps the previous state (no decision there)
        missing = ~market.has_bar[:, j]
        if missing.any():
            state[:, j] = _ffill_state(state[:, j], market.has_bar[:, j])
    conf = np.where(market.has_bar, 1.0, np.nan)
    return Decisions(
        state=state, direction=direction, probability=np.full((n, s), np.nan), confidence=conf
    ), features


def _ffill_state(state: np.ndarray, has: np.ndarray) -> np.ndarray:
    out = state.copy()
    last = 0
    for i in range(out.shape[0]):
        if has[i]:
            last = out[i]
        else:
            out[i] = last
    return out
