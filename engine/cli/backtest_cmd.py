"""``engine backtest STRATEGY.yaml``: run a strategy graph over stored history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from engine.cli.common import (
    EndOpt,
    ProgressBar,
    ResultsOpt,
    SetOpt,
    StartOpt,
    StoreOpt,
    SymbolsOpt,
    console,
    guarded,
)
from engine.timeutil import fmt_ms

if TYPE_CHECKING:
    from engine.backtest import BacktestResult

#: metrics shown in the summary table: key -> (label, format)
SHOWN = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("win_rate", "Win rate", "pct"),
    ("profit_factor", "Profit factor", "num"),
    ("exposure", "Exposure", "pct"),
    ("trades", "Trades", "int"),
    ("fees", "Fees", "money"),
    ("funding", "Funding (+ received)", "money"),
    ("liquidations", "Liquidations", "int"),
    ("final_equity", "Final equity", "money"),
)


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)


@guarded
def backtest(
    strategy: str = typer.Argument(..., help="Strategy YAML file, e.g. strategies/ema_cross.yaml."),
    start: str | None = StartOpt,
    end: str | None = EndOpt,
    symbols: str | None = SymbolsOpt,
    set_: list[str] | None = SetOpt,
    json_out: bool = typer.Option(
        False,
        "--json",
        help='Print one JSON object {"run_id", "metrics"} on stdout, nothing else '
        "(ML strategies: per-model scores under metrics.models, versions under metrics.ml).",
    ),
    store: str | None = StoreOpt,
    results: str | None = ResultsOpt,
) -> None:
    """Backtest a strategy over stored history and log the run (query it with `engine query`).

    A decision at the close of bar t fills at the open of bar t+1. Prints a metrics table
    (or, with --json, exactly one JSON object on stdout). Exit 2 on a config error, 1 on
    missing data; in both cases nothing is written.
    """
    from engine.backtest import run_backtest
    from engine.strategy import load_strategy

    sym_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols is not None else None
    graph = load_strategy(strategy, overrides=set_ or [], symbols=sym_list, start=start, end=end)

    with ProgressBar(graph.name) as progress:
        result = run_backtest(graph, store=store, results=results, progress=progress)

    if json_out:
        import json
        import sys

        sys.stdout.write(json.dumps({"run_id": result.run_id, "metrics": result.metrics}) + "\n")
        sys.stdout.flush()
        return
    _print_table(result)


def _fmt(value: object, kind: str) -> str:
    if not isinstance(value, int | float):
        return str(value)
    if kind == "pct":
        return f"{value * 100:,.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:,.3f}"


def _print_table(r: BacktestResult) -> None:
    from rich.table import Table

    m, market, graph = r.metrics, r.market, r.graph
    title = (
        f"{graph.name}  {', '.join(market.symbols)} {market.interval}  "
        f"{fmt_ms(int(market.open_time[0]))} .. {fmt_ms(int(market.open_time[-1]))}"
    )
    console.print(f"[bold]{title}[/]", highlight=False)
    table = Table(show_header=False)
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key, label, kind in SHOWN:
        if key in m:
            table.add_row(label, _fmt(m[key], kind))
    console.print(table)
    models = m.get("models")
    if isinstance(models, dict) and models:
        _print_models(models, m.get("ml"))
    console.print(f"run_id [bold]{r.run_id}[/]", highlight=False)
    console.print(
        f"  engine query \"select * from trades where run_id = '{r.run_id}' limit 10\"",
        highlight=False,
    )


#: per-model columns of the ML summary: key -> (header, format)
MODEL_COLUMNS = (
    ("auc", "AUC", "num"),
    ("log_loss", "Log loss", "num"),
    ("brier", "Brier", "num"),
    ("calibration_error", "ECE", "num"),
    ("weight", "Contribution", "pct"),
    ("n", "OOF bars", "int"),
)


def _print_models(models: dict[str, object], ml: object) -> None:
    """Walk-forward scores per model on out-of-fold bars (runs.metrics['models'])."""
    from rich.table import Table

    info = ml if isinstance(ml, dict) else {}
    title = "Models: walk-forward, out-of-fold"
    if info:
        title += f" ({info.get('models_fitted', 0)} versions fitted, {info.get('models_reused', 0)} reused)"
    table = Table(title=title, title_justify="left")
    table.add_column("model", style="cyan")
    for _key, header, _kind in MODEL_COLUMNS:
        table.add_column(header, justify="right")
    for name, vals in models.items():
        if not isinstance(vals, dict):
            continue
        cells = [
            "-" if vals.get(key) is None else _fmt(vals[key], kind)
            for key, _header, kind in MODEL_COLUMNS
        ]
        table.add_row(name, *cells)
    console.print(table)
