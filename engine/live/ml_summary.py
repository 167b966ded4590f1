"""What the run log keeps of a live ML run's ensemble, as a backtest's (engine.ml.summary).

:class:`LiveMLTrace` keeps each live bar's :meth:`engine.ml.LiveEnsemble.on_bar` output per
symbol. At the run's end :func:`live_ensemble_result` folds them into an
:class:`engine.ml.EnsembleResult` over the bars the live run predicted (not the warm-up), so
the backtest's own writers give ``runs.metrics['models']`` (:func:`engine.ml.summary.models_metrics`),
``runs.metrics['ml']`` (:func:`engine.ml.summary.ml_info`) and the ML ``system_events``
(:func:`engine.ml.summary.event_rows`).

Labels come from the live closes (:func:`engine.ml.labels.make_labels`, as the batch path):
the label of bar t needs the close of bar t + horizon, so the last ``horizon`` live bars have
none at the run's end and are not scored; each score's ``n`` counts only the bars with a
known label (and, after ``drop_flat``, a non-flat one).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from engine.ml.labels import make_labels
from engine.ml.results import SymbolResult, assemble_result
from engine.ml.summary import event_rows, ml_info, models_metrics


class LiveMLTrace:
    """Per-symbol live ML outputs and timings (fed by :class:`engine.live.decider.LiveDecider`)."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.outs: dict[str, list[dict[str, Any]]] = {s: [] for s in symbols}
        self.closes: dict[str, list[float]] = {s: [] for s in symbols}
        self.train_seconds = 0.0  # warm-up walk-forward + the bars that rolled a fold
        self.predict_seconds = 0.0  # the other live bars

    def add(self, symbol: str, close: float, out: dict[str, Any], seconds: float, *,
            rolled: bool) -> None:
        self.outs[symbol].append(out)
        self.closes[symbol].append(float(close))
        if rolled:
            self.train_seconds += seconds
        else:
            self.predict_seconds += seconds

    @staticmethod
    def clock() -> float:
        return time.perf_counter()


def _symbol_result(symbol: str, outs: list[dict[str, Any]], closes: list[float],
                   pipe: Any) -> Any:

    names = list(pipe.names)

    def col(key: str, dtype: Any = np.float64) -> np.ndarray:
        return np.array([o[key] for o in outs], dtype=dtype)

    def mat(key: str) -> np.ndarray:
        return np.array([np.asarray(o[key], dtype=np.float64) for o in outs]).reshape(len(outs), len(names))

    _, y = make_labels(np.asarray(closes, dtype=np.float64), pipe.ml.labels)
    return SymbolResult(
        symbol=symbol,
        open_time=col("open_time", np.int64),
        model_names=names,
        raw=mat("raw"),
        probs=mat("probs"),
        fold=col("fold", np.int32),
        versions={n.name: [pipe.version(n, f) for f in pipe.sched.folds] for n in pipe.ml.models},
        p=col("p"),
        agreement=col("agreement"),
        disagreement=col("disagreement"),
        entropy=col("entropy"),
        uncertainty=col("uncertainty"),
        payoff_ratio=col("payoff_ratio"),
        expected_value=col("expected_value"),
        expected_edge_bps=col("expected_edge_bps"),
        base_weight=col("base_weight"),
        direction=col("direction", np.int8),
        gate_code=col("gate_code", np.int8),
        weights=mat("weights"),
        labels=y,
    )


def live_ensemble_result(trace: LiveMLTrace, ensembles: dict[str, Any]) -> Any:
    """An :class:`engine.ml.EnsembleResult` over the live bars (None if no symbol had one).

    Fold scores, calibration and contributions are computed by the batch path's own
    ``engine.ml.results.score_results`` over the live bars; ``events`` are the pipelines' (models
    not trained for a fold at warm-up or at a live roll, remote models' failures);
    ``n_fitted``/``n_reused`` count the pipelines' fit plans."""

    for ens in ensembles.values():
        ens.settle()  # a fold being fitted ahead (after the last bar) is done first
    results = {s: _symbol_result(s, outs, trace.closes[s], ensembles[s].pipe)
               for s, outs in trace.outs.items() if outs}
    if not results:
        return None
    pipes = {s: ensembles[s].pipe for s in results}
    plans = [plan for pipe in pipes.values() for plan in pipe.plans.values()]
    return assemble_result(
        results, pipes, n_fitted=sum(1 for p in plans if p.task is not None),
        n_reused=sum(1 for p in plans if p.task is None and p.version is not None),
        train_seconds=trace.train_seconds, predict_seconds=trace.predict_seconds)


def live_ml_summary(trace: LiveMLTrace, ensembles: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``({'models': ..., 'ml': ...}, system_events rows)`` of a live ML run (``({}, [])``
    when no live bar was predicted). ``ml`` adds ``scored_bars``: per symbol, the live bars
    whose label was known at the run's end, of the bars predicted."""

    res = live_ensemble_result(trace, ensembles)
    if res is None:
        return {}, []
    info = ml_info(res)
    info["scored_bars"] = {
        s: {"predicted": int((r.fold >= 0).sum()),
            "labelled": int(((r.fold >= 0) & np.isfinite(r.labels)).sum()),
            "horizon": int(ensembles[s].pipe.ml.labels.horizon)}
        for s, r in res.symbols.items()
    }
    return {"models": models_metrics(res), "ml": info}, event_rows(res)
