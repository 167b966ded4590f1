"""What the run log keeps of an :class:`engine.ml.EnsembleResult`.

* :func:`models_metrics` -> ``runs.metrics['models']``, the document ``engine report`` and
  the ``engine backtest`` summary read::

      {model: {n, auc, log_loss, brier, calibration_error, hit_rate, weight, folds,
               calibration_curve: [{lo, hi, mean_predicted, fraction_positive, count}],
               per_symbol: {symbol: {n, auc, log_loss, brier, calibration_error, weight}},
               per_fold: [{symbol, fold, cutoff, n, auc, log_loss, brier, calibration_error}]},
       ...,
       "ensemble": {...the fused P(up), no weight...},
       "base_rate": {...each symbol's share of up-labels as a constant forecast...}}

  Scores are on out-of-fold bars only (each bar predicted by the fold model trained before
  it, calibrated by the map fitted at that fold's cutoff), pooled over the symbols, with
  :func:`engine.metrics.classification_metrics` and :func:`engine.metrics.calibration_curve`
  (the report's own scorers, so its table and this one agree). ``weight`` is the model's
  mean share of the fused probability over the bars with a fused p (its contribution).
* :func:`ml_info` -> ``runs.metrics['ml']``: versions fitted/reused, folds, timings, the bars
  each gate condition kept flat per symbol (``gate_rejections``), the fused probability's
  worst reliability bin with at least 500 bars (``worst_reliability_bin``) and the members'
  skill weights per week (``weights_over_time``).
* :func:`event_rows` -> ``system_events`` rows: models not trained for a fold, remote models
  that failed or timed out and abstained, models abstaining on bars, and one info row with
  the walk-forward plan.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from engine.metrics import calibration_curve, classification_metrics
from engine.ml.results import EnsembleResult
from engine.timeutil import fmt_ms

SCORE_KEYS = ("n", "auc", "log_loss", "brier", "calibration_error")


def _clean(v: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> None, numpy scalars -> Python."""
    if v is None:
        return None
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(p) & np.isfinite(y)
    m = classification_metrics(y[ok], p[ok])
    out = {k: _clean(m[k]) for k in SCORE_KEYS}
    n = int(ok.sum())
    out["hit_rate"] = _clean(np.mean((p[ok] > 0.5) == (y[ok] > 0.5))) if n else None
    return out


def _columns(res: EnsembleResult) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """model -> symbol -> (out-of-fold P(up), labels) over the bars from the first cutoff.

    ``base_rate`` is the constant forecast of the symbol's share of up-labels over those very
    bars (a hindsight benchmark: the best constant, which no walk-forward forecast knows)."""
    cols: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for sym, r in res.symbols.items():
        sel = r.fold >= 0
        y = r.labels[sel]
        yk = y[np.isfinite(y)]
        rate = float(yk.mean()) if yk.size else float("nan")
        cols.setdefault("base_rate", {})[sym] = (np.full(y.shape, rate), y)
        for j, name in enumerate(r.model_names):
            cols.setdefault(name, {})[sym] = (r.probs[sel, j], y)
        cols.setdefault("ensemble", {})[sym] = (r.p[sel], y)
    return cols


def worst_reliability_bin(res: EnsembleResult, *, min_count: int = 500) -> dict[str, Any] | None:
    """The bin of the fused probability's out-of-fold reliability diagram (symbols pooled,
    the report's bins) whose observed up-frequency is farthest from its mean forecast, among
    the bins holding at least ``min_count`` bars."""
    cols = _columns(res)["ensemble"] if res.symbols else {}
    if not cols:
        return None
    p = np.concatenate([v[0] for v in cols.values()])
    y = np.concatenate([v[1] for v in cols.values()])
    ok = np.isfinite(p) & np.isfinite(y)
    worst = None
    for b in calibration_curve(y[ok], p[ok]):
        if b["count"] >= min_count and b["mean_predicted"] is not None:
            gap = abs(float(b["fraction_positive"]) - float(b["mean_predicted"]))
            if worst is None or gap > worst["gap"]:
                worst = {**b, "gap": gap}
    return worst


def gate_counts(res: EnsembleResult) -> dict[str, dict[str, int]]:
    """symbol -> gate condition -> bars it kept flat (``passed``: bars the gate let trade),
    over the bars from the first cutoff."""
    from engine.ml.fusion_nb import GATE_REASONS

    out: dict[str, dict[str, int]] = {}
    for sym, r in res.symbols.items():
        codes = np.asarray(r.gate_code)[r.fold >= 0].astype(np.int64)
        cnt = np.bincount(codes, minlength=len(GATE_REASONS))
        out[sym] = {(GATE_REASONS[i] or "passed"): int(cnt[i]) for i in range(len(GATE_REASONS))}
    return out


def weights_over_time(
    res: EnsembleResult, *, every_ms: int = 7 * 86_400_000
) -> list[dict[str, Any]]:
    """Each member's mean skill weight (and the base rate's) per symbol and ``every_ms``
    period (weeks by default), from the first cutoff: the rows the report plots."""
    rows: list[dict[str, Any]] = []
    for sym, r in res.symbols.items():
        sel = np.flatnonzero(r.fold >= 0)
        if not sel.size:
            continue
        ot = r.open_time[sel]
        period = (ot - ot[0]) // every_ms
        starts = np.flatnonzero(np.r_[True, np.diff(period) != 0])
        ends = np.r_[starts[1:], sel.size]
        bw = np.asarray(r.base_weight)[sel]
        for a, b in zip(starts, ends, strict=True):
            row: dict[str, Any] = {"symbol": sym, "time": int(ot[a])}
            for j, name in enumerate(r.model_names):
                row[name] = _clean(np.nanmean(r.weights[sel[a:b], j]))
            row["base_rate"] = _clean(np.nanmean(bw[a:b])) if np.isfinite(bw[a:b]).any() else None
            rows.append(row)
    return rows


def _weights(res: EnsembleResult) -> dict[str, dict[str, tuple[float, int]]]:
    """model -> symbol -> (sum of fusion weights, bars) over bars with a fused p; the base
    rate's share under ``base_rate`` (members' and base rate's weights sum to 1 per bar)."""
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for sym, r in res.symbols.items():
        fused = np.isfinite(r.p) & (r.fold >= 0)
        for j, name in enumerate(r.model_names):
            w = r.weights[fused, j]
            out.setdefault(name, {})[sym] = (float(np.nansum(w)), int(w.shape[0]))
        bw = np.asarray(r.base_weight)[fused]
        out.setdefault("base_rate", {})[sym] = (float(np.nansum(bw)), int(bw.shape[0]))
    return out


def models_metrics(res: EnsembleResult) -> dict[str, Any]:
    """The ``runs.metrics['models']`` document (see the module docstring)."""
    import polars as pl

    weights = _weights(res)
    folds = res.metrics.filter(pl.col("fold") >= 0)
    doc: dict[str, Any] = {}
    for name, by_sym in _columns(res).items():
        p = np.concatenate([v[0] for v in by_sym.values()])
        y = np.concatenate([v[1] for v in by_sym.values()])
        entry = _scores(p, y)
        ok = np.isfinite(p) & np.isfinite(y)
        entry["calibration_curve"] = calibration_curve(y[ok], p[ok])
        per_symbol = {}
        for sym, (ps, ys) in by_sym.items():
            per_symbol[sym] = _scores(ps, ys)
        if name in weights:
            tot = sum(s for s, _ in weights[name].values())
            cnt = sum(c for _, c in weights[name].values())
            entry["weight"] = _clean(tot / cnt) if cnt else None
            for sym, (s, c) in weights[name].items():
                per_symbol[sym]["weight"] = _clean(s / c) if c else None
        entry["per_symbol"] = per_symbol
        rows = folds.filter(pl.col("model") == name).sort("symbol", "fold")
        entry["per_fold"] = [
            {
                "symbol": r["symbol"],
                "fold": int(r["fold"]),
                "cutoff": _clean(r["cutoff"]),
                "n": int(r["n"]),
                "auc": _clean(r["auc"]),
                "log_loss": _clean(r["log_loss"]),
                "brier": _clean(r["brier"]),
                "calibration_error": _clean(r["ece"]),
            }
            for r in rows.iter_rows(named=True)
        ]
        entry["folds"] = sum(1 for f in entry["per_fold"] if f["n"] > 0)
        doc[name] = entry
    return doc


def ml_info(res: EnsembleResult) -> dict[str, Any]:
    """The ``runs.metrics['ml']`` document: versions fitted and reused, folds, timings, the
    gate's rejections, the worst reliability bin, the weights over time and the pool maps."""
    versions: dict[str, dict[str, list[str | None]]] = {
        sym: dict(r.versions) for sym, r in res.symbols.items()
    }
    return {
        "models_fitted": res.n_fitted,
        "models_reused": res.n_reused,
        "folds": {sym: len(s.folds) for sym, s in res.schedule.items()},
        "cutoffs": {sym: [f.cutoff for f in s.folds] for sym, s in res.schedule.items()},
        "versions": versions,
        "train_seconds": round(res.train_seconds, 3),
        "predict_seconds": round(res.predict_seconds, 3),
        "gate_rejections": gate_counts(res),
        "worst_reliability_bin": worst_reliability_bin(res),
        "weights_over_time": weights_over_time(res),
        "pool_maps": pool_maps(res),
    }


def pool_maps(res: EnsembleResult) -> list[dict[str, Any]]:
    """Each cutoff's pool map, one for the run (:func:`engine.ml.symbol_pipeline.pooled_map`):
    ``[{fold, cutoff, a, v}]`` in fold order; ``(1, 0)`` is the identity (not fitted yet)."""
    maps: dict[int, dict[str, Any]] = {}
    for sym, sched in res.schedule.items():
        fitted = res.pipelines[sym].pool_maps if sym in res.pipelines else {}
        for f in sched.folds:
            if f.index in fitted and f.index not in maps:
                a, v = fitted[f.index]
                maps[f.index] = {"fold": f.index, "cutoff": f.cutoff, "a": a, "v": v}
    return [maps[k] for k in sorted(maps)]


def event_rows(res: EnsembleResult) -> list[dict[str, Any]]:
    """``system_events`` rows (time, severity, component, message, data) of the ML stage."""
    rows: list[dict[str, Any]] = []
    first = min((int(r.open_time[0]) for r in res.symbols.values()), default=0)
    n_folds = {sym: len(s.folds) for sym, s in res.schedule.items()}
    rows.append(
        {
            "time": first,
            "severity": "info",
            "component": "ml.train",
            "message": (
                f"walk-forward: {sum(n_folds.values())} folds over {len(n_folds)} symbol(s); "
                f"{res.n_fitted} model version(s) fitted, {res.n_reused} reused "
                f"(training {res.train_seconds:.1f}s, inference {res.predict_seconds:.1f}s)"
            ),
            "data": json.dumps(
                {"folds": n_folds, "fitted": res.n_fitted, "reused": res.n_reused},
                sort_keys=True,
            ),
        }
    )
    for e in res.events:
        data = {k: v for k, v in e.items() if k not in ("time", "severity", "component", "message")}
        rows.append(
            {
                "time": int(e["time"]),
                "severity": str(e.get("severity", "warning")),
                "component": str(e.get("component", "ml")),
                "message": str(e["message"]),
                "data": json.dumps(data, sort_keys=True, default=str) if data else None,
            }
        )
    for sym, r in res.symbols.items():
        pred = r.fold >= 0
        n = int(pred.sum())
        if n == 0:
            continue
        for j, name in enumerate(r.model_names):
            miss = pred & ~np.isfinite(r.raw[:, j])
            k = int(miss.sum())
            if k == 0:
                continue
            at = int(r.open_time[np.flatnonzero(miss)[0]])
            rows.append(
                {
                    "time": at,
                    "severity": "warning" if k == n else "info",
                    "component": f"ml.model.{name}",
                    "message": (
                        f"{sym}: {name} abstained on {k:,} of {n:,} predicted bars "
                        f"(first at {fmt_ms(at)}; no model for the fold, features not warm, "
                        "or a remote failure); the fusion used the other models there"
                    ),
                    "data": json.dumps(
                        {"symbol": sym, "model": name, "abstained": k, "predicted": n},
                        sort_keys=True,
                    ),
                }
            )
    return sorted(rows, key=lambda r: r["time"])
