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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError
from engine.ml.ensemble import FusionRunner
from engine.ml.fold_executor import make_fold_executor
from engine.ml.folds import FitPlan, fold_index
from engine.ml.fusion_nb import aux_before_cutoff
from engine.ml.inputs import REGIME, as_sections, prepare_symbol
from engine.ml.results import EnsembleResult, SymbolResult, assemble_result, map_symbols
from engine.ml.symbol_pipeline import SymbolPipeline, pooled_map
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
    """Every symbol's raw predictions, then fold by fold (a fold index is the same cutoff for
    every symbol): each symbol's calibrators, and meanwhile in a thread of its own the
    cutoff's pool map, fitted on every symbol's out-of-fold bars known there
    (:func:`engine.ml.symbol_pipeline.pooled_map`); then each symbol's fusion over its bars of
    the fold. Up to ``training.workers`` symbols at once in threads
    (the tree, MLP and fusion kernels and XGBoost release the GIL); the results do not
    depend on it, and no model silences warnings while predicting."""
    syms = list(pipes)
    step(progress, "predicting", 0, len(syms))
    runs = dict(zip(syms, map_symbols(lambda s: _SymbolRun(pipes[s]), syms, workers), strict=True))
    with ThreadPoolExecutor(1, thread_name_prefix="pool-map") as fitter:
        for k in sorted({f.index for pipe in pipes.values() for f in pipe.sched.folds}):
            members = [s for s in syms if k in runs[s].folds]
            parts = [runs[s].pool_rows(k) for s in members]
            # the members' calibrators do not read the map: fitted while it is (map_symbols
            # runs each lambda before it returns, so the loop variables are the current ones)
            fit = fitter.submit(pooled_map, k, [pipes[s] for s in members], parts)
            map_symbols(lambda s: runs[s].calibrate_fold(k), members, workers)  # noqa: B023
            pm = fit.result()
            map_symbols(lambda s: runs[s].fuse_fold(k, pm), members, workers)  # noqa: B023
    out = {}
    for i, s in enumerate(syms):
        out[s] = runs[s].result()
        step(progress, "predicting", i + 1, len(syms))
    return out


class _SymbolRun:
    """One symbol's arrays while the batch run calibrates and fuses its folds in order: every
    fold's raw predictions first (they do not depend on calibration; one call per model and
    fold, each model's column sorted once for isotonic), then :meth:`fuse_fold` per fold
    (fold k's maps read only folds < k; its meta-learner and pool map read the bayesian pool
    of the bars before it)."""

    def __init__(self, pipe: SymbolPipeline) -> None:
        sd, sched = pipe.sd, pipe.sched
        n, m = sd.open_time.shape[0], len(pipe.names)
        self.pipe = pipe
        self.fold_of = fold_index(sd.open_time, sched)
        self.folds = {fold.index: fold for fold in sched.folds}
        self.rows = {fold.index: np.flatnonzero(self.fold_of == fold.index) for fold in sched.folds}
        self.raw = np.full((n, m), np.nan)
        self.cal = np.full((n, m), np.nan)
        self.aux = aux_before_cutoff(n, m)  # each fold's rows are set at its cutoff
        self.versions: dict[str, list[str | None]] = {name: [] for name in pipe.names}
        for fold in sched.folds:
            self.raw[self.rows[fold.index]] = pipe.predict_fold(fold, self.rows[fold.index])
        iso = pipe.ml.ensemble.calibration == "isotonic"
        self.order = np.argsort(self.raw, axis=0) if iso else None
        self.runner = pipe.runner = FusionRunner(pipe.names, pipe.ml.ensemble, pipe.ml.labels)
        self.parts: list[dict[str, np.ndarray]] = []
        self.pool = np.full(n, np.nan)
        self.pool_x = np.full(n, np.nan)
        rows0 = self.rows[sched.folds[0].index] if sched.folds else np.empty(0, np.int64)
        first = int(rows0[0]) if rows0.size else n
        if first:
            self._fuse(np.arange(first))

    def _fuse(self, rows: np.ndarray) -> None:
        sd = self.pipe.sd
        self.parts.append(self.runner.run(sd.close[rows], self.cal[rows], self.aux[rows]))
        self.pool[rows] = self.parts[-1]["pool_p"]
        self.pool_x[rows] = self.parts[-1]["pool_x"]

    def pool_rows(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sd = self.pipe.sd
        return self.pipe.pool_rows(self.folds[k], sd.open_time, sd.y, self.fold_of, self.pool_x)

    def calibrate_fold(self, k: int) -> None:
        """Fit fold ``k``'s calibrators at its cutoff and calibrate its bars."""
        pipe, fold, rows = self.pipe, self.folds[k], self.rows[k]
        pipe.calibrate(fold, self.raw, self.cal, self.fold_of, self.order, self.pool)
        for j, name in enumerate(pipe.names):
            self.cal[rows, j] = pipe.calibrators[(fold.index, name)](self.raw[rows, j])

    def fuse_fold(self, k: int, pool_map: tuple[float, float]) -> None:
        """Fuse fold ``k``'s bars with the run's pool map for its cutoff."""
        pipe, fold, rows = self.pipe, self.folds[k], self.rows[k]
        pipe.pool_maps[k] = pool_map
        self.aux[rows] = pipe.aux(fold.index, self.cal[rows], pipe.sd.X[REGIME][rows])
        for node in pipe.ml.models:
            self.versions[node.name].append(pipe.version(node, fold))
        if rows.size:
            self._fuse(rows)

    def result(self) -> SymbolResult:
        sd, parts = self.pipe.sd, self.parts
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        return SymbolResult(
            symbol=sd.symbol,
            open_time=sd.open_time,
            model_names=self.pipe.names,
            raw=self.raw,
            probs=self.cal,
            fold=self.fold_of,
            versions=self.versions,
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
