"""``engine report SWEEP_ID``: a self-contained HTML page of one sweep (plotly, no network).

Sections: the sweep's header (strategy, grid, span, sort), the metric as a heatmap over two
chosen axes (``x``/``y``; default the grid's first two; every other axis collapsed to its best
value for the cell), the top combinations, and for a walk-forward sweep its windows (choice,
in-sample vs out-of-sample metrics), the degradation and the stitched out-of-sample equity
curve. The combinations come from the parent's child runs (``parent_run_id``).

Public API: ``build_sweep_report(run_id, *, results_dir=None, out=None, x=None, y=None,
metric=None, top=20) -> Path``; ``is_sweep(run)`` tells a sweep's parent run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.report.page import CSS, esc, figure_div, fmt_value, note, table
from engine.timeutil import fmt_ms

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl

#: metrics where lower is better (a sweep's ``LOWER_IS_BETTER``; the report layer sits below
#: sweep, so it reads the parent run's sort and this list)
LOWER = frozenset({"max_drawdown", "fees", "liquidations"})
TOP_COLUMNS = ("sharpe", "total_return", "max_drawdown", "win_rate", "profit_factor", "trades")


def is_sweep(run: dict[str, Any]) -> bool:
    """A sweep's parent run (mode ``sweep``, no parent of its own)."""
    return run.get("mode") == "sweep" and not run.get("parent_run_id")


def _value(m: dict[str, Any], key: str) -> float | None:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _better(a: float | None, b: float | None, lower: bool) -> bool:
    if a is None:
        return False
    return b is None or (a < b if lower else a > b)


def heatmap_cells(
    combos: list[tuple[dict[str, Any], dict[str, Any]]],
    x: str,
    y: str | None,
    metric: str,
    xs: list[Any],
    ys: list[Any],
) -> list[list[float | None]]:
    """``[y][x]`` cells: the best ``metric`` of the combinations with those two values."""
    lower = metric in LOWER
    z: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for params, metrics in combos:
        if params.get(x) not in xs or (y is not None and params.get(y) not in ys):
            continue
        i = ys.index(params[y]) if y is not None else 0
        j = xs.index(params[x])
        v = _value(metrics, metric)
        if _better(v, z[i][j], lower):
            z[i][j] = v
    return z


def heatmap_figure(
    z: list[list[float | None]], xs: list[Any], ys: list[Any], x: str, y: str | None, metric: str
) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(v) for v in xs],
            y=[str(v) for v in ys],
            colorscale="RdYlGn_r" if metric in LOWER else "RdYlGn",
            colorbar={"title": metric},
            text=[["" if v is None else f"{v:.3g}" for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate=f"{x}=%{{x}}<br>{y or ''}=%{{y}}<br>{metric}=%{{z}}<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(300, 60 + 36 * len(ys)),
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        xaxis={"title": x, "type": "category"},
        yaxis={"title": y or "", "type": "category"},
    )
    return fig


def _load(run_id: str, results_dir: Any) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    from engine.report.data import unknown_run_error
    from engine.runlog import RunLog

    with RunLog(results_dir) as log:
        run = log.get_run(run_id)
        if run is None:
            raise unknown_run_error(log, run_id)
        if not is_sweep(run):
            raise UsageError(f"run {run_id!r} is not a sweep's parent run (mode {run['mode']!r})")
        db = log.store.conn()
        with log.store.lock:
            ids = [
                str(r[0])
                for r in db.execute(
                    "SELECT run_id FROM runs WHERE parent_run_id = ? ORDER BY rowid", (run_id,)
                ).fetchall()
            ]
        children = [c for c in (log.get_run(i) for i in ids) if c is not None]
        wf = (run.get("params") or {}).get("walk_forward")
        equity = None
        if wf is not None:
            oos = next((c for c in children if (c["params"] or {}).get("walk_forward")), None)
            equity = log.read(oos["run_id"], "equity").sort("time") if oos else None
    return run, children, equity


def _axes(params: dict[str, Any]) -> dict[str, list[Any]]:
    grid = params.get("grid") or {}
    return {str(k): list(v) for k, v in grid.items()} if isinstance(grid, dict) else {}


def _pick_axes(axes: dict[str, list[Any]], x: str | None, y: str | None) -> tuple[str, str | None]:
    names = list(axes)
    for a in (x, y):
        if a is not None and a not in axes:
            raise UsageError(
                f"--x/--y {a!r} is not an axis of this sweep", hint=f"axes: {', '.join(names)}"
            )
    x = x or names[0]
    if y is None:
        y = next((n for n in names if n != x), None)
    if y == x:
        raise UsageError("--x and --y name the same axis", hint=f"axes: {', '.join(names)}")
    return x, y


def render_sweep(
    run: dict[str, Any],
    children: list[dict[str, Any]],
    equity: pl.DataFrame | None,
    *,
    x: str | None = None,
    y: str | None = None,
    metric: str | None = None,
    top: int = 20,
) -> str:
    """The HTML page of a sweep's parent run and its children."""
    from plotly.offline import get_plotlyjs

    from engine.report.figures import equity_figure

    params = run.get("params") or {}
    metrics = run.get("metrics") or {}
    metric = metric or params.get("sort") or "sharpe"
    axes = _axes(params)
    combos = [
        (c["params"]["sweep"]["combo"], c.get("metrics") or {})
        for c in children
        if isinstance((c.get("params") or {}).get("sweep"), dict)
    ]
    body = [f"<h1>Sweep {esc(run['run_id'])}</h1>"]
    meta = [
        ("strategy", run.get("strategy")),
        ("strategy file", params.get("strategy_file")),
        ("grid", ", ".join(f"{k}: {v}" for k, v in axes.items()) or params.get("grid")),
        (
            "combinations" + (" per in-sample window" if params.get("walk_forward") else ""),
            params.get("combos", len(combos)),
        ),
        ("symbols", ", ".join(params.get("symbols") or [])),
        ("span", f"{fmt_ms(params.get('start'))} .. {fmt_ms(params.get('end'))}"),
        ("sorted by", params.get("sort")),
        ("status", run.get("status")),
    ]
    body.append(
        "<table class='meta'>"
        + "".join(f"<tr><th class='l'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta)
        + "</table>"
    )
    figs: list[tuple[go.Figure, str]] = []
    if combos and not any(_value(m, metric) is not None for _, m in combos):
        raise UsageError(
            f"--metric {metric!r}: no combination of this sweep has it",
            hint="e.g. sharpe, total_return, max_drawdown, win_rate, profit_factor, trades",
        )
    if combos and axes:
        hx, hy = _pick_axes(axes, x, y)
        xs, ys = axes[hx], (axes[hy] if hy else [""])
        z = heatmap_cells(combos, hx, hy, metric, xs, ys)
        others = [a for a in axes if a not in (hx, hy)]
        body.append(f"<h2>{esc(metric)} over {esc(hx)}" + (f" x {esc(hy)}" if hy else "") + "</h2>")
        if others:
            body.append(note(f"each cell: the best {metric} over {', '.join(others)}"))
        body.append("{{heatmap}}")
        figs.append((heatmap_figure(z, xs, ys, hx, hy, metric), "heatmap"))
        lower = metric in LOWER
        ranked = sorted(
            combos,
            key=lambda pm: (
                _value(pm[1], metric) is None,
                (1 if lower else -1) * (_value(pm[1], metric) or 0.0),
            ),
        )[:top]
        cols = list(dict.fromkeys([*axes, metric, *TOP_COLUMNS]))
        body.append(f"<h2>Top {len(ranked)} by {esc(metric)}</h2>")
        body.append(table([{**m, **p} for p, m in ranked], cols, left=set()))
    wf = metrics.get("walk_forward")
    if isinstance(wf, dict):
        body += _walk_forward(wf, metrics, params)
        if equity is not None and equity.height:
            body.append("<h3>Stitched out-of-sample equity</h3>{{oos}}")
            figs.append((equity_figure(equity), "oos"))
    if not combos and not isinstance(wf, dict):
        body.append(note("This sweep logged no combinations."))
    page = "\n".join(body)
    for fig, name in figs:
        page = page.replace("{{" + name + "}}", figure_div(fig, name))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(run['run_id'])}</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        + page
        + "</body></html>"
    )


def _walk_forward(wf: dict[str, Any], metrics: dict[str, Any], params: dict[str, Any]) -> list[str]:
    sort = params.get("sort") or "sharpe"
    spec = params.get("walk_forward") or {}
    out = [
        f"<h2>Walk-forward: in-sample {esc(spec.get('in_sample'))}, "
        f"out-of-sample {esc(spec.get('out_of_sample'))}</h2>"
    ]
    rows = []
    for w in wf.get("windows") or []:
        rows.append(
            {
                "window": w["index"],
                "in-sample": f"{fmt_ms(w['is_start'])} .. {fmt_ms(w['is_end'])}",
                "out-of-sample": f"{fmt_ms(w['oos_start'])} .. {fmt_ms(w['oos_end'])}",
                "chosen": ", ".join(f"{k}={v}" for k, v in (w.get("params") or {}).items()),
                f"IS {sort}": (w.get("in_sample") or {}).get(sort),
                f"OOS {sort}": (w.get("out_of_sample") or {}).get(sort),
                "IS total_return": (w.get("in_sample") or {}).get("total_return"),
                "OOS total_return": (w.get("out_of_sample") or {}).get("total_return"),
            }
        )
    cols = list(rows[0]) if rows else []
    out.append(table(rows, cols, left={"in-sample", "out-of-sample", "chosen"}))
    deg = [
        {"metric": k, **{kk: vv for kk, vv in v.items()}}
        for k, v in (wf.get("degradation") or {}).items()
    ]
    out.append("<h3>In-sample vs out-of-sample (mean over windows)</h3>")
    out.append(
        table(deg, ["metric", "in_sample", "out_of_sample", "diff", "ratio"], left={"metric"})
    )
    shown = {k: metrics.get(k) for k in ("total_return", "sharpe", "max_drawdown", "trades")}
    out.append(
        "<p>stitched out-of-sample run: "
        + ", ".join(f"{esc(k)} {esc(fmt_value(k, v))}" for k, v in shown.items())
        + f" (run {esc(wf.get('oos_run_id'))})</p>"
    )
    return out


def build_sweep_report(
    run_id: str,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    x: str | None = None,
    y: str | None = None,
    metric: str | None = None,
    top: int = 20,
) -> Path:
    """Write the HTML report of sweep ``run_id`` and return its path."""
    from engine import paths

    run, children, equity = _load(run_id, results_dir)
    page = render_sweep(run, children, equity, x=x, y=y, metric=metric, top=top)
    target = Path(out) if out else paths.results_dir(results_dir) / "reports" / f"{run_id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
