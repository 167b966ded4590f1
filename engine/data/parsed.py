"""One parsed data file and what every reader shares: canonical column names and dtypes,
the dataset a file belongs to (path first, options fill in) and the normalisation every
reader ends with (us -> ms, funding times onto the hour, non-finite values rejected).

Nothing here reads a file or touches the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.data.naming import PathHints
from engine.data.schema import (
    COLUMN_TYPES,
    FUNDING,
    KLINE_EXTRAS,
    MARKPRICE,
    MICROS_THRESHOLD,
    MIN_PLAUSIBLE_MS,
    Dataset,
    check_interval,
    check_market,
    check_symbol,
)
from engine.errors import DataError
from engine.timeutil import HOUR_MS, fmt_ms

ALIASES = {
    "open_time": "open_time",
    "opentime": "open_time",
    "open time": "open_time",
    "timestamp": "open_time",
    "time": "open_time",
    "date": "open_time",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "close_time": "close_time",
    "quote_volume": "quote_volume",
    "quote_asset_volume": "quote_volume",
    "count": "trades",
    "trades": "trades",
    "number_of_trades": "trades",
    "taker_buy_volume": "taker_buy_volume",
    "taker_buy_base_asset_volume": "taker_buy_volume",
    "taker_buy_quote_volume": "taker_buy_quote_volume",
    "taker_buy_quote_asset_volume": "taker_buy_quote_volume",
    "calc_time": "funding_time",
    "funding_time": "funding_time",
    "fundingtime": "funding_time",
    "last_funding_rate": "funding_rate",
    "funding_rate": "funding_rate",
    "fundingrate": "funding_rate",
}
# Largest distance (ms) between Binance's funding calc_time and the funding hour we accept.
FUNDING_JITTER_MS = 60_000


@dataclass(frozen=True)
class Parsed:
    """One file's rows in canonical columns, in file order.

    ``first_line`` is the CSV line number of row 0 (None for binary formats, whose rows are
    counted from 1), so messages can point at the exact line.
    """

    source: str
    dataset: Dataset
    frame: pl.DataFrame
    first_line: int | None

    def where(self, row: int) -> str:
        """``line N`` (CSV) or ``row N`` (binary) for a 0-based row index."""
        if self.first_line is None:
            return f"row {row + 1}"
        return f"line {self.first_line + row}"


def dtype_of(col: str) -> pl.DataType:
    return pl.Int64() if COLUMN_TYPES.get(col) == "i64" else pl.Float64()


def resolve_dataset(
    path: Path,
    hints: PathHints,
    table: str,
    *,
    market: str | None,
    symbol: str | None,
    interval: str | None,
) -> Dataset:
    """Combine what the path says with the command-line options (path first, options fill in)."""
    mk = hints.market
    if market is not None:
        market = check_market(market)
        if mk is not None and mk != market:
            raise DataError(
                f"{path}: the path says market {mk!r} but --market is {market!r}",
                hint="drop --market for this file or import it separately",
            )
        mk = market
    mk = check_market(mk or "usdm", where=f"{path}: market")
    sym = hints.symbol
    if symbol is not None:
        symbol = check_symbol(symbol)
        if sym is not None and sym != symbol:
            raise DataError(
                f"{path}: the file name says symbol {sym!r} but --symbol is {symbol!r}",
                hint="drop --symbol for this file or import it separately",
            )
        sym = symbol
    if sym is None:
        raise DataError(
            f"{path}: cannot tell the symbol from the file name",
            hint="name it like BTCUSDT-5m.csv or pass --symbol BTCUSDT",
        )
    iv = ""
    if table != FUNDING:
        iv = hints.interval or ""
        if interval is not None:
            interval = check_interval(interval)
            if iv and iv != interval:
                raise DataError(
                    f"{path}: the file name says interval {iv!r} but --interval is {interval!r}",
                    hint="drop --interval for this file or import it separately",
                )
            iv = interval
        if not iv:
            raise DataError(
                f"{path}: cannot tell the interval from the file name",
                hint="name it like BTCUSDT-5m.csv or pass --interval 5m",
            )
    if table in (FUNDING, MARKPRICE) and mk != "usdm":
        raise DataError(
            f"{path}: {table} data exists only for USD-M futures, but the market is {mk!r}",
            hint="import it with --market usdm or from a futures/um folder",
        )
    return Dataset(table, mk, sym, iv)


def required_columns(table: str) -> tuple[str, ...]:
    if table == FUNDING:
        return ("funding_time", "funding_rate")
    if table == MARKPRICE:
        return ("open_time", "open", "high", "low", "close")
    return ("open_time", "open", "high", "low", "close", "volume")


def missing_columns(table: str, names: list[str]) -> list[str]:
    req = list(required_columns(table))
    missing = [c for c in req if c not in names]
    if missing:
        return missing
    return []


def keep_columns(table: str, names: list[str]) -> list[str]:
    if table == FUNDING:
        return ["funding_time", "funding_rate"]
    if table == MARKPRICE:
        return ["open_time", "open", "high", "low", "close"]
    return ["open_time", "open", "high", "low", "close", "volume"] + [
        c for c in KLINE_EXTRAS if c in names
    ]


def finish(parsed: Parsed) -> Parsed:
    """Normalise times (us -> ms, funding jitter) and reject non-finite values."""
    frame = parsed.frame
    ds = parsed.dataset
    time_col = "funding_time" if ds.table == FUNDING else "open_time"
    t = frame[time_col]
    if t.len() == 0:
        raise DataError(f"{parsed.source}: no data rows", hint="the file is empty")
    floats = [c for c, dt in frame.schema.items() if dt == pl.Float64]
    if ds.table != FUNDING:
        # One vectorised pass over the frame; the passes below (which find and name the bad
        # row) run only if it finds something to convert or reject.
        n_us, t_min, nonfinite = frame.select(
            (pl.col(time_col) >= MICROS_THRESHOLD).sum().alias("n_us"),
            pl.col(time_col).min().alias("t_min"),
            (
                pl.any_horizontal(~pl.col(c).is_finite() for c in floats).any()
                if floats
                else pl.lit(False)
            ).alias("nonfinite"),
        ).row(0)
        if not n_us and t_min >= MIN_PLAUSIBLE_MS and not nonfinite:
            return parsed
    is_us = t >= MICROS_THRESHOLD
    n_us = int(is_us.sum())
    if 0 < n_us < t.len():
        first_unit = bool(is_us[0])
        i = int((is_us != first_unit).arg_max() or 0)
        unit = "microseconds" if not first_unit else "milliseconds"
        raise DataError(
            f"{parsed.source}: {parsed.where(i)}: {time_col} {t[i]} is in {unit}, but "
            f"{parsed.where(0)} ({t[0]}) is not: mixed ms and us times in one file",
            hint="every time in a file must use one unit; split the file or convert it",
        )
    if n_us:
        t = t // 1000
    low = t < MIN_PLAUSIBLE_MS
    if low.any():
        i = int(low.arg_max() or 0)
        raise DataError(
            f"{parsed.source}: {parsed.where(i)}: {time_col} {frame[time_col][i]} is not a time in"
            " milliseconds or microseconds since 1970 (it is before 2010)",
            hint="times must be UTC epoch milliseconds (or microseconds, as in Vision's 2025 files)",
        )
    if ds.table == FUNDING:
        aligned = ((t + HOUR_MS // 2) // HOUR_MS) * HOUR_MS
        off = (t - aligned).abs() > FUNDING_JITTER_MS
        if off.any():
            i = int(off.arg_max() or 0)
            raise DataError(
                f"{parsed.source}: {parsed.where(i)}: funding time {fmt_ms(int(t[i]))} "
                f"({int(t[i])}) is more than a minute from the hour",
                hint="funding is paid on the hour; is this really a fundingRate file?",
            )
        t = aligned
    frame = frame.with_columns(t.alias(time_col))
    if floats:
        nonfinite = frame.select(
            pl.any_horizontal(~pl.col(c).is_finite() for c in floats)
        ).to_series()
        if nonfinite.any():
            i = int(nonfinite.arg_max() or 0)
            col = next(c for c in floats if not _finite(frame[c][i]))
            raise DataError(
                f"{parsed.source}: {parsed.where(i)}: field {col!r} is {frame[col][i]}, not a finite number",
                hint="fix the value or re-download the file",
            )
    return Parsed(parsed.source, ds, frame, parsed.first_line)


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))
