"""The fold plan of one symbol: which rows each fold trains on, and which model version each
(fold, model) uses, fitted or reused.

A version is decided from the fold's rows alone (their span and a digest of the raw inputs,
:func:`engine.ml.walkforward.data_digest`); the training matrix is built only when the
version is not saved yet. See :mod:`engine.ml.walkforward` for the schedule, purge and embargo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.ml.inputs import SymbolData
from engine.ml.models.base import TrainSet
from engine.ml.walkforward import (
    FitTask,
    Fold,
    Schedule,
    data_digest,
    library_version,
    model_strategy_hash,
    model_version,
    train_mask,
)
from engine.strategy.ml_config import LabelsConfig, MLSections, ModelNode, span_ms


@dataclass
class FitPlan:
    """A model version to use for one (symbol, fold, model): fitted or reused."""

    version: str | None
    task: FitTask | None
    reason: str = ""


@dataclass(frozen=True)
class FoldRows:
    """A fold's training rows for one feature matrix: indices, span and input digest.

    Shared by every model of a symbol that reads the same feature list (computed once per
    fold); ``digest`` hashes the raw input slice of the training window in place
    (:func:`engine.ml.walkforward.data_digest`), the training matrix is built only to fit.
    """

    idx: np.ndarray | None  # None: too few rows or one class only
    span: tuple[int, int]
    digest: str


def fold_rows(
    sd: SymbolData, X: np.ndarray, fold: Fold, sched: Schedule, ml: MLSections
) -> FoldRows:
    """Training rows of a fold over the feature matrix ``X`` (window, embargo, purge, stride,
    finite label and features, ``min_train_rows``, two classes)."""
    ot = sd.open_time
    i_ms, emb = sched.interval_ms, sched.embargo
    # the last row a fold may train on: closed ``embargo`` before the cutoff, label known at it
    last = min(fold.cutoff - emb - i_ms, fold.cutoff - (sched.horizon + 1) * i_ms)
    lo = int(np.searchsorted(ot, fold.train_start, side="left"))
    hi = int(np.searchsorted(ot, last, side="right"))
    hi = max(hi, lo)
    m = train_mask(ot[lo:hi], fold, sched, row_stride=ml.training.row_stride)
    m &= np.isfinite(sd.y[lo:hi])
    if X.shape[1]:
        m &= np.isfinite(X[lo:hi]).all(axis=1)
    idx = np.flatnonzero(m) + lo
    # the rows chosen (their open times) and the raw inputs they are chosen from and fitted on
    digest = data_digest(ot[idx], X[lo:hi], sd.y[lo:hi])
    if idx.shape[0] < ml.training.min_train_rows or np.unique(sd.y[idx]).shape[0] < 2:
        return FoldRows(None, (0, 0), digest)
    return FoldRows(idx, (int(ot[idx[0]]), int(ot[idx[-1]])), digest)


def fold_trainset(
    sd: SymbolData,
    node: ModelNode,
    features: list[str],
    fold: Fold,
    sched: Schedule,
    ml: MLSections,
    rows: FoldRows | None = None,
) -> tuple[TrainSet, tuple[int, int], str] | None:
    """The training set of a fold: ``(train set, (first, last) time, data digest)`` or None.

    ``rows``: the fold's :class:`FoldRows` when already computed (ignored for Prophet).
    """
    lab: LabelsConfig = ml.labels
    tau = (lab.cost_bps + lab.flat_band_bps) / 1e4
    common: dict[str, Any] = {
        "tau": tau,
        "drop_flat": lab.drop_flat,
        "horizon": lab.horizon,
        "interval_ms": sd.interval_ms,
    }
    if node.kind == "prophet":
        win = span_ms(
            node.params["window"], sd.interval_ms, where=f"models.{node.name}.params.window"
        )
        hm = (sd.hourly_time <= fold.cutoff) & (sd.hourly_time > fold.cutoff - win)
        ht, hc = sd.hourly_time[hm], sd.hourly_close[hm]
        if ht.shape[0] < 48:
            return None
        start = fold.cutoff
        ftimes = (
            np.arange(start, fold.next_cutoff, sd.interval_ms, dtype=np.int64)
            + (lab.horizon + 1) * sd.interval_ms
        )
        ts = TrainSet(np.empty((0, 0)), np.empty(0), (), ht, hc, ftimes, **common)
        return ts, (int(ht[0]), int(ht[-1])), data_digest(ht, hc, ftimes)
    fr = rows if rows is not None else fold_rows(sd, sd.X[node.name], fold, sched, ml)
    if fr.idx is None:
        return None
    X = sd.X[node.name]
    ts = TrainSet(np.ascontiguousarray(X[fr.idx]), sd.y[fr.idx].copy(), tuple(features), **common)
    return ts, fr.span, fr.digest


def plan_fold(
    sd: SymbolData,
    node: ModelNode,
    features: list[str],
    fold: Fold,
    sched: Schedule,
    ml: MLSections,
    models_dir: Path,
    rows: FoldRows | None = None,
) -> FitPlan:
    """Decide the version of one (symbol, fold, model) and whether it must be fitted.

    The version needs only the fold's rows (span and input digest); the training matrix is
    built when the version is not saved yet.
    """
    if node.kind == "prophet":
        got = fold_trainset(sd, node, features, fold, sched, ml)
        if got is None:
            return FitPlan(None, None, reason="too few hourly closes before the cutoff")
        span, digest = got[1], got[2]
    else:
        fr = rows if rows is not None else fold_rows(sd, sd.X[node.name], fold, sched, ml)
        if fr.idx is None:
            return FitPlan(None, None, reason="too few training rows (or one class only)")
        span, digest, got = fr.span, fr.digest, None
    shash = model_strategy_hash(
        ml.labels,
        ml.training,
        node,
        features=features,
        interval_ms=sd.interval_ms,
        symbols=[sd.symbol],
    )
    version = model_version(
        strategy_hash=shash, symbol=sd.symbol, node=node, fold=fold, train_span=span, digest=digest
    )
    if (models_dir / version / "meta.json").is_file():
        return FitPlan(version, None)
    if got is None:
        got = fold_trainset(sd, node, features, fold, sched, ml, rows=fr)
        assert got is not None
    meta = {
        "symbol": sd.symbol,
        "model": node.name,
        "fold": fold.index,
        "cutoff": fold.cutoff,
        "next_cutoff": fold.next_cutoff,
        "train_span": list(span),
        "features": features,
        "interval_ms": sd.interval_ms,
        "strategy_hash": shash,
        "library": library_version(node.kind),
        "data_digest": digest,
    }
    task = FitTask(
        version,
        node.kind,
        dict(node.params),
        ml.training.seed,
        ml.training.threads,
        got[0],
        str(models_dir),
        meta,
    )
    return FitPlan(version, task)


def fold_index(open_time: np.ndarray, sched: Schedule) -> np.ndarray:
    """The fold each bar is predicted by (int32; -1 before the first cutoff)."""
    first = sched.run_start + sched.warmup
    k = np.floor_divide(open_time - first, sched.retrain_every)
    k = np.where(open_time >= first, k, -1).astype(np.int32)
    return (
        np.minimum(k, len(sched.folds) - 1)
        if sched.folds
        else np.full(open_time.shape, -1, np.int32)
    )
