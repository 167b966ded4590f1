"""The ML stage of the strategy graph: walk-forward models -> calibration -> fusion -> gate.

:func:`run_ensemble` is the batch entry the backtest runner calls; :class:`LiveEnsemble` is
the live counterpart (one closed bar at a time) built from the same functions. See
:mod:`engine.ml` for the contract.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError, DataError
from engine.ml.ensemble import Calibrator, FusionRunner, fit_calibrator, fit_stacker, score
from engine.ml.fusion_nb import GATE_REASONS
from engine.ml.labels import make_labels
from engine.ml.models.base import Segment, TrainSet
from engine.ml.walkforward import (
    FitTask,
    Fold,
    FoldExecutor,
    Schedule,
    data_digest,
    default_executor,
    fit_task,
    library_version,
    make_schedule,
    model_strategy_hash,
    model_version,
    train_mask,
)
from engine.strategy.ml_config import LabelsConfig, MLSections, ModelNode, span_ms

HOUR_MS = 3_600_000
#: threads for prediction: rows are predicted independently, so LightGBM's and XGBoost's
#: outputs do not depend on the thread count (training keeps ``training.threads``)
PREDICT_THREADS = min(2, os.cpu_count() or 1)


def as_sections(config: Any) -> MLSections:
    """The ML sections of a strategy config (or an :class:`MLSections` as is)."""
    if isinstance(config, MLSections):
        return config
    models = getattr(config, "models", None)
    if not models:
        raise ConfigError(
            "the strategy has no 'models:' section, so there is no ML stage to run",
            hint="add models (see strategies/ensemble.yaml) or remove the ML sections",
        )
    kw: dict[str, Any] = {"models": list(models)}
    for key in ("labels", "training", "ensemble"):
        val = getattr(config, key, None)
        if val is not None:
            kw[key] = val
    return MLSections(**kw)


# ------------------------------------------------------------------------- per-symbol data


@dataclass
class SymbolData:
    """One symbol's aligned inputs: bars, per-model feature matrices, labels, hourly closes."""

    symbol: str
    interval_ms: int
    open_time: np.ndarray
    close: np.ndarray
    X: dict[str, np.ndarray]
    fwd: np.ndarray
    y: np.ndarray
    hourly_time: np.ndarray
    hourly_close: np.ndarray

    def segment(self, name: str, sl: slice | np.ndarray) -> Segment:
        return Segment(self.open_time[sl], self.close[sl], self.X[name][sl])


def resolve_features(ml: MLSections, available: list[str]) -> dict[str, list[str]]:
    """Feature list of each model (its ``features:`` or every feature column)."""
    out: dict[str, list[str]] = {}
    for i, node in enumerate(ml.models):
        if node.kind == "prophet":
            out[node.name] = []
            continue
        names = list(node.features) if node.features is not None else list(available)
        for n in names:
            if n not in available:
                close = difflib.get_close_matches(n, available, n=1)
                tip = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"models[{i}].features: {n!r} is not a computed feature{tip}",
                    hint="list features the strategy's features section computes",
                )
        out[node.name] = names
    return out


def prepare_symbol(
    symbol: str, frame: Any, features: Any, ml: MLSections, *, interval_ms: int | None = None
) -> tuple[SymbolData, dict[str, list[str]]]:
    """Check and align a symbol's candles and features; compute labels and hourly closes."""
    ot = np.asarray(frame["open_time"].to_numpy(), dtype=np.int64)
    close = np.asarray(frame["close"].to_numpy(), dtype=np.float64)
    if ot.shape[0] < 2:
        raise DataError(f"{symbol}: need at least 2 bars for the ML stage, got {ot.shape[0]}")
    d = np.diff(ot)
    step = int(interval_ms) if interval_ms else int(d.min())
    bad = np.flatnonzero(d != step)
    if bad.size:
        from engine.timeutil import fmt_ms

        i = int(bad[0])
        raise DataError(
            f"{symbol}: the ML stage needs a regular bar grid; bars jump from {fmt_ms(int(ot[i]))} "
            f"to {fmt_ms(int(ot[i + 1]))} ({int(d[i]) // 60_000} min, expected {step // 60_000})",
            hint="fill the gap (engine data download/import) or run `engine data check` to see all gaps",
        )
    fot = np.asarray(features["open_time"].to_numpy(), dtype=np.int64)
    if fot.shape != ot.shape or not np.array_equal(fot, ot):
        raise DataError(
            f"{symbol}: features and candles are not aligned ({fot.shape[0]} vs {ot.shape[0]} rows)",
            hint="compute features from the same candle frame (engine.features.compute)",
        )
    available = [c for c in features.columns if c != "open_time"]
    feats = resolve_features(ml, available)
    Xall = (
        np.ascontiguousarray(features.select(available).to_numpy().astype(np.float64, copy=False))
        if available
        else np.empty((ot.shape[0], 0))
    )
    return symbol_data(symbol, step, ot, close, Xall, available, feats, ml), feats


def symbol_data(
    symbol: str,
    step: int,
    ot: np.ndarray,
    close: np.ndarray,
    Xall: np.ndarray,
    available: list[str],
    feats: dict[str, list[str]],
    ml: MLSections,
) -> SymbolData:
    """Build :class:`SymbolData` from arrays (batch and live share this)."""
    col = {n: i for i, n in enumerate(available)}
    X: dict[str, np.ndarray] = {}
    cache: dict[tuple[str, ...], np.ndarray] = {}
    for name, cols in feats.items():
        key = tuple(cols)
        if key not in cache:
            if cols == available:
                cache[key] = Xall
            elif cols:
                cache[key] = np.ascontiguousarray(Xall[:, [col[c] for c in cols]])
            else:
                cache[key] = np.empty((ot.shape[0], 0))
        X[name] = cache[key]
    fwd, y = make_labels(close, ml.labels)
    hourly = (ot + step) % HOUR_MS == 0
    return SymbolData(symbol, step, ot, close, X, fwd, y, ot[hourly] + step, close[hourly])


# ------------------------------------------------------------------------------ fold plans


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


def _external_model(node: ModelNode, features: list[str], threads: int) -> Any:
    from engine.ml.models.external import OnnxModel, RemoteModel

    if node.kind == "onnx":
        assert node.path is not None
        return OnnxModel(Path(node.path), threads=threads)
    assert node.url is not None
    return RemoteModel(node.url, timeout_s=node.timeout_s, feature_names=features, name=node.name)


# ---------------------------------------------------------------------------------- results


@dataclass
class SymbolResult:
    """Per-bar ML outputs of one symbol, aligned with its candles (n bars, M models)."""

    symbol: str
    open_time: np.ndarray
    model_names: list[str]
    raw: np.ndarray  # (n, M) raw P(up), NaN = abstain / no model yet
    probs: np.ndarray  # (n, M) calibrated P(up)
    fold: np.ndarray  # (n,) int32 fold index, -1 before the first cutoff
    versions: dict[str, list[str | None]]  # model -> version per fold
    p: np.ndarray
    agreement: np.ndarray
    disagreement: np.ndarray
    entropy: np.ndarray
    uncertainty: np.ndarray
    payoff_ratio: np.ndarray
    expected_value: np.ndarray
    direction: np.ndarray  # int8 -1/0/1
    gate_code: np.ndarray  # int8, index into GATE_REASONS
    weights: np.ndarray  # (n, M) each model's normalized weight in the fused p
    labels: np.ndarray  # (n,) training class per bar (NaN unknown/flat), for scoring only

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the chosen side: p for long, 1 - p for short, max(p, 1-p) if flat."""
        return np.maximum(self.p, 1.0 - self.p)

    @property
    def gate_reason(self) -> np.ndarray:
        return np.asarray(GATE_REASONS, dtype=object)[self.gate_code.astype(np.int64)]

    def model_version(self, name: str) -> np.ndarray:
        """Model version per bar (None where the model had no version)."""
        vers = np.asarray(list(self.versions[name]) + [None], dtype=object)
        return vers[np.where(self.fold >= 0, self.fold, len(self.versions[name]))]

    def predictions_frame(self) -> Any:
        """Long frame: one row per model per predicted bar (symbol, open_time, model,
        probability [calibrated], raw_probability, model_version)."""
        import polars as pl

        sel = self.fold >= 0
        parts = []
        for j, name in enumerate(self.model_names):
            parts.append(
                pl.DataFrame(
                    {
                        "symbol": [self.symbol] * int(sel.sum()),
                        "open_time": self.open_time[sel],
                        "model": [name] * int(sel.sum()),
                        "probability": self.probs[sel, j],
                        "raw_probability": self.raw[sel, j],
                        "model_version": self.model_version(name)[sel].tolist(),
                    },
                    schema={
                        "symbol": pl.Utf8,
                        "open_time": pl.Int64,
                        "model": pl.Utf8,
                        "probability": pl.Float64,
                        "raw_probability": pl.Float64,
                        "model_version": pl.Utf8,
                    },
                )
            )
        return pl.concat(parts) if parts else pl.DataFrame()

    def decisions_frame(self) -> Any:
        """One row per bar: fused p, agreement, uncertainty, payoff, EV, direction, gate."""
        import polars as pl

        return pl.DataFrame(
            {
                "symbol": [self.symbol] * self.open_time.shape[0],
                "open_time": self.open_time,
                "probability": self.p,
                "confidence": self.confidence,
                "agreement": self.agreement,
                "disagreement": self.disagreement,
                "entropy": self.entropy,
                "uncertainty": self.uncertainty,
                "payoff_ratio": self.payoff_ratio,
                "expected_value": self.expected_value,
                "direction": self.direction,
                "gate_reason": self.gate_reason.tolist(),
            }
        )


@dataclass
class EnsembleResult:
    """What :func:`run_ensemble` returns: per-symbol arrays, fold metrics and events."""

    symbols: dict[str, SymbolResult]
    schedule: dict[str, Schedule]
    metrics: Any  # polars: symbol, model, fold, cutoff, n, auc, log_loss, brier, ece, hit_rate
    calibration: Any  # polars: symbol, model, bin, mean_p, freq_up, count (all OOF bars)
    contributions: Any  # polars: symbol, model, mean_weight (over bars with a fused p)
    events: list[dict[str, Any]] = field(default_factory=list)
    n_fitted: int = 0
    n_reused: int = 0
    train_seconds: float = 0.0
    predict_seconds: float = 0.0
    pipelines: dict[str, SymbolPipeline] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able per-model walk-forward metrics (all folds pooled) for the run summary."""
        import polars as pl

        pooled = self.metrics.filter(pl.col("fold") == -1)
        out: dict[str, Any] = {
            "models_fitted": self.n_fitted,
            "models_reused": self.n_reused,
            "train_seconds": round(self.train_seconds, 3),
            "predict_seconds": round(self.predict_seconds, 3),
            "per_model": {},
        }
        for row in pooled.iter_rows(named=True):
            key = f"{row['symbol']}/{row['model']}"
            out["per_model"][key] = {
                k: row[k] for k in ("n", "auc", "log_loss", "brier", "ece", "hit_rate")
            }
        return out


# ---------------------------------------------------------------------------- the pipeline


class _Progress:
    def __init__(self, progress: Any, total: int, label: str) -> None:
        self.own = None
        self.task: Any = None
        self.p: Any = None
        if progress is False or progress is None or total == 0:
            return
        if progress is True:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.own = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.own.start()
            self.p = self.own
        else:
            self.p = progress
        self.task = self.p.add_task(label, total=total)

    def advance(self, desc: str | None = None) -> None:
        if self.p is not None:
            self.p.update(self.task, advance=1, description=desc)

    def close(self) -> None:
        if self.own is not None:
            self.own.stop()
        elif self.p is not None and self.task is not None:
            self.p.remove_task(self.task)


class SymbolPipeline:
    """The ML stage for one symbol: plans, fits, predicts, calibrates and fuses per fold.

    Batch (:meth:`predict_all`) and live (:meth:`predict_bar`) use the same fold models,
    the same calibrators (fitted at each cutoff on out-of-fold data) and the same fusion
    kernel state.
    """

    def __init__(
        self,
        sd: SymbolData,
        feats: dict[str, list[str]],
        ml: MLSections,
        sched: Schedule,
        models_dir: Path,
    ) -> None:
        self.sd = sd
        self.feats = feats
        self.ml = ml
        self.sched = sched
        self.models_dir = models_dir
        self.names = [n.name for n in ml.models]
        self.plans: dict[tuple[int, str], FitPlan] = {}
        self.loaded: dict[str, Any] = {}
        self.external: dict[str, Any] = {}
        self.calibrators: dict[tuple[int, str], Calibrator] = {}
        self.coefs: dict[int, np.ndarray] = {}
        self.events: list[dict[str, Any]] = []

    # -- training
    def plan(self, folds: list[Fold]) -> list[FitPlan]:
        out = []
        for fold in folds:
            shared: dict[int, FoldRows] = {}  # one FoldRows per distinct feature matrix
            for node in self.ml.models:
                if not node.trained:
                    continue
                rows = None
                if node.kind != "prophet":
                    X = self.sd.X[node.name]
                    if id(X) not in shared:
                        shared[id(X)] = fold_rows(self.sd, X, fold, self.sched, self.ml)
                    rows = shared[id(X)]
                plan = plan_fold(
                    self.sd,
                    node,
                    self.feats[node.name],
                    fold,
                    self.sched,
                    self.ml,
                    self.models_dir,
                    rows=rows,
                )
                if plan.version is None:
                    self.events.append(
                        {
                            "time": fold.cutoff,
                            "severity": "warning",
                            "component": f"ml.train.{node.name}",
                            "message": f"{self.sd.symbol} fold {fold.index}: {node.name} not trained "
                            f"({plan.reason}); it abstains until the next cutoff",
                            "model": node.name,
                            "fold": fold.index,
                        }
                    )
                self.plans[(fold.index, node.name)] = plan
                out.append(plan)
        return out

    def _model(self, node: ModelNode, fold: Fold) -> Any:
        if not node.trained:
            if node.name not in self.external:
                self.external[node.name] = _external_model(
                    node, self.feats[node.name], self.ml.training.threads
                )
            return self.external[node.name]
        plan = self.plans[(fold.index, node.name)]
        if plan.version is None:
            return None
        if plan.version not in self.loaded:
            from engine.ml.models import load_model

            self.loaded[plan.version] = load_model(
                node.kind,
                self.models_dir / plan.version,
                node.params,
                threads=max(self.ml.training.threads, PREDICT_THREADS),
            )
        return self.loaded[plan.version]

    def version(self, node: ModelNode, fold: Fold) -> str | None:
        if not node.trained:
            return self._model(node, fold).version
        return self.plans[(fold.index, node.name)].version

    # -- calibration at a cutoff (out-of-fold only)
    def calibrate(
        self,
        fold: Fold,
        raw: np.ndarray,
        cal: np.ndarray,
        fold_of: np.ndarray,
        order: np.ndarray | None = None,
    ) -> None:
        """Fit fold ``fold``'s calibrators and stacker on OOF rows known at its cutoff.

        ``order``: optional ``argsort`` of each column of ``raw`` (n, M); the isotonic fit then
        takes the OOF rows in that order instead of sorting them (same knots: equal p are
        pooled with the exact sum of their 0/1 labels).
        """
        lab = self.ml.labels
        known = self.sd.open_time + (lab.horizon + 1) * self.sd.interval_ms <= fold.cutoff
        oof = known & (fold_of >= 0) & (fold_of < fold.index)
        ens = self.ml.ensemble
        for j, name in enumerate(self.names):
            if order is not None and ens.calibration == "isotonic":
                sel = order[:, j][oof[order[:, j]]]
                cal_j = fit_calibrator(
                    ens.calibration,
                    raw[sel, j],
                    self.sd.y[sel],
                    min_rows=ens.min_calibration_rows,
                    presorted=True,
                )
            else:
                cal_j = fit_calibrator(
                    ens.calibration, raw[oof, j], self.sd.y[oof], min_rows=ens.min_calibration_rows
                )
            self.calibrators[(fold.index, name)] = cal_j
        if ens.fusion == "stacked":
            self.coefs[fold.index] = fit_stacker(
                cal[oof], self.sd.y[oof], min_rows=ens.min_calibration_rows
            )
        else:
            self.coefs[fold.index] = np.zeros(len(self.names) + 1)

    def predict_fold(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        """Raw P(up) of every model for the given bar indices of one fold: (len(rows), M)."""
        out = np.full((rows.shape[0], len(self.names)), np.nan)
        if rows.shape[0] == 0:
            return out
        for j, node in enumerate(self.ml.models):
            model = self._model(node, fold)
            if model is not None:
                out[:, j] = model.predict_proba(self.sd.segment(node.name, rows))
        return out


def _fold_index(open_time: np.ndarray, sched: Schedule) -> np.ndarray:
    first = sched.run_start + sched.warmup
    k = np.floor_divide(open_time - first, sched.retrain_every)
    k = np.where(open_time >= first, k, -1).astype(np.int32)
    return (
        np.minimum(k, len(sched.folds) - 1)
        if sched.folds
        else np.full(open_time.shape, -1, np.int32)
    )


def run_ensemble(
    config: Any,
    frames_by_symbol: Mapping[str, Any],
    features_by_symbol: Mapping[str, Any],
    *,
    run_start: int | None = None,
    results_dir: str | Path | None = None,
    progress: Any = False,
    executor: FoldExecutor | None = None,
    interval_ms: int | None = None,
) -> EnsembleResult:
    """Run the ML stage over whole histories (the batch path). See :mod:`engine.ml`."""
    from engine.paths import results_dir as _results_dir

    ml = as_sections(config)
    models_dir = _results_dir(results_dir) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
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

    # 1. plan and fit every (symbol, fold, model)
    t0 = time.perf_counter()
    plans = [p for pipe in pipes.values() for p in pipe.plan(list(pipe.sched.folds))]
    todo = [p.task for p in plans if p.task is not None]
    n_reused = sum(1 for p in plans if p.version is not None and p.task is None)
    bar = _Progress(progress, len(todo), "training folds")
    try:
        exe = executor or default_executor(ml.training.workers)

        def done(i: int, meta: dict[str, Any]) -> None:
            bar.advance(f"trained {meta.get('symbol')} {meta.get('model')} fold {meta.get('fold')}")

        exe.map(fit_task, todo, on_done=done)
    finally:
        bar.close()
    train_s = time.perf_counter() - t0

    # 2. predict, calibrate and fuse
    t1 = time.perf_counter()
    results: dict[str, SymbolResult] = {}
    events: list[dict[str, Any]] = []
    for sym, pipe in pipes.items():
        results[sym] = _predict_symbol(pipe)
        sym_events = list(pipe.events)
        for ext in pipe.external.values():
            sym_events.extend(getattr(ext, "events", []))
        events.extend({**e, "symbol": sym} for e in sym_events)
    predict_s = time.perf_counter() - t1
    metrics, curve, contrib = score_results(results, pipes)
    return EnsembleResult(
        symbols=results,
        schedule={s: p.sched for s, p in pipes.items()},
        metrics=metrics,
        calibration=curve,
        contributions=contrib,
        events=events,
        n_fitted=len(todo),
        n_reused=n_reused,
        train_seconds=train_s,
        predict_seconds=predict_s,
        pipelines=pipes,
    )


def _predict_symbol(pipe: SymbolPipeline) -> SymbolResult:
    sd, sched = pipe.sd, pipe.sched
    n, m = sd.open_time.shape[0], len(pipe.names)
    fold_of = _fold_index(sd.open_time, sched)
    raw = np.full((n, m), np.nan)
    cal = np.full((n, m), np.nan)
    coefs = np.zeros((n, m + 1))
    versions: dict[str, list[str | None]] = {name: [] for name in pipe.names}
    fold_rows_ = [np.flatnonzero(fold_of == fold.index) for fold in sched.folds]
    # raw predictions do not depend on calibration: predict every fold (one call per model
    # and fold), sort each model's column once, then calibrate fold by fold (fold k's maps
    # read only folds < k)
    for fold, rows in zip(sched.folds, fold_rows_, strict=True):
        raw[rows] = pipe.predict_fold(fold, rows)
    order = np.argsort(raw, axis=0)
    for fold, rows in zip(sched.folds, fold_rows_, strict=True):
        pipe.calibrate(fold, raw, cal, fold_of, order)
        for j, name in enumerate(pipe.names):
            cal[rows, j] = pipe.calibrators[(fold.index, name)](raw[rows, j])
        coefs[rows] = pipe.coefs[fold.index]
        for node in pipe.ml.models:
            versions[node.name].append(pipe.version(node, fold))
    runner = FusionRunner(pipe.names, pipe.ml.ensemble, pipe.ml.labels)
    pipe.runner = runner  # type: ignore[attr-defined]
    out = runner.run(sd.close, cal, coefs)
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
        direction=out["direction"],
        gate_code=out["gate_code"],
        weights=out["weights"],
        labels=sd.y,
    )


def score_results(
    results: dict[str, SymbolResult], pipes: dict[str, SymbolPipeline]
) -> tuple[Any, Any, Any]:
    """Out-of-fold scores per model, symbol and fold, the calibration curve, and each
    model's contribution: the ``(metrics, curve, contributions)`` frames of an
    :class:`EnsembleResult`. Used by the batch run and by live mode over its own bars.
    """
    import polars as pl

    from engine.ml.ensemble import calibration_curve

    rows: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    contrib: list[dict[str, Any]] = []
    for sym, r in results.items():
        sched = pipes[sym].sched
        cols = [(name, r.probs[:, j]) for j, name in enumerate(r.model_names)] + [("ensemble", r.p)]
        for name, p in cols:
            pp = np.where(r.fold >= 0, p, np.nan)
            for fold in sched.folds:
                sel = r.fold == fold.index
                rows.append(
                    {
                        "symbol": sym,
                        "model": name,
                        "fold": fold.index,
                        "cutoff": fold.cutoff,
                        **score(pp[sel], r.labels[sel]),
                    }
                )
            rows.append(
                {"symbol": sym, "model": name, "fold": -1, "cutoff": None, **score(pp, r.labels)}
            )
            for c in calibration_curve(pp, r.labels):
                curve.append({"symbol": sym, "model": name, **c})
        fused = np.isfinite(r.p) & (r.fold >= 0)
        for j, name in enumerate(r.model_names):
            w = r.weights[fused, j]
            contrib.append(
                {
                    "symbol": sym,
                    "model": name,
                    "mean_weight": float(w.mean()) if w.size else float("nan"),
                }
            )
    schema = {
        "symbol": pl.Utf8,
        "model": pl.Utf8,
        "fold": pl.Int64,
        "cutoff": pl.Int64,
        "n": pl.Int64,
        "auc": pl.Float64,
        "log_loss": pl.Float64,
        "brier": pl.Float64,
        "ece": pl.Float64,
        "hit_rate": pl.Float64,
    }
    return (
        pl.DataFrame(rows, schema=schema),
        pl.DataFrame(
            curve,
            schema={
                "symbol": pl.Utf8,
                "model": pl.Utf8,
                "bin": pl.Int64,
                "mean_p": pl.Float64,
                "freq_up": pl.Float64,
                "count": pl.Int64,
            },
        ),
        pl.DataFrame(
            contrib, schema={"symbol": pl.Utf8, "model": pl.Utf8, "mean_weight": pl.Float64}
        ),
    )
