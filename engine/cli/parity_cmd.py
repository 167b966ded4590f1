"""``engine parity RUN_ID``: a live run against the backtest over the same bars."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import TYPE_CHECKING

import typer

from engine.cli.common import ProgressBar, ResultsOpt, StoreOpt, console, guarded
from engine.timeutil import fmt_ms

if TYPE_CHECKING:
    from engine.parity import ParityReport


def register(app: typer.Typer) -> None:
    app.command("parity")(parity)


@guarded
def parity(
    run_id: str = typer.Argument(..., help="The live run's id (runs.mode = 'live')."),
    against: str | None = typer.Option(
        None, "--against",
        help="Compare with this backtest's run id instead of rerunning the backtest.",
    ),
    json_out: bool = typer.Option(
        False, "--json",
        help='Print one JSON object {"bars_compared", "decision_mismatches", "size_mismatches", '
        '"fill_differences", "first_mismatches", ...} on stdout, nothing else.',
    ),
    store: str | None = StoreOpt,
    results: str | None = ResultsOpt,
) -> None:
    """Did live do what the backtest would have done? Compare a live run bar by bar.

    Without --against, reruns the backtest over exactly the live run's bars, settings and
    warm-up (logged like any backtest). Compares over the live bars: action, target position,
    confidence and probability, then fills (time, side, quantity, price to the venue's
    precision, fee). Exit 1 when any decision (action) differs, 0 otherwise, 2 on a usage
    error (nothing written).
    """
    from engine.parity import parity_report

    if json_out:
        report = parity_report(run_id, against=against, results=results, store=store)
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        with ProgressBar(f"parity {run_id}") as progress:
            report = parity_report(run_id, against=against, results=results, store=store,
                                   progress=progress)
        _print(report)
    if not report.ok:
        raise typer.Exit(1)


def _print(r: ParityReport) -> None:
    from rich.table import Table

    made = "rerun now" if r.rerun else "given"
    console.print(
        f"[bold]parity[/] live {r.run_id} vs backtest {r.against} ({made})\n"
        f"  {', '.join(r.symbols)} {r.interval}, live bars {fmt_ms(r.first_live_bar)} .. "
        f"{fmt_ms(r.last_bar)}", highlight=False)
    table = Table(show_header=False)
    table.add_column("what", style="cyan")
    table.add_column("count", justify="right")
    rows = (
        ("Bars compared", r.bars_compared), ("Decisions compared", r.decisions_compared),
        ("Decision mismatches (action)", r.decision_mismatches),
        ("Size mismatches (target)", r.size_mismatches),
        ("Value mismatches (confidence, probability)", r.value_mismatches),
        ("Fills compared", r.fills_compared), ("Fill differences", r.fill_differences),
        ("Backtest fills in the warm-up", r.warmup_fills),
        ("Stale live bars (closed while down: not traded, values compared)", r.stale_decisions),
    )
    for label, n in rows:
        table.add_row(label, f"{n:,}")
    console.print(table)
    first = r.first_mismatches()
    if first:
        diff = Table(title="First differences", title_justify="left")
        for col in ("kind", "bar (UTC)", "symbol", "leg", "field", "live", "backtest"):
            diff.add_column(col)
        for m in first:
            diff.add_row(m.kind, fmt_ms(m.open_time), m.symbol, m.leg or "", m.field,
                         _cell(m.field, m.live), _cell(m.field, m.backtest))
        console.print(diff)
    verdict = "[green]no decision differs[/]" if r.ok else "[red]decisions differ[/]"
    console.print(verdict)


def _cell(field: str, value: object) -> str:
    """A value of the differences table; a fill's time (UTC ms) to the millisecond.

    >>> _cell("time", 1704085022398), _cell("price", 42399.2), _cell("action", None)
    ('2024-01-01 04:57:02.398', '42399.2', '-')
    """
    if value is None:
        return "-"
    if field == "time" and isinstance(value, int):
        t = dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
        return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{value % 1000:03d}"
    return str(value)
