"""Plotly figures of the report. Long series are thinned to at most ``MAX_POINTS`` per trace
(equity: the last mark of each bucket; drawdown: the deepest; price: the last close), so a
16-month 5m run stays a few MB and draws instantly; markers for trades are exact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import polars as pl

    from engine.report.data import PriceSeries
    from engine.report.models import ModelAnalysis

MAX_POINTS = 4000
MAX_MARKERS = 5000
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def to_datetime(ms: Any) -> np.ndarray:
    """UTC ms to numpy datetime64[ms] (plotly shows them as dates)."""
    return np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")


def thin(n: int) -> tuple[np.ndarray, int]:
    """Bucket starts and size so that ``n`` points become at most ``MAX_POINTS``."""
    k = max(1, -(-n // MAX_POINTS))
    return np.arange(0, n, k), k


def _bucket_last(x: np.ndarray, k: int) -> np.ndarray:
    idx = np.minimum(np.arange(0, x.size, k) + k - 1, x.size - 1)
    return x[idx]


def _bucket_max(x: np.ndarray, k: int) -> np.ndarray:
    return np.maximum.reduceat(x, np.arange(0, x.size, k)) if x.size else x


def equity_figure(equity: pl.DataFrame) -> go.Figure:
    """Equity (top) and drawdown (bottom) over time."""
    from plotly.subplots import make_subplots

    from engine.metrics import drawdown

    t = equity["time"].to_numpy()
    eq = equity["equity"].to_numpy().astype(float)
    dd = drawdown(eq)
    _, k = thin(t.size)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04
    )
    fig.add_scatter(
        x=to_datetime(_bucket_last(t, k)),
        y=_bucket_last(eq, k),
        name="equity",
        row=1,
        col=1,
        line={"color": "#1f77b4", "width": 1.5},
    )
    fig.add_scatter(
        x=to_datetime(_bucket_last(t, k)),
        y=-100.0 * _bucket_max(dd, k),
        name="drawdown %",
        fill="tozeroy",
        row=2,
        col=1,
        line={"color": "#d62728", "width": 1},
    )
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown %", row=2, col=1)
    fig.update_layout(height=520, margin={"l": 60, "r": 20, "t": 30, "b": 40}, showlegend=False)
    return fig


def price_figure(price: PriceSeries, trades: pl.DataFrame) -> tuple[go.Figure, int]:
    """Close price with entries and exits of one symbol; returns the figure and markers left out."""
    import plotly.graph_objects as go
    import polars as pl

    _, k = thin(price.times.size)
    fig = go.Figure()
    fig.add_scatter(
        x=to_datetime(_bucket_last(price.times, k)),
        y=_bucket_last(price.close.astype(float), k),
        name=f"{price.symbol} close",
        line={"color": "#555", "width": 1},
    )
    tr = trades.filter(pl.col("symbol") == price.symbol)
    dropped = max(0, tr.height - MAX_MARKERS)
    tr = tr.tail(MAX_MARKERS)
    size = 9 if tr.height <= 300 else 5  # many trades: small markers keep the price readable
    for side, color, symbol in (
        ("long", "#2ca02c", "triangle-up"),
        ("short", "#d62728", "triangle-down"),
    ):
        s = tr.filter(pl.col("side") == side)
        if s.height:
            fig.add_scatter(
                x=to_datetime(s["entry_time"].to_numpy()),
                y=s["entry_price"].to_numpy(),
                mode="markers",
                name=f"{side} entry",
                marker={
                    "symbol": symbol,
                    "color": color,
                    "size": size,
                    "line": {"width": 0.5, "color": "#000"},
                },
            )
    ex = tr.filter(pl.col("exit_time").is_not_null())
    if ex.height:
        fig.add_scatter(
            x=to_datetime(ex["exit_time"].to_numpy()),
            y=ex["exit_price"].to_numpy(),
            mode="markers",
            name="exit",
            text=ex["exit_reason"].to_list(),
            marker={"symbol": "x", "color": "rgba(0,0,0,0.6)", "size": max(4, size - 2)},
        )
    fig.update_layout(
        height=420,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        yaxis_title="price",
        legend={"orientation": "h", "y": 1.08},
    )
    return fig, dropped


def monthly_returns(equity: pl.DataFrame) -> pl.DataFrame:
    """``year, month, return``: each month's last equity over the previous month's (the first
    month over the first mark)."""
    import polars as pl

    if equity.height == 0:
        return pl.DataFrame(schema={"year": pl.Int32, "month": pl.Int8, "return": pl.Float64})
    first = float(equity["equity"][0])
    m = (
        equity.with_columns(dt=pl.from_epoch("time", time_unit="ms"))
        .group_by(year=pl.col("dt").dt.year(), month=pl.col("dt").dt.month(), maintain_order=True)
        .agg(last=pl.col("equity").last())
        .sort("year", "month")
    )
    prev = m["last"].shift(1).fill_null(first)
    ret = np.where(prev.to_numpy() > 0, m["last"].to_numpy() / prev.to_numpy() - 1.0, 0.0)
    return m.select("year", "month").with_columns(**{"return": pl.Series(ret)})


def monthly_figure(monthly: pl.DataFrame) -> go.Figure:
    """Heatmap of monthly returns (rows: years; columns: months)."""
    import plotly.graph_objects as go

    years = sorted(set(monthly["year"].to_list()))
    z = np.full((len(years), 12), np.nan)
    for y, mo, r in monthly.iter_rows():
        z[years.index(y), mo - 1] = 100.0 * r
    text = [[("" if np.isnan(v) else f"{v:+.2f}%") for v in row] for row in z]
    lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(MONTHS),
            y=[str(y) for y in years],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmid=0.0,
            zmin=-lim,
            zmax=lim,
            colorbar={"title": "%"},
            hoverongaps=False,
        )
    )
    fig.update_layout(height=120 + 50 * len(years), margin={"l": 60, "r": 20, "t": 20, "b": 40})
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def calibration_figure(analysis: ModelAnalysis) -> go.Figure:
    """Reliability diagram: observed frequency of up against mean predicted P(up), per model."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name="perfectly calibrated",
        line={"dash": "dash", "color": "#999"},
    )
    for model, curve in analysis.curves.items():
        fig.add_scatter(
            x=[b["mean_predicted"] for b in curve],
            y=[b["fraction_positive"] for b in curve],
            mode="lines+markers",
            name=model,
            text=[f"n={b.get('count', '')}" for b in curve],
        )
    fig.update_layout(
        height=420,
        xaxis_title="mean predicted P(up)",
        yaxis_title="observed fraction up",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1]},
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
    )
    return fig


def contribution_figure(analysis: ModelAnalysis) -> go.Figure:
    """Each model's share of the fused log-odds evidence."""
    import plotly.graph_objects as go

    rows = analysis.contributions
    fig = go.Figure(
        go.Bar(
            x=[r["model"] for r in rows],
            y=[100.0 * r["evidence_share"] for r in rows],
            text=[f"{100.0 * r['evidence_share']:.1f}%" for r in rows],
            textposition="auto",
        )
    )
    fig.update_layout(
        height=320, yaxis_title="share of evidence %", margin={"l": 60, "r": 20, "t": 20, "b": 40}
    )
    return fig
