"""``engine validate STRATEGY.yaml``: check a strategy file and print its graph."""

from __future__ import annotations

import typer

from engine.cli.common import SetOpt, console, guarded


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


@guarded
def validate(
    strategy: str = typer.Argument(..., help="Strategy YAML file, e.g. strategies/ema_cross.yaml."),
    set_: list[str] | None = SetOpt,
) -> None:
    """Check a strategy file (schema, params, rules, features, symbols) and print its graph.

    Exits 2 with the file, line, YAML path and a suggested fix on the first problem; writes
    nothing.
    """
    from rich.table import Table

    from engine.strategy import load_strategy

    graph = load_strategy(strategy, overrides=set_ or [])
    table = Table(
        title=f"{graph.name}: valid", title_justify="left", show_header=True, header_style="bold"
    )
    table.add_column("node", style="cyan", no_wrap=True)
    table.add_column("")
    for node, text in graph.nodes():
        table.add_row(node, text)
    console.print(table)
