"""Per-model analysis for the report: walk-forward metrics, calibration curves, contributions.

Metrics come from two places, shown side by side when both exist:

- the run's logged predictions that carry a realised ``label`` (out of sample over the run),
  scored with :func:`engine.metrics.classification_metrics` on the calibrated probability
  when logged, else the raw one; the ensemble's fused probability is scored the same way;
- ``runs.metrics["models"]``: ``{model: {auc, log_loss, brier, calibration_error, ...}}`` as
  reported by the training (optionally with ``calibration_curve`` and ``weight``).

A model's contribution is measured from the log: its share of the fused log-odds evidence
(``|weight * logit(p)|`` when weights are logged, else ``|logit(p)|``), how often its side
agreed with the ensemble's non-flat decisions, and the correlation of its probability with
the fused probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engine.report.data import RunData

METRIC_COLUMNS = ("n", "auc", "log_loss", "brier", "calibration_error")


@dataclass
class ModelAnalysis:
    models: list[str]
    logged_metrics: list[dict[str, Any]] = field(default_factory=list)
    stored_metrics: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: bars each gate condition kept flat, per symbol (runs.metrics['ml']['gate_rejections'])
    gate_rejections: list[dict[str, Any]] = field(default_factory=list)
    #: the fused probability's worst reliability bin of >= 500 bars
    worst_bin: dict[str, Any] | None = None
    #: members' skill weights (and the base rate's) per symbol and month
    weights_over_time: list[dict[str, Any]] = field(default_factory=list)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def analyse_models(data: RunData) -> ModelAnalysis | None:
    """The model section's content, or None when the run logged no predictions."""
    import polars as pl

    from engine.metrics import calibration_curve, classification_metrics

    preds = data.predictions
    stored = (data.run.get("metrics") or {}).get("models")
    if preds.height == 0 and not isinstance(stored, dict):
        return None
    models = preds["model"].unique(maintain_order=True).to_list() if preds.height else []
    if isinstance(stored, dict):
        models += [m for m in stored if m not in models]
    out = ModelAnalysis(models=models)

    if preds.height:
        preds = preds.with_columns(p=pl.coalesce("calibrated", "probability"))
        out.versions = (
            preds.group_by("model", maintain_order=True)
            .agg(
                versions=pl.col("model_version").n_unique(),
                first=pl.col("model_version").drop_nulls().first(),
                last=pl.col("model_version").drop_nulls().last(),
                rows=pl.len(),
            )
            .to_dicts()
        )
        labelled = preds.filter(
            pl.col("label").is_in([0, 1]) & pl.col("p").is_not_null() & pl.col("p").is_not_nan()
        )
        if labelled.height:
            for m in models:
                sub = labelled.filter(pl.col("model") == m)
                if not sub.height:
                    continue
                y, p = sub["label"].to_numpy(), sub["p"].to_numpy()
                out.logged_metrics.append({"model": m, **classification_metrics(y, p)})
                out.curves[m] = calibration_curve(y, p)
            labels = labelled.select("symbol", "open_time", "label").unique(["symbol", "open_time"])
            ens = (
                data.decisions.select("symbol", "open_time", "probability")
                .join(labels, on=["symbol", "open_time"], how="inner")
                .filter(pl.col("probability").is_not_null() & pl.col("probability").is_not_nan())
            )
            if ens.height:
                y, p = ens["label"].to_numpy(), ens["probability"].to_numpy()
                out.logged_metrics.append({"model": "ensemble", **classification_metrics(y, p)})
                out.curves["ensemble"] = calibration_curve(y, p)
        else:
            out.notes.append(
                "The logged predictions carry no realised labels (model_predictions.label), so "
                "out-of-sample metrics over this run cannot be computed from the log."
            )
        out.contributions = _contributions(preds, data.decisions, models)

    if isinstance(stored, dict):
        for m, vals in stored.items():
            if isinstance(vals, dict):
                row = {"model": m}
                row.update({k: v for k, v in vals.items() if not isinstance(v, dict | list)})
                out.stored_metrics.append(row)
                curve = vals.get("calibration_curve")
                if m not in out.curves and isinstance(curve, list) and curve:
                    out.curves[m] = curve
    elif not out.logged_metrics:
        out.notes.append(
            "The run stored no walk-forward metrics (runs.metrics['models']) either: no AUC, log "
            "loss, Brier score or calibration error can be shown."
        )
    _ml_sections(out, (data.run.get("metrics") or {}).get("ml"))
    return out


def _ml_sections(out: ModelAnalysis, ml: Any) -> None:
    """Gate rejections, the worst reliability bin and the weights over time from
    ``runs.metrics['ml']`` (runs logged before these were stored have none)."""
    from engine.timeutil import fmt_ms

    if not isinstance(ml, dict):
        return
    gates = ml.get("gate_rejections")
    if isinstance(gates, dict):
        out.gate_rejections = [{"symbol": s, **c} for s, c in gates.items() if isinstance(c, dict)]
    worst = ml.get("worst_reliability_bin")
    if isinstance(worst, dict):
        out.worst_bin = worst
    rows = ml.get("weights_over_time")
    if isinstance(rows, list) and rows:
        monthly: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            key = (str(r["symbol"]), fmt_ms(int(r["time"]))[:7])
            monthly.setdefault(key, []).append(r)
        for (sym, month), rs in monthly.items():
            row: dict[str, Any] = {"symbol": sym, "month": month}
            for k in rs[0]:
                if k in ("symbol", "time"):
                    continue
                vals = [float(x[k]) for x in rs if x.get(k) is not None]
                row[k] = round(sum(vals) / len(vals), 3) if vals else None
            out.weights_over_time.append(row)


def _contributions(preds: Any, decisions: Any, models: list[str]) -> list[dict[str, Any]]:
    import polars as pl

    has_weight = preds["weight"].null_count() < preds.height
    ev = preds.with_columns(
        evidence=(
            (pl.col("weight").fill_null(0.0) if has_weight else pl.lit(1.0))
            * pl.col("p").map_batches(
                lambda s: pl.Series(_logit(s.to_numpy().astype(float))), return_dtype=pl.Float64
            )
        ).abs()
    )
    total = float(ev["evidence"].fill_nan(None).sum() or 0.0)
    dec = decisions.select("symbol", "open_time", "action", pl.col("probability").alias("fused"))
    joined = ev.join(dec, on=["symbol", "open_time"], how="left")
    rows = []
    for m in models:
        sub = joined.filter(pl.col("model") == m)
        if not sub.height:
            continue
        share = float(sub["evidence"].fill_nan(None).sum() or 0.0) / total if total > 0 else 0.0
        acted = sub.filter(pl.col("action").is_in(["long", "short"]) & pl.col("p").is_not_nan())
        agree = (
            float(((acted["p"] > 0.5) == (acted["action"] == "long")).mean())
            if acted.height
            else None
        )
        both = sub.filter(
            pl.col("fused").is_not_null() & pl.col("fused").is_not_nan() & pl.col("p").is_not_nan()
        )
        corr = None
        if both.height > 2:
            a, b = both["p"].to_numpy(), both["fused"].to_numpy()
            if a.std() > 0 and b.std() > 0:
                corr = float(np.corrcoef(a, b)[0, 1])
        rows.append(
            {
                "model": m,
                "evidence_share": share,
                "mean_weight": float(sub["weight"].mean()) if has_weight else None,  # type: ignore[arg-type]
                "agreement_with_decisions": agree,
                "corr_with_fused_p": corr,
                "mean_p": float(sub["p"].fill_nan(None).mean() or 0.0),
                "rows": sub.height,
            }
        )
    return rows
