"""The ML slot of the strategy graph: :func:`decide` (called by engine.decisions.decide).

It runs :func:`engine.ml.run_ensemble` over each symbol's own bars and features and puts the
result on the market grid as a :class:`engine.decisions.Decisions`:

* ``state`` / ``direction``: the gated side (+1 long, -1 short, 0 flat; NaN direction where a
  symbol has no bar),
* ``probability``: the probability that the chosen side is right, ``max(p, 1 - p)`` of the
  fused calibrated P(up) (the risk manager's Kelly ``p``); ``confidence`` the same,
* ``extra``: ``probability`` (the fused calibrated P(up), logged as
  ``ensemble_decisions.probability``), ``agreement``, ``uncertainty``, ``expected_value``
  (ensemble_decisions columns) and ``payoff`` (the recent payoff ratio b, the risk manager's
  Kelly ``b``),
* ``predictions``: the ``model_predictions`` rows (raw and calibrated P(up), the model's fusion
  weight, model version, the realised label where known),
* ``ml``: the :class:`engine.ml.EnsembleResult` itself (fold metrics, calibration curve,
  contributions, events), handed to the runner explicitly: it writes them to
  ``runs.metrics['models']`` / ``runs.metrics['ml']`` and ``system_events``
  (:mod:`engine.ml.summary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.decisions.records import table_frame
from engine.decisions.types import Decisions
from engine.ml import run_ensemble
from engine.ml.models.external import remote_endpoints
from engine.ml.results import map_symbols
from engine.progress import Progress


def decide(
    graph: Any,
    market: Any,
    features: dict[str, Any],
    *,
    results_dir: Any = None,
    progress: Progress | None = None,
) -> Any:
    """Decisions of an ML strategy on the market grid (see the module docstring).

    ``progress`` (:mod:`engine.progress`) hears the walk-forward training and inference.
    """
    import polars as pl

    ml = graph.config.ml()
    syms = list(market.symbols)
    res = run_ensemble(
        ml,
        {s: market.candles[s] for s in syms},
        {s: features[s] for s in syms},
        run_start=int(market.open_time[0]),
        results_dir=results_dir,
        progress=progress,
    )
    endpoints = remote_endpoints(ml.models)
    n, k = market.n_bars, len(syms)
    state = np.zeros((n, k), dtype=np.int8)
    direction = np.full((n, k), np.nan)
    prob = np.full((n, k), np.nan)
    extra = {name: np.full((n, k), np.nan) for name in EXTRA}
    for j, sym in enumerate(syms):
        cols = symbol_columns(res.symbols[sym])
        rows = market.rows[sym]
        state[rows, j] = cols["state"]
        direction[rows, j] = cols["direction"]
        prob[rows, j] = cols["kelly_p"]
        for name in EXTRA:
            extra[name][rows, j] = cols[name]
        # a grid bar the symbol lacks keeps its previous state (0 before its first bar)
        has = market.has_bar[:, j]
        if not has.all():
            last = np.maximum.accumulate(np.where(has, np.arange(n), -1))
            state[:, j] = np.where(last >= 0, state[np.maximum(last, 0), j], 0)
    preds = map_symbols(lambda sym: predictions_frame(res.symbols[sym], endpoints), syms,
                        ml.training.workers)
    predictions = pl.concat(preds) if preds else None
    return Decisions(
        state=state,
        direction=direction,
        probability=prob,
        confidence=prob.copy(),
        extra=extra,
        predictions=predictions,
        ml=res,
    )


#: the ensemble columns a decision carries beyond state and probability: the fused P(up)
#: (logged as ``probability``), agreement, uncertainty, expected value and the expected net
#: edge in bps after fees and slippage (logged), and the payoff ratio b (the risk manager's
#: Kelly ``b``, not logged)
EXTRA = ("probability", "agreement", "uncertainty", "expected_value", "expected_edge_bps", "payoff")


def symbol_columns(r: Any) -> dict[str, np.ndarray]:
    """One symbol's :class:`engine.ml.SymbolResult` as decision columns over its bars: the
    gated side as ``state`` and ``direction``, ``kelly_p`` (P(the chosen side is right),
    ``max(p, 1 - p)``: the risk manager's Kelly p, also logged as ``confidence``) and
    :data:`EXTRA`. The backtest scatters them onto the market grid; live mode takes its
    one bar's."""
    d = np.asarray(r.direction)
    return {
        "state": d.astype(np.int8),
        "direction": d.astype(np.float64),
        "kelly_p": np.asarray(r.confidence, dtype=np.float64),
        "probability": r.p,
        "agreement": r.agreement,
        "uncertainty": r.uncertainty,
        "expected_value": r.expected_value,
        "expected_edge_bps": r.expected_edge_bps,
        "payoff": r.payoff_ratio,
    }


def predictions_frame(r: Any, endpoints: Mapping[str, str] | None = None) -> Any:
    """``model_predictions`` rows of one symbol: each model's prediction at each bar from
    the first cutoff on (a model that abstained at a bar predicted nothing: no row), through
    :func:`engine.decisions.records.table_frame` (a missing value is NULL).

    ``endpoints`` (``engine.ml.models.external.remote_endpoints``): the server of each remote
    member, logged as ``endpoint``. A remote member has a row at every bar from the first
    cutoff, also where it abstained (its server down, slow or refusing): probability NULL,
    weight 0, so the outage shows in the table (the reason is in ``system_events``)."""
    import polars as pl

    return pl.concat([table_frame("model_predictions", cols)
                      for cols in prediction_columns(r, endpoints)])


#: below this many rows a column of one repeated string is a list (a polars op costs ~0.1 ms)
_SMALL = 4096


def prediction_columns(r: Any, endpoints: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The columns of :func:`predictions_frame`, one dict per model (live mode's one bar:
    :func:`engine.decisions.records.table_rows` of them)."""
    import polars as pl

    def repeat(value: Any, n: int) -> Any:
        return [value] * n if n < _SMALL else pl.repeat(value, n, eager=True)

    endpoints = endpoints or {}
    sel = np.flatnonzero(r.fold >= 0)
    fold = r.fold[sel].astype(np.int64)
    label = np.asarray(r.labels, dtype=np.float64)[sel]
    parts = []
    for j, name in enumerate(r.model_names):
        server = endpoints.get(name)
        keep = np.ones(sel.size, dtype=bool) if server else ~np.isnan(r.raw[sel, j])
        rows = sel[keep]
        # one version per fold, gathered by each bar's fold (in polars for a long run: no
        # Python string per row)
        per_fold = list(r.versions[name])
        versions = ([per_fold[f] for f in fold[keep]] if rows.size < _SMALL
                    else pl.Series(per_fold, dtype=pl.Utf8).gather(fold[keep]))
        parts.append({
            "symbol": repeat(r.symbol, rows.size),
            "open_time": r.open_time[rows],
            "model": repeat(name, rows.size),
            "model_version": versions,
            "probability": r.raw[rows, j],
            "calibrated": r.probs[rows, j],
            "weight": np.where(np.isnan(r.raw[rows, j]), 0.0, r.weights[rows, j]),
            "label": label[keep],  # 0/1, NaN (unknown) -> NULL
            "endpoint": repeat(server, rows.size) if server else None,
        })
    return parts
