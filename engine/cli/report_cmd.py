"""``engine report RUN_ID``: a self-contained HTML report of one run."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.cli.common import ResultsOpt, console, guarded


def register(app: typer.Typer) -> None:
    app.command("report")(report)


@guarded
def report(
    run_id: str = typer.Argument(
        ..., help='The run to report (see: engine query "SELECT run_id FROM runs").'
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output HTML file (default: <results>/reports/<run_id>.html)."
    ),
    results: Path | None = ResultsOpt,
    store: Path | None = typer.Option(
        None,
        "--store",
        help="Data store for the price chart (default: the store the run recorded, "
        "else $ENGINE_DATA or ./data).",
    ),
) -> None:
    """Write a self-contained HTML report: metrics, equity, drawdown, trades, models."""
    from engine.report import build_report

    path = build_report(run_id, results_dir=results, out=out, store=store)
    console.print(f"report written to [bold]{path}[/]", highlight=False)
