"""``engine query "SQL"``: DuckDB over every run in the run log."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.cli.common import ResultsOpt, console, guarded

FORMATS = ("table", "csv", "json")


def register(app: typer.Typer) -> None:
    app.command("query")(query)


@guarded
def query(
    sql: str = typer.Argument(
        ...,
        help="SQL over the views runs, decisions, trades, orders, equity, predictions, events "
        "(and snapshots, model_predictions, ensemble_decisions, system_events, order_events).",
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="Output: table, csv or json."),
    results: Path | None = ResultsOpt,
    max_rows: int = typer.Option(
        100, "--max-rows", min=1, help="Rows shown by --format table (csv/json print all)."
    ),
) -> None:
    """Run SQL (DuckDB) over all runs: backtests, sweeps and live, one schema."""
    from engine.errors import UsageError
    from engine.runlog.query import format_cell, run_query, to_csv, to_json

    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    table = run_query(sql, results_dir=results)
    if fmt == "json":
        typer.echo(to_json(table))
        return
    if fmt == "csv":
        typer.echo(to_csv(table), nl=False)
        return
    from rich.table import Table

    shown = table.slice(0, max_rows)
    out = Table(show_header=True, header_style="bold", show_lines=False)
    for name in table.column_names:
        out.add_column(name, overflow="fold")
    for row in shown.to_pylist():
        out.add_row(*(format_cell(v) for v in row.values()))
    console.print(out)
    if table.num_rows > max_rows:
        console.print(
            f"[dim]{table.num_rows - max_rows} more row(s) not shown ({table.num_rows} in all); "
            "use --max-rows N, LIMIT, or --format csv|json for everything[/]"
        )
    else:
        console.print(f"[dim]{table.num_rows} row(s)[/]")
