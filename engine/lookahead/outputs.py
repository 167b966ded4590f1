"""One run of a strategy graph, kept as named per-bar columns: features, model predictions,
decisions (:func:`run_outputs`).

The run is the backtest's own path (:func:`engine.decisions.market.load_graph_market`,
:func:`engine.decisions.decide.decide`, :func:`engine.backtest.runner.simulate_graph`), not
logged. Its outputs become :class:`Column` s, each over one symbol's bars:

* ``feature``: every column of the graph's features frame (the symbol's own bars);
* ``prediction`` (ML graphs): per member ``raw[m]``, ``calibrated[m]``, ``weight[m]`` and
  ``version[m]``, and every per-bar array of the fused result (``p``, ``agreement``,
  ``uncertainty``, ``payoff_ratio``, ``expected_value``, ``direction``, ``gate_code``,
  ``fold``, ...), except the realised ``labels`` (which a shorter run cannot know yet);
* ``decision``: on the market grid, ``action`` (the state), ``direction``, ``target`` (the
  risk manager's target quantity), ``confidence``, ``probability``, the ensemble's extra
  columns (``ensemble.<name>``), and the account's ``equity`` (symbol ``*``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.backtest.runner import simulate_graph
from engine.decisions.decide import decide
from engine.decisions.market import load_graph_market
from engine.features import FUNDING_PERIOD_MS
from engine.timeutil import interval_ms

if TYPE_CHECKING:
    import os

    from engine.strategy.graph import StrategyGraph

#: column kinds, in report order
KINDS = ("feature", "prediction", "decision")
#: SymbolResult arrays that are not outputs of the graph (a truncated run cannot know labels)
NOT_OUTPUTS = frozenset({"open_time", "labels"})
#: the account-wide columns' symbol
ACCOUNT = "*"


@dataclass(frozen=True, eq=False)
class Column:
    """One output over one symbol's bars: ``open_time`` int64[n] and ``values`` [n]."""

    kind: str
    symbol: str
    name: str
    open_time: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, eq=False)
class GraphOutputs:
    """Every compared output of one run, and the run's grid."""

    open_time: np.ndarray
    columns: dict[tuple[str, str, str], Column]
    #: the first grid bar whose decisions depend on something beyond warm-up: the first bar
    #: with a model prediction (ML graphs) or with every feature defined (rule graphs)
    first_live_bar: int
    #: grid bars where a cut is most likely to expose a lookahead, by kind (:func:`edge_bars`)
    edges: dict[str, np.ndarray]


def run_outputs(
    graph: StrategyGraph,
    *,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
) -> GraphOutputs:
    """Run ``graph`` like a backtest (nothing logged) and collect its outputs."""
    market = load_graph_market(graph, store=store)
    dec, features = decide(graph, market, results_dir=results)
    sim = simulate_graph(graph, market, dec, features)
    t = market.open_time
    cols: dict[tuple[str, str, str], Column] = {}

    def add(kind: str, symbol: str, name: str, ot: np.ndarray, values: Any) -> None:
        cols[(kind, symbol, name)] = Column(kind, symbol, name, ot, np.asarray(values))

    first = t.shape[0]
    for sym, frame in features.items():
        ot = frame["open_time"].to_numpy()
        for name in frame.columns:
            if name != "open_time":
                add("feature", sym, name, ot, frame[name].to_numpy())
        if dec.ml is None:
            first = min(first, _first_defined(frame, market.rows[sym]))
    if dec.ml is not None:
        for sym, r in dec.ml.symbols.items():
            first = min(first, _prediction_columns(add, sym, r, market.rows[sym]))
    grid = {
        "action": dec.state,
        "direction": dec.direction,
        "target": sim.target_qty,
        "confidence": dec.confidence,
        "probability": dec.probability,
        **{f"ensemble.{k}": v for k, v in dec.extra.items()},
    }
    for j, sym in enumerate(market.symbols):
        for name, arr in grid.items():
            add("decision", sym, name, t, arr[:, j])
    add("decision", ACCOUNT, "equity", t, sim.equity)
    edges = edge_bars(graph, t, dec.ml)
    return GraphOutputs(open_time=t, columns=cols, first_live_bar=int(first), edges=edges)


def edge_bars(graph: StrategyGraph, open_time: np.ndarray, ml: Any) -> dict[str, np.ndarray]:
    """Grid bars at which a run's end meets an event a lookahead would read past, by kind:
    ``funding`` (the bar's close is a funding time; funding on), ``<tf> close`` (the bar's
    close completes a higher-timeframe bar) and, for ML graphs, ``fold cutoff`` (each fold's
    cutoff bar and the ``horizon`` bars after it, where the labels of the rows just before
    the cutoff are not known yet). Each sorted; kinds without bars left out."""
    d = graph.config.data
    close = open_time + interval_ms(d.interval)
    out: dict[str, np.ndarray] = {}
    if d.funding:
        out["funding"] = np.flatnonzero(close % FUNDING_PERIOD_MS == 0)
    for tf in d.higher_timeframes:
        out[f"{tf} close"] = np.flatnonzero(close % interval_ms(tf) == 0)
    if ml is not None:
        hits = np.zeros(open_time.shape[0], dtype=np.bool_)
        for sched in ml.schedule.values():
            for fold in sched.folds:
                i = int(np.searchsorted(open_time, fold.cutoff))
                hits[i : i + sched.horizon + 1] = True
        out["fold cutoff"] = np.flatnonzero(hits)
    return {k: v for k, v in out.items() if v.size}


def _first_defined(frame: Any, rows: np.ndarray) -> int:
    """Grid row of the symbol's first bar with every feature defined (its row count if none)."""
    names = [c for c in frame.columns if c != "open_time"]
    if not names or not rows.size:
        return int(rows[0]) if rows.size else 0
    x = frame.select(names).to_numpy().astype(np.float64)
    ok = np.flatnonzero(~np.isnan(x).any(axis=1))
    return int(rows[ok[0]]) if ok.size else int(rows[-1]) + 1


def _prediction_columns(add: Any, sym: str, r: Any, rows: np.ndarray) -> int:
    """Add one ML symbol result's columns; return the grid row of its first prediction."""
    n = r.open_time.shape[0]
    ot = r.open_time
    for f in dataclasses.fields(r):
        if f.name in NOT_OUTPUTS:
            continue
        v = getattr(r, f.name)
        if not isinstance(v, np.ndarray) or v.shape[:1] != (n,):
            continue
        if v.ndim == 1:
            add("prediction", sym, f.name, ot, v)
        elif v.ndim == 2 and v.shape[1] == len(r.model_names):
            label = {"raw": "raw", "probs": "calibrated", "weights": "weight"}.get(f.name, f.name)
            for j, m in enumerate(r.model_names):
                add("prediction", sym, f"{label}[{m}]", ot, v[:, j])
    for m in r.model_names:
        add("prediction", sym, f"version[{m}]", ot, r.model_version(m))
    predicted = np.flatnonzero(r.fold >= 0)
    return int(rows[predicted[0]]) if predicted.size else int(rows[-1]) + 1 if rows.size else 0
