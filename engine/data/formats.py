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

This module dispatches by suffix and reads the binary formats; CSV parsing is in
:mod:`engine.data.csvfile`, what every reader shares in :mod:`engine.data.parsed`.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path

import polars as pl

from engine.data.csvfile import gunzip, read_csv_bytes
from engine.data.naming import PathHints, data_suffix, path_hints
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
from engine.data.schema import FUNDING, KLINES, MARKPRICE
from engine.errors import DataError

__all__ = ["Parsed", "gunzip", "read_path", "read_table_file", "sha256_file", "verify_checksum"]


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
        canon = ALIASES.get(col.lower())
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
    missing = missing_columns(table, names)
    if missing:
        raise DataError(
            f"{source}: missing column {missing[0]!r} (columns: {', '.join(frame.columns)})",
            hint=f"a {table} file needs the columns {', '.join(required_columns(table))}",
        )
    dataset = resolve_dataset(path, hints, table, market=market, symbol=symbol, interval=interval)
    keep = keep_columns(table, names)
    time_col = keep[0]
    exprs = []
    for col in keep:
        dt = frame.schema[col]
        if col == time_col and isinstance(dt, pl.Datetime):
            exprs.append(pl.col(col).dt.epoch("ms").alias(col))
        elif dt.is_numeric() or dt == pl.Boolean:
            exprs.append(pl.col(col).cast(dtype_of(col), strict=False))
        else:
            exprs.append(
                pl.col(col).cast(pl.String).str.strip_chars().cast(dtype_of(col), strict=False)
            )
    out = frame.select(exprs)
    bad = out.select(pl.any_horizontal(pl.col(c).is_null() for c in keep)).to_series()
    if bad.any():
        i = int(bad.arg_max() or 0)
        col = next(c for c in keep if out[c][i] is None)
        value = frame[col][i]
        what = "empty" if value is None else f"{value!r}, not a number"
        raise DataError(f"{source}: row {i + 1}: field {col!r} is {what}", hint="fix the value")
    return finish(Parsed(source, dataset, out, None))


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
