"""``engine dashboard RUN_ID``: the live dashboard's page over a finished run, with a time slider."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.cli.common import ResultsOpt, console, guarded


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)


@guarded
def dashboard(
    run_id: str = typer.Argument(
        ..., help='The run to show (see: engine query "SELECT run_id FROM runs").'
    ),
    port: int = typer.Option(
        8787, "--port", min=0, max=65535, help="Port to serve on (0: any free port)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (non-loopback needs --token)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="ENGINE_DASHBOARD_TOKEN",
        help="Token the page and socket require (?token=...); needed for a non-loopback --host.",
    ),
    start: str | None = typer.Option(
        None, "--start", help="First bar to show (UTC, e.g. 2024-01-01; default: the run's)."
    ),
    end: str | None = typer.Option(
        None, "--end", help="Last bar to show (UTC; default: the run's)."
    ),
    results: Path | None = ResultsOpt,
    store: Path | None = typer.Option(
        None, "--store", help="Data store for the candles (default: the store the run recorded)."
    ),
) -> None:
    """Serve the dashboard of a finished run (backtest, sweep child or live) until Ctrl-C:
    equity, drawdown, candles with entries and exits, orders, decisions with each model's
    probability, and a time slider to step through the run."""
    from engine.dashboard.replay import serve_run
    from engine.timeutil import parse_end, parse_time

    def ready(url: str) -> None:
        console.print(
            f"dashboard of {run_id} on [bold]{url}[/]"
            + (" (add ?token=...)" if token else "")
            + "; Ctrl-C stops",
            highlight=False,
            soft_wrap=True,
        )

    try:
        serve_run(
            run_id,
            host=host,
            port=port,
            token=token,
            results=results,
            store=store,
            on_ready=ready,
            start=parse_time(start, name="--start"),
            end=parse_end(end, name="--end"),
        )
    except KeyboardInterrupt:
        console.print("dashboard stopped", highlight=False)
