"""Shared CLI helpers: error printing, the error-to-exit-code guard, common options."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from engine.errors import EngineError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

StoreOpt = typer.Option(
    None, "--store", help="Data store directory (default: $ENGINE_DATA or ./data)."
)
# A strategy's span and symbols, overridden from the command line (backtest, sweep, live).
StartOpt = typer.Option(
    None, "--start", help="First bar (ISO date/time or ms); overrides data.start."
)
EndOpt = typer.Option(
    None, "--end", help="Last bar, inclusive (a date means the whole day); overrides data.end."
)
SymbolsOpt = typer.Option(
    None, "--symbols", help="Comma-separated symbols; overrides data.symbols."
)
ResultsOpt = typer.Option(
    None, "--results", help="Results directory (default: $ENGINE_RESULTS or ./results)."
)


def print_error(err: EngineError) -> None:
    """Print an EngineError (message and hint) to stderr (their text is not rich markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(err.message)}", highlight=False, soft_wrap=True)
    if err.hint:
        err_console.print(f"[yellow]hint:[/] {escape(err.hint)}", highlight=False, soft_wrap=True)


def guarded(fn: F) -> F:
    """Decorator for command bodies: an EngineError becomes a message and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EngineError as err:
            print_error(err)
            sys.exit(err.exit_code)

    return wrapper  # type: ignore[return-value]
