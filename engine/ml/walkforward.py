"""Walk-forward training: the fold schedule, purge and embargo, model versions, fold fan-out.

Schedule (anchored to the run's start, so a run that ends earlier trains exactly the same
folds up to its end). With all spans in ms and ``I`` the base interval:

* fold k's cutoff ``C_k = run_start + warmup + k * retrain_every`` (``warmup`` defaults to
  ``train_window``); fold k exists when ``C_k <= last_open_time`` (it has a bar to predict).
* fold k predicts the bars whose open time is in ``[C_k, C_{k+1})``. Such a bar closes after
  ``C_k``, so the model trained at ``C_k`` is available at its decision time.
* training rows of fold k are the bars t with

  - ``open_time[t] >= C_k - train_window``                 (window),
  - ``open_time[t] + I <= C_k - embargo``                   (embargo: the bar closed at least
    ``embargo`` before the cutoff),
  - ``open_time[t] + (h + 1) * I <= C_k``                   (purge: the label of bar t, known
    at the close of bar t+h, is known at the cutoff; every row with ``t + h`` at or past the
    cutoff's bar is dropped),
  - a finite label (flat rows dropped per ``labels.drop_flat``) and finite features,
  - ``((open_time[t] - run_start) / I) % row_stride == 0`` (optional thinning).

A model version is a hash of everything that determines it (:func:`model_version`):

* the model's *strategy hash* (:func:`model_strategy_hash`): the strategy sections that
  determine the fitted model, i.e. ``labels``, ``training`` (minus the fan-out ``workers``),
  the model node (kind and params; not its display name), the node's resolved feature list,
  the base interval and the model's symbol set (the symbols whose bars it is trained on: one,
  as models are per symbol). Risk, execution, the ensemble (calibration, fusion, gate) and
  the other symbols of the run do not change a fitted model and are left out, so a run that
  only changes them (or drops a symbol) reuses every version;
* the model library and its version (a different LightGBM may fit a different model);
* the training span (first and last training row) and the cutoff (and next cutoff);
* a digest of the raw inputs (``folds.fold_rows``): the open times of the chosen
  training rows, and the bytes of the open times, the feature matrix and the labels of the
  window's rows up to the last row a fold may train on (Prophet: the hourly closes of its
  window and the forecast times). The training rows are a deterministic function of these
  and of the hashed config, so this is as strong as hashing the training matrix itself, but
  it hashes contiguous slices in place (no copy), once per fold and feature list, and builds
  the training matrix only when a version must be fitted. Labels not yet known at the
  cutoff lie outside the slice, so live (which cannot know them) and batch agree.

Versions live under ``results/models/<version>/`` (written to a temporary folder and renamed
into place, so a failed fit leaves nothing); an existing version is reused.

Fold fits fan out through a :class:`FoldExecutor`: :class:`SerialExecutor` (default) or
:class:`ProcessPoolFoldExecutor` (``training.workers > 1``), or Ray's
(``training.executor: ray``, :mod:`engine.ml.fold_executor`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from engine.errors import ConfigError
from engine.ml.models import new_model
from engine.ml.models.base import TrainSet, write_json
from engine.strategy.ml_config import LabelsConfig, ModelNode, TrainingConfig, span_ms

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold (all times in ms)."""

    index: int
    cutoff: int
    next_cutoff: int
    train_start: int

    def predicts(self, open_time: np.ndarray) -> np.ndarray:
        """Mask of the bars this fold predicts: open time in ``[cutoff, next_cutoff)``."""
        return (open_time >= self.cutoff) & (open_time < self.next_cutoff)


@dataclass(frozen=True)
class Schedule:
    run_start: int
    interval_ms: int
    horizon: int
    train_window: int
    retrain_every: int
    embargo: int
    warmup: int
    folds: tuple[Fold, ...]


def make_schedule(
    *, run_start: int, last_open_time: int, interval_ms: int, training: TrainingConfig, horizon: int
) -> Schedule:
    """The folds of a run whose bars open in ``[run_start, last_open_time]``."""
    w = span_ms(training.train_window, interval_ms, where="training.train_window")
    every = span_ms(training.retrain_every, interval_ms, where="training.retrain_every")
    emb = span_ms(training.embargo, interval_ms, where="training.embargo")
    warm = (
        w
        if training.warmup is None
        else span_ms(training.warmup, interval_ms, where="training.warmup")
    )
    if w < (horizon + 2) * interval_ms:
        raise ConfigError(
            f"training.train_window: {training.train_window!r} is shorter than the label horizon",
            hint=f"use a window of many more than labels.horizon={horizon} bars (e.g. 30d)",
        )
    if run_start % interval_ms:
        raise ConfigError(
            f"run start {run_start} is not on a {interval_ms // 60_000}m bar boundary",
            hint="start the run at a bar open time",
        )
    folds = []
    k = 0
    while True:
        c = run_start + warm + k * every
        if c > last_open_time:
            break
        folds.append(Fold(index=k, cutoff=c, next_cutoff=c + every, train_start=c - w))
        k += 1
    return Schedule(run_start, interval_ms, horizon, w, every, emb, warm, tuple(folds))


def train_mask(
    open_time: np.ndarray, fold: Fold, schedule: Schedule, *, row_stride: int = 1
) -> np.ndarray:
    """Rows eligible for fold training by time alone (window, embargo, purge, stride)."""
    o = np.asarray(open_time, dtype=np.int64)
    i_ms = schedule.interval_ms
    m = (o >= fold.train_start) & (o + i_ms <= fold.cutoff - schedule.embargo)
    m &= o + (schedule.horizon + 1) * i_ms <= fold.cutoff
    if row_stride > 1:
        m &= ((o - schedule.run_start) // i_ms) % row_stride == 0
    return m


def config_hash(labels: LabelsConfig, training: TrainingConfig, node: ModelNode) -> str:
    """Hash of the config that determines a model (labels, training minus fan-out, the node)."""
    tr = training.model_dump(mode="json")
    tr.pop("workers", None)
    tr.pop("executor", None)
    nd = node.model_dump(mode="json")
    nd.pop("name", None)  # a display name; renaming a node does not change the model
    blob = json.dumps(
        {"labels": labels.model_dump(mode="json"), "training": tr, "node": nd}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_strategy_hash(
    labels: LabelsConfig,
    training: TrainingConfig,
    node: ModelNode,
    *,
    features: Sequence[str],
    interval_ms: int,
    symbols: Sequence[str],
) -> str:
    """The strategy hash of a model: the strategy sections that determine the fitted model.

    ``labels``, ``training`` (minus ``workers``), the node (kind, params), its resolved
    feature list, the base interval and the model's symbol set (see the module docstring).
    """
    blob = json.dumps(
        {
            "config": config_hash(labels, training, node),
            "features": list(features),
            "interval_ms": int(interval_ms),
            "symbols": sorted(symbols),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: the distribution whose version determines each trained kind's fit
LIBRARY = {
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "prophet": "prophet",
    "mlp": "scikit-learn",
}


@functools.cache
def library_version(kind: str) -> str:
    """``<distribution>==<version>`` of the library that fits ``kind`` (``kind`` if none)."""
    from importlib.metadata import PackageNotFoundError, version

    dist = LIBRARY.get(kind)
    if dist is None:
        return kind
    try:
        return f"{dist}=={version(dist)}"
    except PackageNotFoundError:
        return f"{dist}==?"


def data_digest(*arrays: np.ndarray | None) -> str:
    """Digest of arrays' dtype, shape and bytes (C-contiguous arrays are hashed in place)."""
    h = hashlib.sha256()  # hardware-accelerated (SHA-NI) where available
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.data.cast("B"))
    return h.hexdigest()[:32]


def model_version(
    *,
    strategy_hash: str,
    symbol: str,
    node: ModelNode,
    fold: Fold,
    train_span: tuple[int, int],
    digest: str,
) -> str:
    """``<kind>-<16 hex>``: hash of everything that determines the trained model."""
    blob = json.dumps(
        {
            "strategy": strategy_hash,
            "symbols": [symbol],
            "kind": node.kind,
            "library": library_version(node.kind),
            "train_span": list(train_span),
            "cutoff": fold.cutoff,
            "next_cutoff": fold.next_cutoff,
            "data": digest,
        },
        sort_keys=True,
    )
    return f"{node.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


# ------------------------------------------------------------------------ fitting and fan-out


@dataclass(frozen=True)
class FitTask:
    """Everything a worker needs to fit and save one model version (picklable)."""

    version: str
    kind: str
    params: dict[str, Any]
    seed: int
    threads: int
    train: TrainSet
    out_dir: str
    meta: dict[str, Any]


def fit_task(task: FitTask) -> dict[str, Any]:
    """Fit one model and save it under ``out_dir/<version>`` atomically; return its meta.

    Reuses the version when its ``meta.json`` already exists.
    """
    final = Path(task.out_dir) / task.version
    if (final / "meta.json").is_file():
        return json.loads((final / "meta.json").read_text())
    tmp = Path(task.out_dir) / f".{task.version}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        model = new_model(task.kind, task.params)
        model.fit(task.train, seed=task.seed, threads=task.threads)
        model.save(tmp)
        meta = dict(
            task.meta,
            version=task.version,
            kind=task.kind,
            params=task.params,
            seed=task.seed,
            threads=task.threads,
            n_train=int(task.train.y.shape[0]),
        )
        write_json(tmp / "meta.json", meta)
        try:
            os.replace(tmp, final)
        except OSError:  # another process saved the same version first: identical content
            shutil.rmtree(tmp, ignore_errors=True)
        return meta
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class FoldExecutor(Protocol):
    """Runs independent fold fits; ``on_done(i, result)`` is called as each one finishes."""

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        *,
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]: ...


class SerialExecutor:
    """Fits folds one after another in this process."""

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        *,
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        out = []
        for i, t in enumerate(tasks):
            r = fn(t)
            if on_done is not None:
                on_done(i, r)
            out.append(r)
        return out


class ProcessPoolFoldExecutor:
    """Fits folds in a pool of ``workers`` processes (``spawn``: safe with threaded libraries)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        *,
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if not tasks:
            return []
        results: list[Any] = [None] * len(tasks)
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=ctx) as pool:
            futs = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futs):
                i = futs[fut]
                results[i] = fut.result()
                if on_done is not None:
                    on_done(i, results[i])
        return results


def default_executor(workers: int) -> FoldExecutor:
    return SerialExecutor() if workers <= 1 else ProcessPoolFoldExecutor(workers)
