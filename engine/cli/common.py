"""Shared CLI helpers: error printing, the error-to-exit-code guard, common options, and the
one drawer of progress reports (:class:`ProgressBar`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from engine.errors import EngineError

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

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
# A strategy's params and keys, overridden from the command line (backtest, validate, live, ...).
SetOpt = typer.Option(
    None,
    "--set",
    help="Override a param (name=value) or any key by its dotted path (risk.fraction=0.2). Repeatable.",
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


class ProgressBar:
    """Draws the reports of :mod:`engine.progress` on stderr: one transient rich line.

    It is the ``progress(task, done, total)`` callable the CLI hands to library calls. The
    line shows the latest report: ``<title>: <task>``, a bar of ``done`` out of ``total``
    (a pulsing bar while ``total`` is None), ``done/total`` and the elapsed time, so a task
    nested in another (the folds of an ML strategy inside a backtest's decisions step) takes
    the line until its parent reports again. When stderr is not a terminal rich draws no bar.

    >>> with ProgressBar("demo") as progress:
    ...     progress("simulate", 2, 5)
    """

    def __init__(self, title: str, *, console: Console | None = None) -> None:
        self.title = title
        self.console = console or err_console
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.title, total=None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, task: str, done: int, total: int | None) -> None:
        """One report: the line shows it (a report after the block ended is ignored)."""
        if self._bar is not None:
            self._bar.update(
                self._task, description=f"{self.title}: {task}", completed=done, total=total
            )
