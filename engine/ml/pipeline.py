"""The ML stage's batch run: :func:`run_ensemble` (what the backtest's ML slot calls).

For every symbol: inputs (:mod:`engine.ml.inputs`), the walk-forward schedule and fold plan
(:mod:`engine.ml.walkforward`, :mod:`engine.ml.folds`), the fits of every version not saved
yet (in the executor), then per symbol the predictions, calibrators and fusion
(:class:`engine.ml.symbol_pipeline.SymbolPipeline`), and the out-of-fold scores
(:func:`engine.ml.results.score_results`). :class:`engine.ml.live.LiveEnsemble` is the live
counterpart built from the same pieces. See :mod:`engine.ml` for the contract.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError
from engine.ml.ensemble import FusionRunner
from engine.ml.fold_executor import make_fold_executor
from engine.ml.folds import FitPlan, fold_index
from engine.ml.inputs import REGIME, as_sections, prepare_symbol
from engine.ml.results import EnsembleResult, SymbolResult, assemble_result
from engine.ml.symbol_pipeline import SymbolPipeline
from engine.ml.walkforward import FoldExecutor, fit_task, make_schedule
from engine.paths import results_dir as _results_dir
from engine.progress import Progress, step
from engine.strategy.ml_config import MLSections


def run_ensemble(
    config: Any,
    frames_by_symbol: Mapping[str, Any],
    features_by_symbol: Mapping[str, Any],
    *,
    run_start: int | None = None,
    results_dir: str | Path | None = None,
    progress: Progress | None = None,
    executor: FoldExecutor | None = None,
    interval_ms: int | None = None,
) -> EnsembleResult:
    """Run the ML stage over whole histories (the batch path). See :mod:`engine.ml`.

    ``progress`` (:mod:`engine.progress`) hears ``("training folds", done, total)`` as the
    fits finish and ``("predicting", done, symbols)`` per symbol; nothing is drawn here.
    """
    ml = as_sections(config)
    models_dir = _results_dir(results_dir) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    pipes = _pipelines(ml, frames_by_symbol, features_by_symbol, models_dir, run_start, interval_ms)
    t0 = time.perf_counter()
    plans = [p for pipe in pipes.values() for p in pipe.plan(list(pipe.sched.folds))]
    n_fitted = _fit(plans, executor or make_fold_executor(ml.training), progress)
    n_reused = sum(1 for p in plans if p.version is not None and p.task is None)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = _predict_symbols(pipes, ml.training.workers, progress)
    return assemble_result(results, pipes, n_fitted=n_fitted, n_reused=n_reused,
                           train_seconds=train_s, predict_seconds=time.perf_counter() - t1,
                           workers=ml.training.workers)


def _pipelines(
    ml: MLSections,
    frames_by_symbol: Mapping[str, Any],
    features_by_symbol: Mapping[str, Any],
    models_dir: Path,
    run_start: int | None,
    interval_ms: int | None,
) -> dict[str, SymbolPipeline]:
    """One :class:`SymbolPipeline` per symbol: its inputs checked and its schedule made."""
    pipes: dict[str, SymbolPipeline] = {}
    for sym in frames_by_symbol:
        if sym not in features_by_symbol:
            raise DataError(
                f"{sym}: no features were given to the ML stage",
                hint="pass features_by_symbol for every symbol in frames_by_symbol",
            )
        sd, feats = prepare_symbol(
            sym, frames_by_symbol[sym], features_by_symbol[sym], ml, interval_ms=interval_ms
        )
        start = int(sd.open_time[0]) if run_start is None else int(run_start)
        sched = make_schedule(
            run_start=start,
            last_open_time=int(sd.open_time[-1]),
            interval_ms=sd.interval_ms,
            training=ml.training,
            horizon=ml.labels.horizon,
        )
        pipes[sym] = SymbolPipeline(sd, feats, ml, sched, models_dir)
    return pipes


def _fit(plans: list[FitPlan], exe: FoldExecutor, progress: Progress | None) -> int:
    """Fit every planned version that is not saved yet; returns how many were fitted."""
    todo = [p.task for p in plans if p.task is not None]
    if not todo:
        return 0
    finished = 0
    step(progress, "training folds", 0, len(todo))

    def done(_i: int, _meta: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        step(progress, "training folds", finished, len(todo))

    exe.map(fit_task, todo, on_done=done)
    return len(todo)


def _predict_symbols(pipes: dict[str, SymbolPipeline], workers: int,
                     progress: Progress | None) -> dict[str, SymbolResult]:
    """Each symbol's :func:`_predict_symbol`, up to ``training.workers`` symbols at once in
    threads (the tree, MLP and fusion kernels and XGBoost release the GIL; nothing is shared
    between symbols, so the results do not depend on it; no model silences warnings while
    predicting)."""
    step(progress, "predicting", 0, len(pipes))
    k = max(1, min(int(workers), len(pipes)))
    if k == 1:
        out = {}
        for i, (sym, pipe) in enumerate(pipes.items()):
            out[sym] = _predict_symbol(pipe)
            step(progress, "predicting", i + 1, len(pipes))
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(k, thread_name_prefix="predict") as pool:
        futs = {sym: pool.submit(_predict_symbol, pipe) for sym, pipe in pipes.items()}
        out = {}
        for i, (sym, fut) in enumerate(futs.items()):
            out[sym] = fut.result()
            step(progress, "predicting", i + 1, len(pipes))
    return out


def _predict_symbol(pipe: SymbolPipeline) -> SymbolResult:
    """Every fold's raw predictions, then calibration fold by fold, then the fusion fold."""
    sd, sched = pipe.sd, pipe.sched
    n, m = sd.open_time.shape[0], len(pipe.names)
    fold_of = fold_index(sd.open_time, sched)
    raw = np.full((n, m), np.nan)
    cal = np.full((n, m), np.nan)
    aux = np.zeros((n, m + 4))
    aux[:, 0] = np.nan  # no base rate before the first cutoff: the fusion abstains there
    aux[:, 1] = np.nan
    versions: dict[str, list[str | None]] = {name: [] for name in pipe.names}
    fold_rows_ = [np.flatnonzero(fold_of == fold.index) for fold in sched.folds]
    # raw predictions do not depend on calibration: predict every fold (one call per model
    # and fold), sort each model's column once (isotonic), then calibrate fold by fold (fold
    # k's maps read only folds < k) and fold the fusion kernel over the fold's bars (fold k's
    # meta-learner reads the bayesian pool of the bars before it)
    for fold, rows in zip(sched.folds, fold_rows_, strict=True):
        raw[rows] = pipe.predict_fold(fold, rows)
    iso = pipe.ml.ensemble.calibration == "isotonic"
    order = np.argsort(raw, axis=0) if iso else None
    runner = FusionRunner(pipe.names, pipe.ml.ensemble, pipe.ml.labels)
    pipe.runner = runner
    parts: list[dict[str, np.ndarray]] = []
    pool = np.full(n, np.nan)
    first = int(fold_rows_[0][0]) if fold_rows_ and fold_rows_[0].size else n
    if first:
        parts.append(runner.run(sd.close[:first], cal[:first], aux[:first]))
        pool[:first] = parts[-1]["pool_p"]
    for fold, rows in zip(sched.folds, fold_rows_, strict=True):
        pipe.calibrate(fold, raw, cal, fold_of, order, pool)
        for j, name in enumerate(pipe.names):
            cal[rows, j] = pipe.calibrators[(fold.index, name)](raw[rows, j])
        aux[rows] = pipe.aux(fold.index, cal[rows], sd.X[REGIME][rows])
        for node in pipe.ml.models:
            versions[node.name].append(pipe.version(node, fold))
        if rows.size:
            parts.append(runner.run(sd.close[rows], cal[rows], aux[rows]))
            pool[rows] = parts[-1]["pool_p"]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return SymbolResult(
        symbol=sd.symbol,
        open_time=sd.open_time,
        model_names=pipe.names,
        raw=raw,
        probs=cal,
        fold=fold_of,
        versions=versions,
        p=out["p"],
        agreement=out["agreement"],
        disagreement=out["disagreement"],
        entropy=out["entropy"],
        uncertainty=out["uncertainty"],
        payoff_ratio=out["payoff_ratio"],
        expected_value=out["expected_value"],
        expected_edge_bps=out["expected_edge_bps"],
        base_weight=out["base_weight"],
        pool_p=out["pool_p"],
        pool_x=out["pool_x"],
        direction=out["direction"],
        gate_code=out["gate_code"],
        weights=out["weights"],
        labels=sd.y,
    )
