"""The report page: one self-contained HTML file (plotly.js inlined once, no network)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.timeutil import fmt_ms

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from engine.report.data import RunData
    from engine.report.models import ModelAnalysis

MAX_TRADE_ROWS = 500
MAX_EVENT_ROWS = 200

PERCENT_KEYS = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "return"}
METRIC_LABELS = {
    "total_return": "Total return",
    "cagr": "CAGR",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "Max drawdown",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "exposure": "Exposure (bars in a position)",
    "trades": "Trades",
    "fees": "Fees",
    "funding": "Funding",
    "liquidations": "Liquidations",
    "final_equity": "Final equity",
    "initial_equity": "Initial equity",
    "bars": "Bars",
}

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1200px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px;
       border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.meta td { text-align: left; } .note { color: #8a5a00; background: #fff7e0; padding: 6px 10px;
       border-left: 3px solid #e0a800; margin: 8px 0; font-size: 13px; }
.bad { background: #fde8e8; border-left-color: #d62728; color: #8b0000; }
.scroll { max-height: 480px; overflow: auto; } .dim { color: #777; font-size: 12px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_value(key: str, value: Any) -> str:
    """A metric or cell value as text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "–"
        if key in PERCENT_KEYS:
            return f"{100.0 * value:.2f}%"
        if key.endswith("_time") or key == "time":
            return fmt_ms(int(value))
        return f"{value:,.4f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and (
        key.endswith("_time") or key in {"time", "started_at", "finished_at"}
    ):
        return fmt_ms(value)
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str], *, left: set[str] | None = None) -> str:
    """An HTML table of ``rows`` (dicts) over ``columns``."""
    left = left or set()
    head = "".join(f'<th class="{"l" if c in left else ""}">{esc(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="{"l" if c in left else ""}">{esc(fmt_value(c, r.get(c)))}</td>'
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text: str, *, bad: bool = False) -> str:
    return f'<div class="note{" bad" if bad else ""}">{esc(text)}</div>'


def figure_div(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _header(data: RunData) -> str:
    run, params = data.run, data.params
    rows = [
        ("run_id", run["run_id"]),
        ("strategy", run.get("strategy")),
        ("mode", run.get("mode")),
        ("status", run.get("status")),
        ("started", fmt_ms(run.get("started_at"))),
        ("finished", fmt_ms(run.get("finished_at"))),
        ("symbols", ", ".join(data.symbols) or "–"),
        ("interval", params.get("interval", "–")),
        (
            "span",
            f"{fmt_ms(params.get('start'))} → {fmt_ms(params.get('end'))}"
            if params.get("start") is not None
            else "–",
        ),
        ("strategy hash", run.get("strategy_hash") or "–"),
        ("engine version", run.get("engine_version") or "–"),
    ]
    body = "".join(f"<tr><th class='l'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    out = f"<h1>Run report: {esc(run.get('strategy'))}</h1><table class='meta'>{body}</table>"
    if run.get("status") != "ok":
        out += note(
            f"This run's status is '{run.get('status')}': its tables may be incomplete.",
            bad=run.get("status") == "failed",
        )
    return out


def _metrics_section(data: RunData) -> str:
    m = data.metrics
    keys = [k for k in METRIC_LABELS if k in m] + [
        k for k, v in m.items() if k not in METRIC_LABELS and not isinstance(v, dict | list)
    ]
    if not keys:
        return "<h2>Metrics</h2>" + note(f"No metrics: {data.metrics_source}.")
    body = "".join(
        f"<tr><th class='l'>{esc(METRIC_LABELS.get(k, k))}</th><td>{esc(fmt_value(k, m[k]))}</td></tr>"
        for k in keys
    )
    src = "" if data.metrics_source == "runs.metrics" else note(f"Metrics {data.metrics_source}.")
    return f"<h2>Metrics</h2>{src}<table id='metrics-table'>{body}</table>"


def _trades_section(data: RunData) -> str:
    tr = data.trades
    if tr.height == 0:
        return "<h2>Trades</h2><p>No trades.</p>"
    cols = [
        "symbol",
        "side",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
        "quantity",
        "pnl",
        "fees",
        "funding",
        "exit_reason",
    ]
    rows = tr.head(MAX_TRADE_ROWS).select(cols).to_dicts()
    more = (
        f"<p class='dim'>First {MAX_TRADE_ROWS} of {tr.height} trades; all of them: "
        f"engine query \"SELECT * FROM trades WHERE run_id = '{esc(data.run['run_id'])}'\"</p>"
        if tr.height > MAX_TRADE_ROWS
        else f"<p class='dim'>{tr.height} trades.</p>"
    )
    return (
        "<h2>Trades</h2>"
        + more
        + f"<div class='scroll'>{table(rows, cols, left={'symbol', 'side', 'exit_reason'})}</div>"
    )


def _events_section(data: RunData) -> str:
    ev = data.events
    if ev.height == 0:
        return ""
    import polars as pl

    counts = ev.group_by("severity").len().sort("len", descending=True).to_dicts()
    summary = ", ".join(f"{c['severity']}: {c['len']}" for c in counts)
    shown = ev.filter(pl.col("severity").is_in(["warning", "error", "critical"])).tail(
        MAX_EVENT_ROWS
    )
    if shown.height == 0:
        shown = ev.tail(MAX_EVENT_ROWS)
    rows = shown.select("time", "severity", "component", "message").to_dicts()
    return (
        f"<h2>Events</h2><p class='dim'>{esc(summary)}</p><div class='scroll'>"
        + table(
            rows,
            ["time", "severity", "component", "message"],
            left={"severity", "component", "message"},
        )
        + "</div>"
    )


def _models_section(analysis: ModelAnalysis | None) -> tuple[str, list[tuple[go.Figure, str]]]:
    if analysis is None:
        return "", []
    from engine.report.figures import calibration_figure, contribution_figure

    figs: list[tuple[go.Figure, str]] = []
    parts = ["<h2>Models</h2>"]
    parts += [note(n) for n in analysis.notes]
    metric_cols = ["model", "n", "auc", "log_loss", "brier", "calibration_error"]
    if analysis.logged_metrics:
        parts.append("<h3>Out-of-sample over this run (logged predictions vs realised labels)</h3>")
        parts.append(table(analysis.logged_metrics, metric_cols, left={"model"}))
    if analysis.stored_metrics:
        extra = sorted({k for r in analysis.stored_metrics for k in r} - set(metric_cols))
        parts.append("<h3>Walk-forward metrics reported by training (runs.metrics['models'])</h3>")
        parts.append(table(analysis.stored_metrics, metric_cols + extra, left={"model"}))
    if analysis.curves:
        parts.append("<h3>Calibration curve</h3>")
        parts.append("{{calibration}}")
        figs.append((calibration_figure(analysis), "calibration"))
    if analysis.contributions:
        parts.append("<h3>Model contributions</h3>")
        parts.append(
            "<p class='dim'>evidence_share: share of the fused log-odds evidence |w·logit(p)| "
            "(w = 1 when weights are not logged); agreement_with_decisions: how often the model's "
            "side (p > 0.5) matched the ensemble's long/short decisions; corr_with_fused_p: "
            "correlation of its P(up) with the fused P(up).</p>"
        )
        cols = [
            "model",
            "evidence_share",
            "mean_weight",
            "agreement_with_decisions",
            "corr_with_fused_p",
            "mean_p",
            "rows",
        ]
        parts.append(table(analysis.contributions, cols, left={"model"}))
        parts.append("{{contribution}}")
        figs.append((contribution_figure(analysis), "contribution"))
    if analysis.worst_bin:
        w = analysis.worst_bin
        parts.append(
            "<h3>Reliability of the fused probability</h3><p>Worst bin of at least 500 "
            f"out-of-fold bars: ({w['lo']:.1f}, {w['hi']:.1f}], {w['count']:,} bars, mean "
            f"forecast {w['mean_predicted']:.4f}, observed up-frequency "
            f"{w['fraction_positive']:.4f}: {w['gap']:.4f} from the diagonal.</p>"
        )
    if analysis.gate_rejections:
        parts.append("<h3>Gate: bars each condition kept flat</h3>")
        parts.append(
            "<p class='dim'>From the first cutoff, the first condition that applied: no_models, "
            "no_payoff (payoff not known yet), uncertainty, agreement, edge (expected value per "
            "unit risked), net_edge (expected net return after fees and slippage &le; "
            "gate.min_edge_bps); passed: bars the gate let trade.</p>"
        )
        gcols = list(analysis.gate_rejections[0])
        parts.append(table(analysis.gate_rejections, gcols, left={"symbol"}))
    if analysis.weights_over_time:
        parts.append("<h3>Fusion weights over time (monthly mean)</h3>")
        parts.append(
            "<p class='dim'>Each member's weight in the skill-weighted pool: its recent "
            "out-of-fold log-score gain over the base rate, normalized; base_rate: the share "
            "left to the base rate (1 when no member shows skill).</p>"
        )
        wcols = list(analysis.weights_over_time[0])
        parts.append(table(analysis.weights_over_time, wcols, left={"symbol", "month"}))
    if analysis.versions:
        parts.append("<h3>Model versions</h3>")
        parts.append(
            table(
                analysis.versions,
                ["model", "versions", "first", "last", "rows"],
                left={"model", "first", "last"},
            )
        )
    return "".join(parts), figs


def render(data: RunData) -> str:
    """The whole HTML page for one run."""
    from plotly.offline import get_plotlyjs

    from engine.report.figures import equity_figure, monthly_figure, monthly_returns, price_figure
    from engine.report.models import analyse_models

    body = [_header(data), _metrics_section(data)]
    body.append("<h2>Equity and drawdown</h2>")
    if data.equity.height:
        body.append(figure_div(equity_figure(data.equity), "equity"))
    else:
        body.append(note("The run logged no equity."))
    body.append("<h2>Price, entries and exits</h2>")
    body += [note(n) for n in data.notes]
    for i, price in enumerate(data.prices):
        fig, dropped = price_figure(price, data.trades)
        body.append(f"<h3>{esc(price.symbol)}</h3><p class='dim'>price: {esc(price.source)}</p>")
        if dropped:
            body.append(
                note(f"{dropped} earlier trades are not marked (only the last markers fit).")
            )
        body.append(figure_div(fig, f"price-{i}"))
    body.append("<h2>Monthly returns</h2>")
    monthly = monthly_returns(data.equity)
    if monthly.height:
        body.append(figure_div(monthly_figure(monthly), "monthly"))
        rows = [{"month": f"{y}-{m:02d}", "return": r} for y, m, r in monthly.iter_rows()]
        body.append(table(rows, ["month", "return"], left={"month"}))
    else:
        body.append(note("No equity, so no monthly returns."))
    body.append(_trades_section(data))
    section, figs = _models_section(analyse_models(data))
    for fig, name in figs:
        section = section.replace("{{" + name + "}}", figure_div(fig, name))
    body.append(section)
    body.append(_events_section(data))
    body.append(
        f"<p class='dim'>Generated from the run log. Query it: engine query "
        f"\"SELECT * FROM runs WHERE run_id = '{esc(data.run['run_id'])}'\"</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(data.run['run_id'])}</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )


def build_report(
    run_id: str,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the HTML report of ``run_id`` and return its path.

    Parameters
    ----------
    run_id
        A run in the log (unknown ids raise UsageError listing recent runs).
    results_dir
        The results root (default ``$ENGINE_RESULTS`` or ``./results``).
    out
        Output file (default ``<results>/reports/<run_id>.html``).
    store
        Data store for the price chart (default: the store recorded in the run's params).
    """
    from engine import paths
    from engine.report.data import load_run

    data = load_run(run_id, results_dir=results_dir, store=store)
    page = render(data)
    target = Path(out) if out else paths.results_dir(results_dir) / "reports" / f"{run_id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
