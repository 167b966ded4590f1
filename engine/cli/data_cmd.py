"""``engine data ...``: import, download, list and check market data.

Only typer and rich are imported here; polars and the store code load inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from engine.cli.common import ProgressBar, StoreOpt, console, err_console, guarded
from engine.errors import DataError, UsageError
from engine.timeutil import fmt_ms

data_app = typer.Typer(
    help="Market data: import, download, list and check the local Parquet store.",
    no_args_is_help=True,
)

MarketOpt = typer.Option(None, "--market", help="usdm or spot, for files whose path does not say.")
SymbolOpt = typer.Option(
    None, "--symbol", help="Symbol (e.g. BTCUSDT) for files whose name does not say."
)
IntervalOpt = typer.Option(
    None, "--interval", help="Interval (e.g. 5m) for files whose name does not say."
)


def _print_wide(table: Table) -> None:
    """Print a table at its natural width, so that values are never cut to fit 80 columns."""
    from rich.console import Console
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(10_000), table).maximum
    out = (
        console
        if need <= console.width
        else Console(width=need, file=console.file, highlight=False)
    )
    out.print(table)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _print_import(report) -> None:  # type: ignore[no-untyped-def]
    from rich import box

    table = Table(
        title=f"imported {len(report.files)} file(s)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("series", "rows before", "rows after", "added", "months written"):
        table.add_column(col, justify="left" if col == "series" else "right", no_wrap=True)
    for ds, ch in sorted(report.series.items()):
        table.add_row(
            ds.label(),
            f"{ch.rows_before:,}",
            f"{ch.rows_after:,}",
            f"{ch.rows_after - ch.rows_before:,}",
            str(ch.months_written),
        )
    _print_wide(table)
    if report.skipped:
        console.print(
            f"skipped {len(report.skipped)} file(s) that are not data files, e.g. {report.skipped[0]}"
        )


@data_app.command("import")
@guarded
def import_cmd(
    paths: list[Path] = typer.Argument(..., help="Files or folders (searched recursively)."),
    store: str | None = StoreOpt,
    market: str | None = MarketOpt,
    symbol: str | None = SymbolOpt,
    interval: str | None = IntervalOpt,
) -> None:
    """Import Vision zips/CSVs, OHLCV CSV(.gz), freqtrade .feather, Parquet, funding and mark price.

    Everything is validated before the store is touched: a bad file leaves it unchanged.
    """
    from engine.data.importer import collect_files, import_paths
    from engine.data.store import Store

    files, skipped = collect_files(paths)
    st = Store(store)
    with ProgressBar("import") as progress:
        report = import_paths(
            paths,
            store=st,
            market=market,
            symbol=symbol,
            interval=interval,
            files=files or None,
            progress=progress,
        )
    report.skipped = skipped
    _print_import(report)
    console.print(f"store: {st.root}")


@data_app.command("download")
@guarded
def download_cmd(
    symbol: str = typer.Option(
        ..., "--symbol", help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT."
    ),
    interval: str | None = typer.Option(
        None, "--interval", help="Comma-separated intervals, e.g. 5m,1h (not for --data funding)."
    ),
    start: str = typer.Option(..., "--start", help="First day (ISO date) or ms."),
    end: str | None = typer.Option(
        None, "--end", help="Last day, inclusive (default: yesterday UTC)."
    ),
    market: str = typer.Option("usdm", "--market", help="usdm (futures/um) or spot."),
    vision_url: str | None = typer.Option(
        None,
        "--vision-url",
        help="Base URL (default: $ENGINE_VISION_URL or https://data.binance.vision).",
    ),
    source: str = typer.Option(
        "vision", "--source", help="vision (Binance Vision files) or rest (klines through a REST API)."
    ),
    rest_url: str = typer.Option(
        "https://fapi.binance.com", "--rest-url", help="Binance-compatible USD-M REST base URL for --source rest."
    ),
    data: str = typer.Option(
        "klines", "--data", help="klines, markprice (mark-price klines) or funding (funding rates)."
    ),
    store: str | None = StoreOpt,
) -> None:
    """Download Binance Vision klines, mark prices or funding rates (checksums verified,
    resumable) and import them."""
    if data not in ("klines", "markprice", "funding"):
        raise UsageError(f"--data: unknown data {data!r}", hint="use klines, markprice or funding")
    if interval is None and data != "funding":
        raise UsageError(f"--interval is needed for --data {data}", hint="e.g. --interval 5m")
    intervals = _split(interval) if interval else []
    if source == "rest" and data != "klines":
        raise UsageError("--source rest downloads klines only", hint="use --source vision for --data "
                         f"{data}")
    if source == "rest":
        _download_rest(_split(symbol), intervals, start=start, end=end, market=market,
                       url=rest_url, store=store)
        return
    if source != "vision":
        raise UsageError(f"--source: unknown source {source!r}", hint="use --source vision or --source rest")
    from engine.data.download import download

    with ProgressBar("download") as progress:
        report = download(
            _split(symbol),
            intervals,
            start=start,
            table=data,
            end=end,
            market=market,
            store=store,
            base_url=vision_url,
            progress=progress,
        )
    console.print(
        f"fetched {len(report.fetched)} file(s), {len(report.cached)} already downloaded and verified"
    )
    if report.imported is not None:
        _print_import(report.imported)
    if report.missing:
        err_console.print(
            f"[bold red]missing on the server ({len(report.missing)} file(s)):[/]", soft_wrap=True
        )
        for url in report.missing[:20]:
            err_console.print(f"  {url}", highlight=False, soft_wrap=True)
        if len(report.missing) > 20:
            err_console.print(f"  ... and {len(report.missing) - 20} more")
        err_console.print(
            "[yellow]hint:[/] Binance Vision has no file for these periods (before the symbol"
            " listed, or not yet published); narrow --start/--end"
        )
        sys.exit(1)


def _download_rest(
    symbols: list[str], intervals: list[str], *, start: str, end: str | None, market: str,
    url: str, store: str | None,
) -> None:
    """``engine data download --source rest``: klines through a Binance-compatible REST API
    (:func:`engine.binance.backfill.backfill_klines`), one progress bar per series."""
    from engine.binance.backfill import backfill_klines  # numpy: not at `engine --help`

    if market != "usdm":
        raise UsageError(f"--source rest: market {market!r} is not supported", hint="use --market usdm")
    with ProgressBar("REST klines") as progress:
        report = backfill_klines(symbols, intervals, start=start, end=end, url=url, store=store,
                                 progress=progress)
    if report is None:
        console.print("no closed klines in that span on the server")
        return
    _print_import(report)


@data_app.command("list")
@guarded
def list_cmd(store: str | None = StoreOpt) -> None:
    """Show every series in the store: first and last bar (UTC), rows, missing bars."""
    from engine.data.check import summarize
    from engine.data.store import Store

    st = Store(store)
    rows = summarize(st)
    if not rows:
        console.print(
            f"the store {st.root} is empty; add data with `engine data import` or `engine data download`"
        )
        return
    from rich import box

    table = Table(
        title=f"store {st.root}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in (
        "market",
        "symbol",
        "interval",
        "data",
        "first bar (UTC)",
        "last bar (UTC)",
        "rows",
        "missing bars",
    ):
        table.add_column(
            col, justify="right" if col in ("rows", "missing bars") else "left", no_wrap=True
        )
    for s in rows:
        ds = s.dataset
        table.add_row(
            ds.market,
            ds.symbol,
            ds.interval or "8h",
            {"markprice": "mark"}.get(ds.table, ds.table),
            fmt_ms(s.first),
            fmt_ms(s.last),
            f"{s.rows:,}",
            f"{s.missing:,}" if s.missing is not None else "-",
        )
    _print_wide(table)


@data_app.command("check")
@guarded
def check_cmd(
    paths: list[Path] | None = typer.Argument(
        None, help="Raw files to check instead of the store."
    ),
    store: str | None = StoreOpt,
    market: str | None = typer.Option(None, "--market", help="Only this market."),
    symbol: str | None = typer.Option(None, "--symbol", help="Only this symbol."),
    interval: str | None = typer.Option(None, "--interval", help="Only this interval."),
    strict: bool = typer.Option(False, "--strict", help="Zero-volume bars fail the check too."),
    limit: int = typer.Option(
        20, "--limit", help="Show at most this many findings per kind and series."
    ),
) -> None:
    """Report gaps, duplicates, OHLC violations, zero-volume bars and unsorted times; exit 1 on a problem."""
    from engine.data.check import ERROR, check_files, check_store
    from engine.data.schema import check_interval, check_market, check_symbol
    from engine.data.store import Store

    if paths:
        checked, findings = check_files(
            paths, market=market, symbol=symbol, interval=interval, strict=strict
        )
        what = f"{len(checked)} file series"
    else:
        st = Store(store)
        checked, findings = check_store(
            st,
            market=check_market(market) if market else None,
            symbol=check_symbol(symbol) if symbol else None,
            interval=check_interval(interval) if interval else None,
            strict=strict,
        )
        if not checked:
            raise DataError(
                f"the store {st.root} holds no series matching"
                f" market={market or '*'} symbol={symbol or '*'} interval={interval or '*'}",
                hint="see `engine data list` for what it holds",
            )
        what = f"{len(checked)} series in {st.root}"
    errors = [f for f in findings if f.severity == ERROR]
    if findings:
        console.print(f"checked {what}:")
        shown: dict[tuple[str, str], int] = {}
        for f in findings:
            key = (f.series, f.kind)
            shown[key] = shown.get(key, 0) + 1
            if shown[key] <= limit:
                style = "red" if f.severity == ERROR else "yellow"
                console.print(
                    f"[{style}]{f.severity:7}[/] {f.kind:15} {f.series}  {f.span()}  {f.detail}",
                    highlight=False,
                    soft_wrap=True,
                )
                console.print(f"        at {f.where}", highlight=False, soft_wrap=True, style="dim")
        for (series, kind), n in shown.items():
            if n > limit:
                console.print(f"  {series} {kind}: {n - limit} more not shown (--limit)")
    gaps = sum(f.count for f in findings if f.kind == "gap")
    console.print(
        f"{len(errors)} problem(s), {len(findings) - len(errors)} warning(s) in {what}"
        + (f"; {gaps:,} missing bar(s) in gaps" if gaps else "")
    )
    if errors:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
