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
    x: str | None = typer.Option(
        None, "--x", help="Sweep: the heatmap's x axis (default: the first)."
    ),
    y: str | None = typer.Option(
        None, "--y", help="Sweep: the heatmap's y axis (default: the second)."
    ),
    metric: str | None = typer.Option(
        None, "--metric", help="Sweep: the metric shown and ranked (default: the sweep's --sort)."
    ),
    top: int = typer.Option(20, "--top", min=1, help="Sweep: how many top combinations to list."),
) -> None:
    """Write a self-contained HTML report: metrics, equity, drawdown, trades, models.

    For a sweep's run id: the metric as a heatmap over two axes (--x, --y, --metric), the
    top combinations, and a walk-forward sweep's windows and out-of-sample curve."""
    from engine.report import build_report
    from engine.report.sweep import build_sweep_report, is_sweep
    from engine.runlog import RunLog

    with RunLog(results) as log:
        run = log.get_run(run_id) if log.sqlite_path.exists() else None
    if run is not None and is_sweep(run):
        path = build_sweep_report(
            run_id, results_dir=results, out=out, x=x, y=y, metric=metric, top=top
        )
    else:
        path = build_report(run_id, results_dir=results, out=out, store=store)
    console.print(f"report written to [bold]{path}[/]", highlight=False)
