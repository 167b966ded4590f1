"""What the ML stage returns: per-bar arrays per symbol (:class:`SymbolResult`), the run's
:class:`EnsembleResult`, and the out-of-fold scores both are judged by (:func:`score_results`).

Live mode builds the same objects over its own bars and scores them with the same function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from engine.ml.ensemble import calibration_curve, score
from engine.ml.fusion_nb import GATE_REASONS
from engine.ml.symbol_pipeline import SymbolPipeline
from engine.ml.walkforward import Schedule

T = TypeVar("T")


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
    weights: np.ndarray  # (n, M) each member's skill weight in the bayesian pool
    labels: np.ndarray  # (n,) training class per bar (NaN unknown/flat), for scoring only
    expected_edge_bps: np.ndarray | None = None  # expected net return of the round trip, bps
    base_weight: np.ndarray | None = None  # (n,) the base rate's share of the bayesian pool
    pool_p: np.ndarray | None = None  # (n,) the bayesian pool (stacked_lgbm's offset)
    pool_x: np.ndarray | None = None  # (n,) the pool's log-odds over the base rate (its map's input)

    def __post_init__(self) -> None:
        n = self.open_time.shape[0]
        if self.expected_edge_bps is None:
            self.expected_edge_bps = np.full(n, np.nan)
        if self.base_weight is None:
            self.base_weight = np.full(n, np.nan)
        if self.pool_p is None:
            self.pool_p = np.full(n, np.nan)
        if self.pool_x is None:
            self.pool_x = np.full(n, np.nan)

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
                "expected_edge_bps": self.expected_edge_bps,
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


def map_symbols(fn: Callable[[str], T], syms: list[str], workers: int) -> list[T]:
    """``[fn(s) for s in syms]``, up to ``workers`` symbols at once in threads (the
    per-symbol work is numpy and polars, which run without the GIL); results in ``syms``'
    order whatever the count."""
    k = max(1, min(int(workers), len(syms)))
    if k == 1:
        return [fn(s) for s in syms]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(k, thread_name_prefix="symbols") as pool:
        return list(pool.map(fn, syms))


def score_results(
    results: Mapping[str, SymbolResult],
    pipes: Mapping[str, SymbolPipeline],
    *,
    workers: int = 1,
) -> tuple[Any, Any, Any]:
    """Out-of-fold scores per model, symbol and fold, the calibration curve, and each
    model's contribution: the ``(metrics, curve, contributions)`` frames of an
    :class:`EnsembleResult`. Used by the batch run and by live mode over its own bars.
    ``workers`` > 1 scores up to that many symbols at once in threads (the rows come out in
    symbol order whatever the count).
    """
    import polars as pl

    parts = map_symbols(lambda s: _score_symbol(s, results[s], pipes[s]), list(results), workers)
    rows = [row for part in parts for row in part[0]]
    curve = [row for part in parts for row in part[1]]
    contrib = [row for part in parts for row in part[2]]
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


def _score_symbol(
    sym: str, r: SymbolResult, pipe: SymbolPipeline
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`score_results`' rows of one symbol: scores, calibration curve, contributions."""
    sched = pipe.sched
    rows: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    contrib: list[dict[str, Any]] = []
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
    return rows, curve, contrib


def pipeline_events(pipes: Mapping[str, SymbolPipeline]) -> list[dict[str, Any]]:
    """What went wrong in each symbol's pipeline (a model not trained for a fold, a remote
    model's failures), each event tagged with its symbol."""
    events: list[dict[str, Any]] = []
    for sym, pipe in pipes.items():
        sym_events = list(pipe.events)
        for ext in pipe.external.values():
            sym_events.extend(getattr(ext, "events", []))
        events.extend({**e, "symbol": sym} for e in sym_events)
    return events


def assemble_result(
    results: dict[str, SymbolResult],
    pipes: Mapping[str, SymbolPipeline],
    *,
    n_fitted: int,
    n_reused: int,
    train_seconds: float,
    predict_seconds: float,
    workers: int = 1,
) -> EnsembleResult:
    """An :class:`EnsembleResult` of per-symbol results: scores, calibration curve and
    contributions by :func:`score_results` (``workers`` symbols at once), and the pipelines'
    events. The batch path and live mode's summary of its own bars both build theirs here."""
    metrics, curve, contrib = score_results(results, pipes, workers=workers)
    return EnsembleResult(
        symbols=results,
        schedule={s: p.sched for s, p in pipes.items()},
        metrics=metrics,
        calibration=curve,
        contributions=contrib,
        events=pipeline_events(pipes),
        n_fitted=n_fitted,
        n_reused=n_reused,
        train_seconds=train_seconds,
        predict_seconds=predict_seconds,
        pipelines=dict(pipes),
    )
