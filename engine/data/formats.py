"""Read one data file into canonical columns, detecting its layout by content.

Layouts (see :mod:`engine.data.schema` for the canonical columns):

- Binance Vision klines: 12 columns ``open_time, open, high, low, close, volume,
  close_time, quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore``,
  with or without a header row, as ``.zip`` (a ``.CHECKSUM`` beside it is verified) or CSV.
- OHLCV: 6 columns ``open_time, open, high, low, close, volume`` (ccxt, freqtrade).
- Mark-price klines: 5 columns ``open_time, open, high, low, close`` (or the 12 Vision
  columns in a ``markPriceKlines`` folder).
- Funding: ``calc_time, funding_interval_hours, last_funding_rate`` (Vision) or
  ``funding_time, funding_rate``.
- freqtrade ``.feather`` and Parquet with named columns (``date`` datetimes or ``open_time``
  integers).

Times in milliseconds or microseconds are told apart per file by magnitude; a file that
mixes both is rejected. Nothing here touches the store.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from zlib_ng import gzip_ng, zlib_ng

from engine.data.naming import PathHints, data_suffix, path_hints
from engine.data.schema import (
    COLUMN_TYPES,
    FUNDING,
    KLINE_EXTRAS,
    KLINES,
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

_VISION_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
_ALIASES = {
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


def _dtype(col: str) -> pl.DataType:
    return pl.Int64() if COLUMN_TYPES.get(col) == "i64" else pl.Float64()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, checksum_file: Path) -> None:
    """Check ``path`` against a Vision ``.CHECKSUM`` file (``<sha256>  <name>``)."""
    try:
        text = checksum_file.read_text().split()
    except OSError as err:
        raise DataError(f"{checksum_file}: cannot read ({err.strerror})") from None
    if not text or len(text[0]) != 64:
        raise DataError(
            f"{checksum_file}: not a checksum file (expected '<sha256>  <file name>')",
            hint="delete it or download it again",
        )
    expected = text[0].lower()
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch: {checksum_file.name} says {expected}, the file has {actual}",
            hint="the file is corrupt or incomplete; download it again (engine data download fetches it anew)",
        )


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


# --------------------------------------------------------------------------- CSV


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_layout(source: str, first_line: str, hints: PathHints) -> tuple[str, bool, list[str]]:
    """(table, has_header, names for every column) from the first line of a CSV."""
    fields = [f.strip() for f in first_line.strip().split(",")]
    if not fields or fields == [""]:
        raise DataError(f"{source}: line 1 is empty", hint="the file holds no data rows")
    has_header = not _is_number(fields[0])
    if has_header:
        names = [_ALIASES.get(f.lower().strip('"'), f"_{i}") for i, f in enumerate(fields)]
        if "funding_rate" in names or "funding_time" in names:
            table = FUNDING
        elif hints.table == MARKPRICE:
            table = MARKPRICE
        else:
            table = KLINES
        return table, True, names
    n = len(fields)
    if n == 12:
        table = MARKPRICE if hints.table == MARKPRICE else KLINES
        return table, False, list(_VISION_COLUMNS)
    if n == 6 and hints.table != FUNDING:
        table = MARKPRICE if hints.table == MARKPRICE else KLINES
        return table, False, ["open_time", "open", "high", "low", "close", "volume"]
    if n == 5 and hints.table == MARKPRICE:
        return MARKPRICE, False, ["open_time", "open", "high", "low", "close"]
    if n == 3:
        return FUNDING, False, ["funding_time", "_interval_hours", "funding_rate"]
    if n == 2:
        return FUNDING, False, ["funding_time", "funding_rate"]
    raise DataError(
        f"{source}: line 1 has {n} fields; expected 12 (Binance kline), 6 (OHLCV),"
        " 5 (mark price, in a markPriceKlines folder) or 3 (fundingRate)",
        hint="check that this is a Binance kline, OHLCV or funding file",
    )


def _required(table: str) -> tuple[str, ...]:
    if table == FUNDING:
        return ("funding_time", "funding_rate")
    if table == MARKPRICE:
        return ("open_time", "open", "high", "low", "close")
    return ("open_time", "open", "high", "low", "close", "volume")


def _wanted(table: str, names: list[str]) -> list[str]:
    req = list(_required(table))
    missing = [c for c in req if c not in names]
    if missing:
        return missing
    return []


def _first_bad_cell(
    frame: pl.DataFrame, cols: list[str], where: Callable[[int], str], source: str
) -> DataError | None:
    """Find the first empty or non-numeric cell among ``cols`` of an all-string frame."""
    best: tuple[int, str, str | None] | None = None
    for col in cols:
        raw = frame[col]
        parsed = raw.str.strip_chars().cast(_dtype(col), strict=False)
        bad = parsed.is_null()
        if bad.any():
            i = int(bad.arg_max() or 0)
            if best is None or i < best[0]:
                best = (i, col, raw[i])
    if best is None:
        return None
    i, col, value = best
    if value is None or value.strip() == "":
        return DataError(
            f"{source}: {where(i)}: field {col!r} is empty",
            hint="the row is truncated or incomplete; fix or re-download the file",
        )
    kind = "an integer" if COLUMN_TYPES.get(col) == "i64" else "a number"
    return DataError(
        f"{source}: {where(i)}: field {col!r} is {value!r}, not {kind}",
        hint="fix the value or re-download the file",
    )


def _ragged_line(data: bytes, n_fields: int, source: str) -> DataError | None:
    for no, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        k = line.count(b",") + 1
        if k != n_fields:
            return DataError(
                f"{source}: line {no} has {k} fields, expected {n_fields} like line 1",
                hint="the file is truncated, corrupt or mixes layouts; fix or re-download it",
            )
    return None


def read_csv_bytes(
    data: bytes | Path,
    *,
    source: str,
    path: Path,
    hints: PathHints,
    market: str | None,
    symbol: str | None,
    interval: str | None,
) -> Parsed:
    """Parse a CSV (raw bytes, e.g. a zip member or a gunzipped file, or a plain .csv path)."""
    if isinstance(data, Path):
        first = _peek_line(data, source)
    else:
        end = data.find(b"\n", 0, 1 << 16)
        first = data[: end if end >= 0 else len(data)].decode("utf-8", "replace")
    if not first.strip():
        raise DataError(f"{source}: the file is empty", hint="download or export it again")
    table, has_header, names = _csv_layout(source, first, hints)
    missing = _wanted(table, names)
    if missing:
        raise DataError(
            f"{source}: missing column {missing[0]!r} (header: {first.strip()})",
            hint=f"a {table} file needs the columns {', '.join(_required(table))}",
        )
    dataset = resolve_dataset(path, hints, table, market=market, symbol=symbol, interval=interval)
    keep = _keep_columns(table, names)
    overrides = {n: (_dtype(n) if n in keep else pl.String()) for n in names}
    first_line = 2 if has_header else 1

    def where(i: int) -> str:
        return f"line {first_line + i}"

    try:
        frame = pl.read_csv(
            data, has_header=has_header, new_columns=names, schema_overrides=overrides
        )
    except (pl.exceptions.PolarsError, OSError) as err:
        raise _diagnose_csv(data, source, names, keep, has_header, where, err) from None
    frame = frame.select(keep)
    nulls = frame.null_count().row(0)
    if any(nulls):
        raw = frame.select(pl.col(c).cast(pl.String) for c in keep)
        bad = _first_bad_cell(raw, keep, where, source)
        assert bad is not None
        raise bad
    return _finish(Parsed(source, dataset, frame, first_line))


def _keep_columns(table: str, names: list[str]) -> list[str]:
    if table == FUNDING:
        return ["funding_time", "funding_rate"]
    if table == MARKPRICE:
        return ["open_time", "open", "high", "low", "close"]
    return ["open_time", "open", "high", "low", "close", "volume"] + [
        c for c in KLINE_EXTRAS if c in names
    ]


def gunzip(raw: bytes, *, source: str) -> bytes:
    """Decompress a whole gzip file (every member) with zlib-ng, ~3x faster than :mod:`gzip`.

    A truncated or corrupt file raises a DataError naming ``source``.
    """
    try:
        if len(raw) >= 18:
            # A gzip member ends with its uncompressed size (mod 2**32): sizing the output
            # buffer from it saves the buffer's growth, a third of the time. Only a single
            # whole member is taken this way; anything else goes the general way below.
            size = int.from_bytes(raw[-4:], "little")
            inflater = zlib_ng.decompressobj(31)
            out = inflater.decompress(raw, size + 1)
            if inflater.eof and not inflater.unused_data and len(out) == size:
                return out
        return gzip_ng.decompress(raw)
    except (OSError, EOFError, zlib_ng.error) as err:  # type: ignore[misc]  # zlib_ng.error is an exception class; its stub says otherwise
        raise DataError(
            f"{source}: cannot read: {err}",
            hint="the file is corrupt or truncated; re-download or re-export it",
        ) from None


def _peek_line(path: Path, source: str) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return fh.readline()
    except OSError as err:
        raise DataError(
            f"{source}: cannot read: {err}",
            hint="the file is corrupt or truncated; re-download or re-export it",
        ) from None


def _diagnose_csv(
    data: bytes | Path,
    source: str,
    names: list[str],
    keep: list[str],
    has_header: bool,
    where: Callable[[int], str],
    err: Exception,
) -> DataError:
    """Turn a failed fast parse into a message naming the line and field."""
    raw_bytes: bytes
    if isinstance(data, Path):
        try:
            raw_bytes = data.read_bytes()
        except OSError as read_err:
            return DataError(
                f"{source}: cannot read: {read_err}",
                hint="the file is corrupt or truncated; re-download or re-export it",
            )
    else:
        raw_bytes = data
    ragged = _ragged_line(raw_bytes, len(names), source)
    if ragged is not None:
        return ragged
    try:
        frame = pl.read_csv(raw_bytes, has_header=has_header, new_columns=names, infer_schema=False)
    except pl.exceptions.PolarsError:
        frame = None
    if frame is not None:
        found = _first_bad_cell(frame, keep, where, source)
        if found is not None:
            return found
    return DataError(f"{source}: cannot parse as CSV: {err}", hint="check the file's format")


# --------------------------------------------------------------------------- binary


def read_table_file(
    path: Path, *, hints: PathHints, market: str | None, symbol: str | None, interval: str | None
) -> Parsed:
    """Parse a Parquet or freqtrade ``.feather`` file with named columns."""
    source = str(path)
    try:
        if data_suffix(path) == ".feather":
            frame = pl.read_ipc(path)
        else:
            frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(
            f"{source}: cannot read: {err}", hint="the file is corrupt or not Parquet/Feather"
        ) from None
    renames: dict[str, str] = {}
    for col in frame.columns:
        canon = _ALIASES.get(col.lower())
        if canon and canon not in renames.values():
            renames[col] = canon
    frame = frame.rename(renames)
    names = frame.columns
    if "funding_rate" in names or hints.table == FUNDING:
        table = FUNDING
        if "funding_rate" not in names and "open" in names:  # freqtrade keeps the rate in `open`
            frame = frame.rename({"open": "funding_rate"})
        if "funding_time" not in frame.columns and "open_time" in frame.columns:
            frame = frame.rename({"open_time": "funding_time"})
    else:
        table = MARKPRICE if hints.table == MARKPRICE else KLINES
    names = frame.columns
    missing = _wanted(table, names)
    if missing:
        raise DataError(
            f"{source}: missing column {missing[0]!r} (columns: {', '.join(frame.columns)})",
            hint=f"a {table} file needs the columns {', '.join(_required(table))}",
        )
    dataset = resolve_dataset(path, hints, table, market=market, symbol=symbol, interval=interval)
    keep = _keep_columns(table, names)
    time_col = keep[0]
    exprs = []
    for col in keep:
        dt = frame.schema[col]
        if col == time_col and isinstance(dt, pl.Datetime):
            exprs.append(pl.col(col).dt.epoch("ms").alias(col))
        elif dt.is_numeric() or dt == pl.Boolean:
            exprs.append(pl.col(col).cast(_dtype(col), strict=False))
        else:
            exprs.append(
                pl.col(col).cast(pl.String).str.strip_chars().cast(_dtype(col), strict=False)
            )
    out = frame.select(exprs)
    bad = out.select(pl.any_horizontal(pl.col(c).is_null() for c in keep)).to_series()
    if bad.any():
        i = int(bad.arg_max() or 0)
        col = next(c for c in keep if out[c][i] is None)
        value = frame[col][i]
        what = "empty" if value is None else f"{value!r}, not a number"
        raise DataError(f"{source}: row {i + 1}: field {col!r} is {what}", hint="fix the value")
    return _finish(Parsed(source, dataset, out, None))


# --------------------------------------------------------------------------- common


def _finish(parsed: Parsed) -> Parsed:
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


def read_path(
    path: Path,
    *,
    market: str | None = None,
    symbol: str | None = None,
    interval: str | None = None,
    verify: bool = True,
) -> list[Parsed]:
    """Parse one data file (a zip may hold several CSVs) without validating order.

    ``verify`` checks a ``.CHECKSUM`` lying beside a zip first.
    """
    suffix = data_suffix(path)
    if suffix is None:
        raise DataError(
            f"{path}: not a data file this engine reads",
            hint="give .zip, .csv, .csv.gz, .parquet or .feather files, or a folder of them",
        )
    hints = path_hints(path)
    opts = {"market": market, "symbol": symbol, "interval": interval}
    try:
        if suffix in (".parquet", ".feather"):
            return [read_table_file(path, hints=hints, **opts)]
        if suffix == ".csv.gz":
            data = gunzip(path.read_bytes(), source=str(path))
            return [read_csv_bytes(data, source=str(path), path=path, hints=hints, **opts)]
        if suffix != ".zip":
            return [read_csv_bytes(path, source=str(path), path=path, hints=hints, **opts)]
        checksum = path.with_name(path.name + ".CHECKSUM")
        if verify and checksum.exists():
            verify_checksum(path, checksum)
        out = []
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if not members:
                    raise DataError(f"{path}: the zip holds no file", hint="download it again")
                for member in members:
                    data = zf.read(member)
                    out.append(
                        read_csv_bytes(
                            data, source=f"{path}:{member.filename}", path=path, hints=hints, **opts
                        )
                    )
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise DataError(
                f"{path}: not a readable zip ({err})",
                hint="the file is truncated or corrupt; download it again",
            ) from None
        return out
    except PermissionError:
        raise DataError(f"{path}: permission denied", hint="make the file readable") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file", hint="check the path") from None
