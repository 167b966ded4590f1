"""``engine features``: compute features from the store and write them to Parquet.

Only typer, rich and the engine's light modules (errors, times) are imported here; polars,
numba and the feature code load inside the command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from engine.cli.common import ProgressBar, StoreOpt, console, err_console, guarded
from engine.errors import DataError, UsageError
from engine.timeutil import interval_ms, parse_end, parse_time


def warmup_start(start_ms: int, names: list[str] | None, interval: str) -> int:
    """Where to start loading so that every feature is warm at ``start_ms``: the declared
    warm-up plus one bar of the longest timeframe (for its alignment)."""
    from engine.features import warmup_bars

    step = interval_ms(interval)
    longest = max(
        [step] + [interval_ms(s) for s in ("15m", "1h", "4h", "1d") if interval_ms(s) % step == 0]
    )
    return start_ms - (warmup_bars(names, interval=interval) + 1) * step - longest


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [x.strip() for v in values for x in v.split(",") if x.strip()]
    return names or None


@guarded
def features(
    symbol: str = typer.Option(None, "--symbol", help="Symbol, e.g. BTCUSDT."),
    interval: str = typer.Option("5m", "--interval", help="Base bar interval, e.g. 5m."),
    start: str = typer.Option(None, "--start", help="First bar (ISO date/time or ms), inclusive."),
    end: str = typer.Option(
        None, "--end", help="Last bar (ISO date/time or ms), inclusive; a date means the whole day."
    ),
    names: list[str] = typer.Option(
        None,
        "--names",
        help="Feature names, comma-separated or repeated (default: the whole catalogue).",
    ),
    out: str = typer.Option(None, "--out", help="Output Parquet file."),
    warmup: bool = typer.Option(
        True,
        "--warmup/--no-warmup",
        help="Load enough history before --start that the features are warm from the first row.",
    ),
    list_names: bool = typer.Option(
        False, "--list", help="Print the catalogue for --interval and exit."
    ),
    store: str = StoreOpt,
) -> None:
    """Compute features (indicators, higher timeframes, funding) over stored candles."""
    import time

    from engine.features import check_names, default_names

    interval_ms(interval)  # validates --interval before anything else
    if list_names:
        for name in default_names(interval):
            console.print(name, highlight=False)
        return
    if not symbol:
        raise UsageError(
            "--symbol is required",
            hint="for example: engine features --symbol BTCUSDT --interval 5m --out btc.parquet",
        )
    out_path = _out_path(out)
    wanted = _split(names)
    check_names(
        wanted if wanted is not None else default_names(interval),
        where="--names",
        interval=interval,
    )
    t_start = parse_time(start, name="--start")
    t_end = parse_end(end, name="--end")
    t0 = time.perf_counter()
    with ProgressBar(f"features {symbol} {interval}") as progress:
        progress("load candles", 0, 3)
        candles, funding = _load(symbol, interval, t_start, t_end, wanted, warmup, store)
        progress("compute", 1, 3)
        frame = _compute(candles, wanted, funding, interval, t_start)
        if frame.height == 0:
            raise DataError(
                f"no {symbol} {interval} bars between --start and --end", hint="widen the range"
            )
        progress("write", 2, 3)
        _write(frame, out_path)
    console.print(
        f"wrote {out_path}: {frame.height:,} bars x {frame.width - 1} features "
        f"({time.perf_counter() - t0:.2f} s)",
        highlight=False,
    )


def _out_path(out: str | None) -> Path:
    """``--out``: a ``.parquet`` file in an existing folder."""
    if not out:
        raise UsageError(
            "--out is required", hint="name the Parquet file to write, e.g. --out features.parquet"
        )
    out_path = Path(out)
    if out_path.suffix != ".parquet":
        raise UsageError(
            f"--out {out}: expected a .parquet file name",
            hint=f"use --out {out_path.with_suffix('.parquet')}",
        )
    if out_path.parent and not out_path.parent.exists():
        raise UsageError(
            f"--out {out}: folder {out_path.parent} does not exist", hint="create it first"
        )
    return out_path


def _load(
    symbol: str,
    interval: str,
    t_start: int | None,
    t_end: int | None,
    wanted: list[str] | None,
    warmup: bool,
    store: str | None,
) -> tuple[Any, Any]:
    """The candles (from early enough that every feature is warm at ``--start`` when
    ``warmup``) and, when a funding feature is requested, the funding events."""
    from engine.data import load_candles, load_funding
    from engine.features import default_names, warmup_bars

    candles = None
    if warmup and t_start is not None:
        need = warmup_bars(wanted, interval=interval) + 1
        early = warmup_start(t_start, wanted, interval)
        try:
            candles = load_candles(symbol, interval, start=early, end=t_end, store=store)
        except DataError:
            err_console.print(
                f"[yellow]note:[/] no history before --start for the warm-up; the first "
                f"{need - 1} rows may be NaN",
                highlight=False,
            )
    if candles is None:
        candles = load_candles(symbol, interval, start=t_start, end=t_end, store=store)
    names_used = wanted if wanted is not None else default_names(interval)
    funding = None
    if any(n in ("funding_rate",) for n in names_used):
        funding = load_funding(symbol, store=store)
    return candles, funding


def _compute(
    candles: Any, wanted: list[str] | None, funding: Any, interval: str, t_start: int | None
) -> Any:
    """The features from ``--start`` on (the warm-up rows dropped)."""
    import polars as pl

    from engine.features import compute

    frame = compute(candles, wanted, funding=funding, interval=interval)
    if t_start is not None:
        frame = frame.filter(pl.col("open_time") >= t_start)
    return frame


def _write(frame: Any, out_path: Path) -> None:
    """Write through a temporary file and a rename (readers never see half a file)."""
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def register(app: typer.Typer) -> None:
    app.command("features", help="Compute features over stored candles and write Parquet.")(
        features
    )
