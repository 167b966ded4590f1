"""``engine data ...``: import, download, list and check market data."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Market data: import, download, list and check the local Parquet store.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
