"""``engine data import``: read files or folders, validate everything, then merge into the store.

The whole input is parsed and validated before the store is touched, so one bad file
leaves the store exactly as it was. Merging is idempotent: rows already in the store are
kept, new times are added, and a time present in both must carry identical values (a
conflict is an error naming both sources and the time, never a silent overwrite).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from engine.data.formats import Parsed, read_path
from engine.data.naming import data_suffix
from engine.data.schema import COLUMN_TYPES, FUNDING, TIME_COLUMN, Dataset
from engine.data.store import DOWNLOADS_DIR, Store, read_partition, split_by_month
from engine.errors import DataError
from engine.progress import Progress, step
from engine.timeutil import DAY_MS, fmt_ms, interval_ms

# Column order in store files.
_ORDER = tuple(COLUMN_TYPES)


@dataclass
class SeriesChange:
    """What an import did to one series."""

    rows_before: int = 0
    rows_after: int = 0
    months_written: int = 0


@dataclass
class ImportReport:
    """Summary of an import: files read, files skipped in folders, per-series changes."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    series: dict[Dataset, SeriesChange] = field(default_factory=dict)

    @property
    def rows_added(self) -> int:
        return sum(c.rows_after - c.rows_before for c in self.series.values())


def collect_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """Expand files and folders (recursively) into data files, and list the skipped ones.

    A path given by name must exist and be a data file; inside folders, files of other
    kinds (notes, ...) are listed as skipped; ``.CHECKSUM`` files (verified beside their zip),
    ``.part`` files and a store's download cache are passed over silently.
    """
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and d != DOWNLOADS_DIR
                )
                for name in sorted(filenames):
                    f = Path(dirpath) / name
                    if name.startswith(".") or name.endswith((".CHECKSUM", ".part")):
                        continue
                    if data_suffix(f) is None:
                        skipped.append(f)
                    elif not f.exists():
                        raise DataError(
                            f"{f}: cannot read (a broken link?)", hint="fix or remove the link"
                        )
                    else:
                        files.append(f)
        elif p.exists():
            if data_suffix(p) is None:
                raise DataError(
                    f"{p}: not a data file this engine reads",
                    hint="give .zip, .csv, .csv.gz, .parquet or .feather files, or a folder of them",
                )
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder", hint="check the path")
    return files, skipped


def check_order(parsed: Parsed) -> None:
    """Reject unsorted or duplicated times, and bars off the interval's grid."""
    ds = parsed.dataset
    col = TIME_COLUMN[ds.table]
    step = interval_ms(ds.interval) if ds.table != FUNDING else 0
    on_grid = 0 < step <= DAY_MS and DAY_MS % step == 0  # 3d, 1w bars are anchored elsewhere
    # One pass for the common case; the code below finds and names the first bad row.
    c = pl.col(col)
    unordered, off_grid = parsed.frame.select(
        (c.diff() <= 0).any().alias("unordered"),
        ((c % step != 0).any() if on_grid else pl.lit(False)).alias("off_grid"),
    ).row(0)
    if not unordered and not off_grid:
        return
    t = parsed.frame[col]
    d = t.diff()
    bad = d <= 0
    if bad.any():
        i = int(bad.arg_max() or 0)
        if d[i] == 0:
            raise DataError(
                f"{parsed.source}: {parsed.where(i)}: duplicated {col} {t[i]} ({fmt_ms(int(t[i]))}),"
                f" already on {parsed.where(i - 1)}",
                hint="remove the duplicate row; a file must hold each time once",
            )
        raise DataError(
            f"{parsed.source}: {parsed.where(i)}: unsorted {col}: {t[i]} ({fmt_ms(int(t[i]))}) comes"
            f" after {t[i - 1]} ({fmt_ms(int(t[i - 1]))}) on {parsed.where(i - 1)}",
            hint="sort the file by time (a file must be in time order)",
        )
    if not on_grid:
        return
    off = t % step != 0
    if off.any():
        i = int(off.arg_max() or 0)
        raise DataError(
            f"{parsed.source}: {parsed.where(i)}: {col} {t[i]} ({fmt_ms(int(t[i]))}) is not on the"
            f" {ds.interval} grid",
            hint=f"is this really {ds.interval} data? name the file or pass --interval to match",
        )


def parse_files(
    files: list[Path],
    *,
    market: str | None = None,
    symbol: str | None = None,
    interval: str | None = None,
    progress: Progress | None = None,
) -> list[Parsed]:
    """Parse and validate every file (two threads); the first bad file raises.

    Progress: ``(file name, files done, files)`` after each file (and 0 at the start).
    """

    def one(path: Path) -> list[Parsed]:
        out = read_path(path, market=market, symbol=symbol, interval=interval)
        for p in out:
            check_order(p)
        return out

    results: list[Parsed] = []
    if files:
        step(progress, files[0].name, 0, len(files))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for k, (path, parsed) in enumerate(zip(files, pool.map(one, files), strict=True), 1):
            results.extend(parsed)
            step(progress, path.name, k, len(files))
    return results


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c in _ORDER if c in frame.columns]
    return frame if frame.columns == cols else frame.select(cols)


def merge_frames(
    parts: list[tuple[pl.DataFrame, Callable[[int], str]]], time_col: str
) -> pl.DataFrame:
    """Union of sorted frames, one row per time; identical duplicates merge, others raise.

    ``parts`` pairs each frame with a function naming row i of it (file and line). A
    column that is null in one source and set in another takes the set value.
    """
    if len(parts) == 1:
        return _canonical(parts[0][0])
    tagged = [
        f.with_columns(
            pl.lit(i, pl.UInt32).alias("_src"), pl.int_range(f.height, dtype=pl.Int64).alias("_row")
        )
        for i, (f, _) in enumerate(parts)
    ]
    allrows = pl.concat(tagged, how="diagonal_relaxed").sort(
        [time_col, "_src"], maintain_order=True
    )
    dup = allrows[time_col].is_duplicated()
    if not dup.any():
        return _canonical(allrows.drop("_src", "_row"))
    values = [c for c in allrows.columns if c not in (time_col, "_src", "_row")]
    dups = allrows.filter(dup)
    counts = dups.group_by(time_col).agg(pl.col(c).drop_nulls().n_unique() for c in values)
    conflict = counts.filter(pl.any_horizontal(pl.col(c) > 1 for c in values)).sort(time_col)
    if conflict.height:
        t = conflict[time_col][0]
        row = conflict.row(0, named=True)
        col = next(c for c in values if row[c] > 1)
        rows = dups.filter((pl.col(time_col) == t) & pl.col(col).is_not_null())
        a = rows.row(0, named=True)
        b = next(r for r in rows.iter_rows(named=True) if r[col] != a[col])
        where_a = parts[a["_src"]][1](a["_row"])
        where_b = parts[b["_src"]][1](b["_row"])
        raise DataError(
            f"conflicting data at {time_col} {t} ({fmt_ms(int(t))}): {col} is {a[col]} in {where_a}"
            f" but {b[col]} in {where_b}",
            hint="the two sources are different recordings of the same bars; import only one of"
            " them, or delete the store's month folder to replace what it holds",
        )
    merged = dups.group_by(time_col, maintain_order=True).agg(
        pl.col(c).drop_nulls().first() for c in values
    )
    rest = allrows.filter(~dup).drop("_src", "_row")
    return _canonical(pl.concat([rest, merged], how="diagonal_relaxed").sort(time_col))


def _where(p: Parsed) -> Callable[[int], str]:
    return lambda i: f"{p.source} {p.where(i)}"


def _shifted(where: Callable[[int], str], offset: int) -> Callable[[int], str]:
    return lambda i: where(i + offset)


def _store_rows(path: Path) -> Callable[[int], str]:
    return lambda i: f"{path} row {i + 1}"


def merge_into_store(store: Store, parsed: list[Parsed]) -> ImportReport:
    """Merge validated frames into the store under its lock; conflicts raise before any write."""
    groups: dict[Dataset, list[Parsed]] = {}
    for p in parsed:
        groups.setdefault(p.dataset, []).append(p)
    report = ImportReport()
    writes: list[tuple[Path, pl.DataFrame]] = []
    with store.locked():
        for ds, items in groups.items():
            col = TIME_COLUMN[ds.table]
            by_month: dict[str, list[tuple[pl.DataFrame, Callable[[int], str]]]] = {}
            for p in items:
                offset = 0
                for month, piece in split_by_month(p.frame, col):
                    where = _where(p)
                    by_month.setdefault(month, []).append((piece, _shifted(where, offset)))
                    offset += piece.height
            change = SeriesChange()
            for month in sorted(by_month):
                path = store.partition_path(ds, month)
                pieces = by_month[month]
                old = read_partition(path) if path.is_file() else None
                if old is not None:
                    pieces = [(old, _store_rows(path)), *pieces]
                    change.rows_before += old.height
                merged = merge_frames(pieces, col)
                change.rows_after += merged.height
                if old is not None and merged.equals(old):
                    continue
                writes.append((path, merged))
                change.months_written += 1
            report.series[ds] = change
        store.write_partitions(writes)
    return report


def import_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    store: str | os.PathLike[str] | Store | None = None,
    market: str | None = None,
    symbol: str | None = None,
    interval: str | None = None,
    progress: Progress | None = None,
    files: list[Path] | None = None,
) -> ImportReport:
    """Import data files and folders into the store.

    Parameters
    ----------
    paths
        Files or folders (searched recursively).
    store
        Store root or :class:`Store` (default: ``$ENGINE_DATA`` or ``./data``).
    market, symbol, interval
        Used for files whose name and path do not say; a name that says otherwise is an error.
    progress
        :mod:`engine.progress`'s ``progress(task, done, total)``: ``(file name, files
        parsed and validated, files)`` after each file.
    files
        Already-collected data files (skips the folder walk; ``paths`` is then ignored).

    Returns
    -------
    ImportReport
        Files read, files skipped, rows before/after per series.

    Examples
    --------
    Importing a file twice adds its rows once (merging is idempotent):

    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> csv = Path(tmp.name) / "markPriceKlines" / "ETHUSDT-8h.csv"
    >>> csv.parent.mkdir()
    >>> _ = csv.write_text(
    ...     "open_time,open,high,low,close\\n"
    ...     "1704067200000,2283.75151515,2308.42797766,2266.71,2286.33682895\\n"
    ... )
    >>> first = import_paths([csv], store=Path(tmp.name) / "store")
    >>> [(ds.label(), change.rows_after) for ds, change in first.series.items()]
    [('usdm ETHUSDT 8h markprice', 1)]
    >>> import_paths([csv], store=Path(tmp.name) / "store").rows_added
    0
    >>> tmp.cleanup()
    """
    st = store if isinstance(store, Store) else Store(store)
    skipped: list[Path] = []
    if files is None:
        files, skipped = collect_files(paths)
    if not files:
        raise DataError(
            "no data files found in " + ", ".join(str(p) for p in paths),
            hint="give .zip, .csv, .csv.gz, .parquet or .feather files, or folders holding them",
        )
    parsed = parse_files(files, market=market, symbol=symbol, interval=interval, progress=progress)
    report = merge_into_store(st, parsed)
    report.files = files
    report.skipped = skipped
    return report
