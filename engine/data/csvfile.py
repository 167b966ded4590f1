"""Read one CSV (plain, gunzipped or a zip member) into canonical columns.

The layout is told from the first line: a header names the columns (aliases as in
:data:`engine.data.parsed.ALIASES`); without one, the number of fields says it (12: Binance
Vision klines, 6: OHLCV, 5: mark price in a ``markPriceKlines`` folder, 3 or 2: funding).
The fast path parses with explicit dtypes; only when it fails does a slower pass find and
name the bad line and field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
from zlib_ng import gzip_ng, zlib_ng

from engine.data.naming import PathHints
from engine.data.parsed import (
    ALIASES,
    Parsed,
    dtype_of,
    finish,
    keep_columns,
    missing_columns,
    required_columns,
    resolve_dataset,
)
from engine.data.schema import COLUMN_TYPES, FUNDING, KLINES, MARKPRICE
from engine.errors import DataError

VISION_COLUMNS = (
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
        names = [ALIASES.get(f.lower().strip('"'), f"_{i}") for i, f in enumerate(fields)]
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
        return table, False, list(VISION_COLUMNS)
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


def _first_bad_cell(
    frame: pl.DataFrame, cols: list[str], where: Callable[[int], str], source: str
) -> DataError | None:
    """Find the first empty or non-numeric cell among ``cols`` of an all-string frame."""
    best: tuple[int, str, str | None] | None = None
    for col in cols:
        raw = frame[col]
        parsed = raw.str.strip_chars().cast(dtype_of(col), strict=False)
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
    missing = missing_columns(table, names)
    if missing:
        raise DataError(
            f"{source}: missing column {missing[0]!r} (header: {first.strip()})",
            hint=f"a {table} file needs the columns {', '.join(required_columns(table))}",
        )
    dataset = resolve_dataset(path, hints, table, market=market, symbol=symbol, interval=interval)
    keep = keep_columns(table, names)
    overrides = {n: (dtype_of(n) if n in keep else pl.String()) for n in names}
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
    return finish(Parsed(source, dataset, frame, first_line))


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
