"""``engine sweep STRATEGY.yaml --grid fast=5,9,12 --grid slow=26,50,100``: parameter sweeps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import typer

from engine.cli.common import (
    EndOpt,
    ProgressBar,
    ResultsOpt,
    StartOpt,
    StoreOpt,
    SymbolsOpt,
    console,
    guarded,
)

if TYPE_CHECKING:
    from engine.sweep import SweepResult
    from engine.sweep.walkforward import WalkForwardResult

#: columns of the results table after the params: key -> (header, format)
COLUMNS = (
    ("sharpe", "Sharpe", "num"),
    ("total_return", "Return", "pct"),
    ("max_drawdown", "Max DD", "pct"),
    ("win_rate", "Win", "pct"),
    ("profit_factor", "PF", "num"),
    ("trades", "Trades", "int"),
)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


GridOpt = typer.Option(
    None,
    "--grid",
    help="An axis: name=v1,v2,... or name=start:stop:step (inclusive); a param or a dotted "
    "key (risk.fraction=0.05:0.2:0.05). Repeatable: the sweep runs every combination.",
)
SetOpt = typer.Option(
    None, "--set", help="Override for every combination (name=value or dotted.key=value)."
)
WorkersOpt = typer.Option(
    None,
    "--workers",
    help="Processes to run combinations in (default 1, this process: a worker costs ~1.5 s to "
    "start; use the core count for big grids or ML strategies).",
)
ExecutorOpt = typer.Option(
    "process", "--executor", help="process (local pool), local (this process) or ray."
)
RayAddressOpt = typer.Option(
    None,
    "--ray-address",
    help="With --executor ray: the cluster to join (auto, host:6379, ray://host:10001); "
    "default $RAY_ADDRESS, else a local Ray started for the sweep.",
)
SearchOpt = typer.Option(
    "grid",
    "--search",
    help="grid: every combination; random: --trials N of them; optuna: N trials of Optuna's "
    "TPE sampler, guided by --sort.",
)
TrialsOpt = typer.Option(None, "--trials", min=1, help="Combinations to try (random, optuna).")
SeedOpt = typer.Option(None, "--seed", help="Seed of the random or Optuna search.")
WhereOpt = typer.Option(
    None,
    "--where",
    help="Keep only combinations meeting this condition over the axes, e.g. 'fast < slow' "
    "(comparisons, and/or/not, + - * / %, abs/min/max).",
)
WalkForwardOpt = typer.Option(
    False,
    "--walk-forward",
    help="Walk-forward optimization: choose the best combination on each --in-sample window, "
    "run it on the next --out-of-sample window, stitch the out-of-sample pieces into one run.",
)
InSampleOpt = typer.Option("90d", "--in-sample", help="Walk-forward in-sample window (e.g. 90d).")
OutOfSampleOpt = typer.Option(
    "30d", "--out-of-sample", help="Walk-forward out-of-sample window and step (e.g. 30d)."
)
SortOpt = typer.Option(
    "sharpe",
    "--sort",
    help="Rank by this metric: sharpe, sortino, total_return, cagr, max_drawdown (lowest "
    "first), win_rate, profit_factor, trades, final_equity, ...",
)
TopOpt = typer.Option(
    None, "--top", min=1, help="Show the best K (table default 10; --json: all unless given)."
)
LogDecisionsOpt = typer.Option(
    False, "--log-decisions", help="Also log each combination's ensemble_decisions."
)
ForceOpt = typer.Option(False, "--force", help="Allow more than 10,000 combinations.")
JsonOpt = typer.Option(
    False,
    "--json",
    help='Print one JSON object {"run_id", "results": [{"params", "metrics", "run_id"}]} '
    "on stdout, best first, nothing else.",
)


@guarded
def sweep(
    strategy: str = typer.Argument(..., help="Strategy YAML file, e.g. strategies/ema_cross.yaml."),
    grid: list[str] | None = GridOpt,
    set_: list[str] | None = SetOpt,
    start: str | None = StartOpt,
    end: str | None = EndOpt,
    symbols: str | None = SymbolsOpt,
    workers: int | None = WorkersOpt,
    executor: str = ExecutorOpt,
    ray_address: str | None = RayAddressOpt,
    search: str = SearchOpt,
    trials: int | None = TrialsOpt,
    seed: int | None = SeedOpt,
    where: str | None = WhereOpt,
    walk_forward: bool = WalkForwardOpt,
    in_sample: str = InSampleOpt,
    out_of_sample: str = OutOfSampleOpt,
    sort: str = SortOpt,
    top: int | None = TopOpt,
    log_decisions: bool = LogDecisionsOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
    store: str | None = StoreOpt,
    results: str | None = ResultsOpt,
) -> None:
    """Backtest a strategy over every combination of the --grid axes and log the sweep.

    Candles and funding are loaded once and each distinct feature computed once; the
    combinations run in a process pool. The log gets a parent run (mode 'sweep', the grid in
    params) and one child run per combination (parent_run_id set; equity and trades):
    engine query "select run_id, metrics->>'$.sharpe' from runs where parent_run_id = '<id>'".
    Exit 2 on a bad grid or config, 1 on missing data; in both cases nothing is written.
    """
    from engine.sweep.executors import make_executor
    from engine.sweep.search import run_search

    sym_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols is not None else None
    ex = (
        make_executor("ray", workers=workers, tasks=0, address=ray_address)
        if executor == "ray"
        else executor
    )
    if walk_forward:
        from engine.sweep.walkforward import run_walk_forward

        with ProgressBar("walk-forward") as progress:
            wf = run_walk_forward(
                strategy, grid or [], in_sample=in_sample, out_of_sample=out_of_sample,
                search=search, trials=trials, seed=seed, where=where, sort=sort,
                overrides=set_ or [], symbols=sym_list, start=start, end=end, store=store,
                results=results, workers=workers, executor=ex, force=force, progress=progress,
            )  # fmt: skip
        if json_out:
            _emit_json(wf.to_json())
        else:
            print_walk_forward(wf)
        return
    with ProgressBar("sweep") as progress:
        result = run_search(
            strategy,
            grid or [],
            search=search,
            trials=trials,
            seed=seed,
            where=where,
            overrides=set_ or [],
            symbols=sym_list,
            start=start,
            end=end,
            store=store,
            results=results,
            workers=workers,
            executor=ex,
            log_decisions=log_decisions,
            force=force,
            sort=sort,
            progress=progress,
        )
    if json_out:
        _print_json(result, sort=sort, top=top)
    else:
        _print_table(result, sort=sort, top=top or 10)


def _emit_json(doc: Mapping[str, Any]) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


def _print_json(result: SweepResult, *, sort: str, top: int | None) -> None:
    """Exactly one JSON object on stdout: the parent run id and the ranked combinations."""
    doc = {
        "run_id": result.run_id,
        "results": [
            {"params": r.params, "metrics": r.metrics, "run_id": r.run_id}
            for r in result.ranked(sort, top=top)
        ],
    }
    _emit_json(doc)


def _fmt(value: object, kind: str) -> str:
    if value is None:
        return "-"
    if not isinstance(value, int | float):
        return str(value)
    if kind == "pct":
        return f"{value * 100:,.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:,.3f}"


def _print_table(result: SweepResult, *, sort: str, top: int) -> None:
    from rich.table import Table

    ranked = result.ranked(sort, top=top)
    t = result.timings
    n = len(result.results)
    console.print(
        f"[bold]{n} combinations[/] in {t.get('total', 0):.1f} s "
        f"({t.get('combos', 0) / max(n, 1) * 1000:.0f} ms each on {result.workers} worker(s)); "
        f"top {len(ranked)} by {sort}",
        highlight=False,
    )
    table = Table(pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    for axis in result.axes:
        table.add_column(axis.name, justify="right", style="cyan")
    cols = list(COLUMNS)
    if sort not in {k for k, _, _ in cols}:
        cols.insert(0, (sort, sort, "num"))
    for key, header, _ in cols:
        table.add_column(header + (" *" if key == sort else ""), justify="right")
    for rank_no, r in enumerate(ranked, 1):
        table.add_row(
            str(rank_no),
            *(str(r.params[a.name]) for a in result.axes),
            *(_fmt(r.metrics.get(key), kind) for key, _, kind in cols),
        )
    console.print(table)
    console.print(f"sweep run_id [bold]{result.run_id}[/]", highlight=False)
    console.print(
        "  engine query \"select run_id, params->>'$.sweep.combo' as combo, "
        "cast(metrics->>'$.sharpe' as double) as sharpe from runs "
        f"where parent_run_id = '{result.run_id}' order by sharpe desc\"",
        highlight=False,
        soft_wrap=True,
    )


def print_walk_forward(wf: WalkForwardResult) -> None:
    """The windows (choice, in-sample vs out-of-sample sort metric and return), the
    degradation and the stitched out-of-sample run's metrics."""
    from rich.table import Table

    from engine.timeutil import fmt_ms

    sort = wf.sort
    t = Table(pad_edge=False, title=f"walk-forward: {len(wf.windows)} windows, chosen by {sort}")
    for h in ("#", "in-sample from", "oos from", "chosen", f"IS {sort}", f"OOS {sort}",
              "IS return", "OOS return"):  # fmt: skip
        t.add_column(h, justify="right" if h not in ("chosen",) else "left")
    for w in wf.windows:
        win = w.window
        t.add_row(
            str(win.index),
            fmt_ms(win.is_start)[:10],
            fmt_ms(win.oos_start)[:10],
            " ".join(f"{k}={v}" for k, v in w.params.items()),
            _fmt(w.in_sample.get(sort), "num"),
            _fmt(w.out_of_sample.get(sort), "num"),
            _fmt(w.in_sample.get("total_return"), "pct"),
            _fmt(w.out_of_sample.get("total_return"), "pct"),
        )
    console.print(t)
    d = Table(pad_edge=False, title="degradation (mean over windows)")
    for h in ("metric", "in-sample", "out-of-sample", "oos - is", "oos / is"):
        d.add_column(h, justify="right")
    for key, row in wf.degradation.items():
        kind = "pct" if key in ("total_return", "cagr", "max_drawdown") else "num"
        d.add_row(
            key,
            _fmt(row["in_sample"], kind),
            _fmt(row["out_of_sample"], kind),
            _fmt(row["diff"], kind),
            _fmt(row["ratio"], "num"),
        )
    console.print(d)
    m = wf.metrics
    console.print(
        f"stitched out-of-sample: return {_fmt(m.get('total_return'), 'pct')}, "
        f"Sharpe {_fmt(m.get('sharpe'), 'num')}, max DD {_fmt(m.get('max_drawdown'), 'pct')}, "
        f"{_fmt(m.get('trades'), 'int')} trades",
        highlight=False,
    )
    console.print(
        f"walk-forward run_id [bold]{wf.run_id}[/] (out-of-sample run {wf.oos_run_id}); "
        f"engine report {wf.run_id}",
        highlight=False,
    )
