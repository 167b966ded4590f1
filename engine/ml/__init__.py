"""The ML stage of the strategy graph: features -> models -> calibration -> fusion -> gate.

Batch entry (the backtest)::

    run_ensemble(config, frames_by_symbol, features_by_symbol, *, run_start=None,
                 results_dir=None, progress=None, executor=None, interval_ms=None)
        -> EnsembleResult

* ``config``: an :class:`engine.strategy.ml_config.MLSections`, or a strategy config with the optional
  sections ``labels``, ``training``, ``models``, ``ensemble`` (defined in
  :mod:`engine.strategy.ml_config`).
* ``frames_by_symbol``: symbol -> polars candles (``open_time`` ms, ``close``, ...) on a regular
  bar grid; ``features_by_symbol``: symbol -> polars features (``open_time`` + Float64 columns,
  NaN until warm), row-aligned with the candles.
* ``run_start``: the run's first bar open time (ms; default the first bar); the walk-forward
  schedule is anchored there (:mod:`engine.ml.walkforward`).
* ``results_dir``: models are saved and reused under ``<results_dir>/models/<version>/``.
* ``progress``: an :class:`engine.progress.Progress` told ``("training folds", done, total)``
  as fits finish and ``("predicting", done, symbols)``; the ML stage draws nothing itself.

``EnsembleResult.symbols[sym]`` is a :class:`SymbolResult` of arrays aligned with the symbol's
bars: ``raw``/``probs`` (n, M) raw and calibrated P(up) per model (NaN = abstain),
``model_version(name)`` per bar, ``p`` (fused calibrated P(up)), ``confidence``
(``max(p, 1-p)``), ``agreement``, ``disagreement``, ``entropy``, ``uncertainty``,
``payoff_ratio`` (b), ``expected_value`` (``q*b - (1-q)``), ``direction`` (-1/0/1 after the
gate), ``gate_code``/``gate_reason`` (why flat), ``weights`` (each model's share of the fused
p). ``EnsembleResult.metrics`` holds per fold and pooled (fold -1) AUC, log loss, Brier, ECE
and hit rate per model and for the ensemble, on out-of-fold bars; ``calibration`` the
reliability curve; ``contributions`` each model's mean weight; ``events`` what went wrong
(a model not trained for a fold, a remote model that abstained). ``score_results(results,
pipelines)`` computes those three frames for any set of symbol results (live mode scores its
own bars with it).

Risk: the risk manager (engine.sim) takes ``confidence`` as the Kelly probability of the
chosen side and ``payoff_ratio`` as b, per bar per symbol.

The backtest runner's ML slot is :func:`engine.decisions.ml_slot.decide` (above this package:
it puts an :class:`EnsembleResult` on the market grid as ``engine.decisions.Decisions``). Live mode uses
:class:`LiveEnsemble`: the same fold models, calibrators and fusion kernel, one closed bar
at a time.

Modules: ``inputs`` (candles and features -> arrays, labels), ``walkforward`` (schedule,
versions, fit tasks, executors), ``folds`` (each fold's rows and model versions),
``symbol_pipeline`` (one symbol's fits, predictions, calibrators), ``pipeline``
(:func:`run_ensemble`), ``results`` (:class:`SymbolResult`, :class:`EnsembleResult`,
:func:`score_results`), ``live`` (:class:`LiveEnsemble`), ``summary`` (what the run log keeps);
kernels: ``fusion_nb``, ``isotonic_nb``, ``models/trees_nb``.
"""

from __future__ import annotations

from typing import Any

from engine.strategy.ml_config import (
    EnsembleConfig,
    GateConfig,
    LabelsConfig,
    MLSections,
    ModelList,
    ModelNode,
    TrainingConfig,
)

_LAZY = {
    "run_ensemble": "engine.ml.pipeline",
    "EnsembleResult": "engine.ml.results",
    "SymbolResult": "engine.ml.results",
    "score_results": "engine.ml.results",
    "LiveEnsemble": "engine.ml.live",
}


def __getattr__(name: str) -> Any:
    # numba, sklearn and the model libraries load only when the ML stage runs, so importing
    # engine.strategy.ml_config (the strategy schema does) stays cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.ml' has no attribute {name!r}")


__all__ = [
    "EnsembleConfig",
    "EnsembleResult",
    "GateConfig",
    "LiveEnsemble",
    "LabelsConfig",
    "MLSections",
    "ModelList",
    "ModelNode",
    "SymbolResult",
    "TrainingConfig",
    "run_ensemble",
    "score_results",
]
