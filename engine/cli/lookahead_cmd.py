"""``engine lookahead STRATEGY``: does any output of the graph read a later bar?"""

from __future__ import annotations

import json
import sys
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
    from engine.lookahead import LookaheadReport

#: rows of the differences table shown (the JSON carries them all)
SHOWN = 40


def register(app: typer.Typer) -> None:
    app.command("lookahead")(lookahead)


@guarded
def lookahead(
    strategy: str = typer.Argument(..., help="Strategy YAML file, e.g. strategies/ensemble.yaml."),
    cuts: int = typer.Option(5, "--cuts", min=0, help="Random prefixes to run (K)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random cuts."),
    edges: int = typer.Option(
        0,
        "--edges",
        min=0,
        help="Also cut at this many random edge bars: a funding time or a "
        "higher-timeframe close at the bar's close, a fold's cutoff and the label horizon after it.",
    ),
    at: list[str] | None = typer.Option(
        None,
        "--at",
        help="Also cut at this bar (open time; repeatable), e.g. to rerun a "
        "cut that differed: --cuts 0 --at 2023-08-24T07:55.",
    ),
    start: str | None = StartOpt,
    end: str | None = EndOpt,
    symbols: str | None = SymbolsOpt,
    set_: list[str] | None = SetOpt,
    json_out: bool = typer.Option(
        False,
        "--json",
        help='Print one JSON object {"ok", "cuts", "differing_columns", "differences", ...} '
        "on stdout, nothing else.",
    ),
    store: str | None = StoreOpt,
    results: str | None = ResultsOpt,
) -> None:
    """Prove the graph has no lookahead: rerun it on K random prefixes of the span.

    Runs the whole graph (features, walk-forward models, fusion, risk, simulator) over the
    span, then over the same start up to K random bars, and compares every feature column,
    model prediction (each member and the fused one) and decision (action, target,
    confidence, probability, ...) on the bars each prefix shares with the whole run. Exit 1
    when anything differs, 0 when none does, 2 on a usage or config error. Models are
    trained into (or reused from) RESULTS/models; no run is logged.
    """
    from engine.lookahead import lookahead_check

    sym_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols is not None else None
    kw = dict(
        cuts=cuts,
        seed=seed,
        at=at or [],
        edges=edges,
        overrides=set_ or [],
        symbols=sym_list,
        start=start,
        end=end,
        store=store,
        results=results,
    )
    if json_out:
        report = lookahead_check(strategy, **kw)  # type: ignore[arg-type]
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        with ProgressBar(f"lookahead {strategy}") as progress:
            report = lookahead_check(strategy, progress=progress, **kw)  # type: ignore[arg-type]
        _print(report)
    if not report.ok:
        raise typer.Exit(1)


def _print(r: LookaheadReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]lookahead[/] {escape(r.strategy)}  {', '.join(r.symbols)} {r.interval}  "
        f"{fmt_ms(r.start)} .. {fmt_ms(r.end)} ({r.n_bars:,} bars; first bar past warm-up "
        f"{r.first_live_bar:,})",
        highlight=False,
    )
    cols = ", ".join(f"{n} {kind}" for kind, n in r.columns.items() if n)
    console.print(f"  output columns compared (all symbols): {cols}", highlight=False)
    cuts = Table(title="Prefix runs", title_justify="left")
    for head in (
        "cut at (UTC)",
        "bar",
        "chosen",
        "values compared",
        "columns differing",
        "seconds",
    ):
        cuts.add_column(head, justify="right")
    for c in r.cuts:
        style = "red" if c.differences else None
        cuts.add_row(
            fmt_ms(c.time),
            f"{c.bar:,}",
            c.kind,
            f"{c.compared:,}",
            str(c.differences),
            f"{c.seconds:.1f}",
            style=style,
        )
    console.print(cuts)
    rows = r.by_column()
    if rows:
        diff = Table(title="Outputs that differ from the whole run", title_justify="left")
        diff.add_column("output (kind symbol column)", overflow="fold")
        for head in ("cuts", "bars", "first bar (UTC)", "prefix", "whole run"):
            diff.add_column(head, justify="right", overflow="fold")
        for d in rows[:SHOWN]:
            diff.add_row(
                escape(f"{d['kind']} {d['symbol']} {d['column']}"),
                str(d["cuts"]),
                f"{d['bars']:,}" if d["bars"] >= 0 else "-",
                fmt_ms(d["first_time"]),
                escape(_cell(d["prefix"])),
                escape(_cell(d["full"])),
            )
        console.print(diff)
        if len(rows) > SHOWN:
            console.print(f"  ... and {len(rows) - SHOWN} more columns (--json lists them all)")
        console.print(f"[red]lookahead: {len(rows)} output columns differ[/]")
    else:
        console.print("[green]no lookahead: every output of every prefix equals the whole run[/]")
    console.print(f"  {r.seconds.get('total', 0.0):.1f} s", highlight=False)


def _cell(v: object) -> str:
    if v is None:
        return "NaN"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
