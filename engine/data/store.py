"""The market-data store: Hive-partitioned Parquet, one file per (series, month).

Layout under the store root (``--store`` / ``ENGINE_DATA`` / ``./data``)::

    klines/market=usdm/symbol=BTCUSDT/interval=5m/month=2024-01/data.parquet
    funding/market=usdm/symbol=BTCUSDT/month=2024-01/data.parquet
    markprice/market=usdm/symbol=BTCUSDT/interval=8h/month=2024-01/data.parquet

Each file is sorted by its time column with unique times; the partition keys live in the
folder names only (DuckDB: ``read_parquet('klines/**/*.parquet', hive_partitioning=true)``).

Files are uncompressed Parquet with the time column DELTA_BINARY_PACKED (a regular grid
packs to almost nothing) and min/max statistics: writing them is about half the CPU of LZ4,
loading them is faster too, and they are ~1.4x the size of LZ4 files.

Writes are atomic per file: a temporary file in the same folder, fsync, ``os.replace``.
A batch of partitions is written in two phases (every temporary file first, then every
rename), under an exclusive lock on ``<store>/.lock``, so a failure before the renames leaves
the store as it was, and two importers never interleave their read-merge-write.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime as _dt
import fcntl
import functools
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from engine.data.schema import COLUMN_TYPES, FUNDING, TABLES, TIME_COLUMN, Dataset
from engine.errors import DataError
from engine.paths import store_dir

_TIME_COLUMNS = frozenset(TIME_COLUMN.values())
PART_FILE = "data.parquet"
DOWNLOADS_DIR = "_downloads"
_COMPRESSION: Final = "none"  # see the module docstring; DuckDB, Spark, Trino read it
# Encoding a month file and fsyncing it both release the GIL; concurrent fsyncs share ext4
# journal commits, so more threads than cores pay off (one fsync after another is ~5 ms each).
_IO_THREADS = 8


def _io_pool() -> ThreadPoolExecutor:
    """Threads shared by every write (created once per process: starting threads per import
    costs ms; a forked child gets its own pool, as its parent's threads do not exist in it)."""
    return _pool_for(os.getpid())


@functools.cache
def _pool_for(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix=f"engine-store-io-{pid}")


def month_start_ms(month: str) -> int:
    """UTC ms of the first instant of ``YYYY-MM``."""
    y, m = int(month[:4]), int(month[5:7])
    return calendar.timegm((y, m, 1, 0, 0, 0)) * 1000


def next_month(month: str) -> str:
    """The month after ``YYYY-MM``."""
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + (m == 12):04d}-{m % 12 + 1:02d}"


def months_between(first_ms: int, last_ms: int) -> list[str]:
    """Every ``YYYY-MM`` from the month of ``first_ms`` to that of ``last_ms``, inclusive."""
    first = _dt.datetime.fromtimestamp(first_ms / 1000, tz=_dt.UTC).strftime("%Y-%m")
    last = _dt.datetime.fromtimestamp(last_ms / 1000, tz=_dt.UTC).strftime("%Y-%m")
    out = [first]
    while out[-1] < last:
        out.append(next_month(out[-1]))
    return out


def split_by_month(frame: pl.DataFrame, time_col: str) -> list[tuple[str, pl.DataFrame]]:
    """Split a frame sorted by ``time_col`` into (month, slice) pairs without copying."""
    if frame.height == 0:
        return []
    t = frame[time_col].to_numpy()
    months = months_between(int(t[0]), int(t[-1]))
    bounds = np.searchsorted(t, [month_start_ms(m) for m in months[1:]], side="left")
    edges = [0, *bounds.tolist(), len(t)]
    return [
        (m, frame.slice(a, b - a))
        for m, a, b in zip(months, edges[:-1], edges[1:], strict=True)
        if b > a
    ]


@dataclass(frozen=True)
class Partition:
    """One month of one series: its file and the month's name."""

    dataset: Dataset
    month: str
    path: Path


class Store:
    """A market-data store rooted at ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = store_dir(root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ------------------------------------------------------------------ paths

    def series_dir(self, ds: Dataset) -> Path:
        """Folder holding one series' month partitions."""
        d = self.root / ds.table / f"market={ds.market}" / f"symbol={ds.symbol}"
        return d / f"interval={ds.interval}" if ds.table != FUNDING else d

    def partition_path(self, ds: Dataset, month: str) -> Path:
        """The Parquet file of one month of a series."""
        return self.series_dir(ds) / f"month={month}" / PART_FILE

    @property
    def downloads(self) -> Path:
        """Cache of downloaded Vision files (not part of any table)."""
        return self.root / DOWNLOADS_DIR

    def partitions(
        self, ds: Dataset, *, start: int | None = None, end: int | None = None
    ) -> list[Partition]:
        """Existing month partitions of a series overlapping [start, end], in time order."""
        base = self.series_dir(ds)
        if not base.is_dir():
            return []
        lo = (
            None
            if start is None
            else _dt.datetime.fromtimestamp(start / 1000, tz=_dt.UTC).strftime("%Y-%m")
        )
        hi = (
            None
            if end is None
            else _dt.datetime.fromtimestamp(end / 1000, tz=_dt.UTC).strftime("%Y-%m")
        )
        out = []
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("month="):
                continue
            month = entry[6:]
            if (lo is not None and month < lo) or (hi is not None and month > hi):
                continue
            path = base / entry / PART_FILE
            if path.is_file():
                out.append(Partition(ds, month, path))
        return out

    def stamp(self, ds: Dataset) -> tuple[tuple[str, int, int, int, int], ...]:
        """Each month partition of a series as ``(month, inode, size, mtime_ns, ctime_ns)``.

        A write replaces a partition by renaming a new file over it (a new inode), and any
        write in place moves its ctime, which no tool can set back: an equal stamp is the
        same stored rows. What a cache of loaded data (:func:`engine.data.stored_stamp`)
        compares."""
        out = []
        for part in self.partitions(ds):
            try:
                st = os.stat(part.path)
            except FileNotFoundError:  # removed since the listing
                continue
            out.append((part.month, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(out)

    def datasets(self, *, table: str | None = None) -> list[Dataset]:
        """Every series in the store, sorted by table, market, symbol, interval."""
        out: list[Dataset] = []
        for tbl in TABLES if table is None else (table,):
            tdir = self.root / tbl
            if not tdir.is_dir():
                continue
            for mdir in sorted(tdir.glob("market=*")):
                for sdir in sorted(mdir.glob("symbol=*")):
                    market, symbol = mdir.name[7:], sdir.name[7:]
                    if tbl == FUNDING:
                        out.append(Dataset(tbl, market, symbol, ""))
                        continue
                    for idir in sorted(sdir.glob("interval=*")):
                        out.append(Dataset(tbl, market, symbol, idir.name[9:]))
        return out

    # ------------------------------------------------------------------ reading

    def read(
        self, ds: Dataset, *, start: int | None = None, end: int | None = None
    ) -> pl.DataFrame:
        """All rows of a series with time in [start, end] (inclusive), sorted; may be empty."""
        parts = self.partitions(ds, start=start, end=end)
        time_col = TIME_COLUMN[ds.table]
        if not parts:
            return pl.DataFrame(schema={c: _schema_type(c) for c in ds.columns()})
        frames = [read_partition(p.path) for p in parts]
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
        if start is not None or end is not None:
            t = frame[time_col].to_numpy()
            a = 0 if start is None else int(np.searchsorted(t, start, side="left"))
            b = len(t) if end is None else int(np.searchsorted(t, end, side="right"))
            frame = frame.slice(a, b - a)
        return frame

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's exclusive write lock (creating the store root if needed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def write_partitions(self, items: list[tuple[Path, pl.DataFrame]]) -> None:
        """Write several partition files atomically: all temporary files, then all renames.

        Call with the lock held. If anything fails before the renames, the temporary files
        and any folders created for them are removed and the store is unchanged.
        """
        created_dirs: list[Path] = []  # in creation order (parents first)
        made_months: list[Path] = []  # month folders made by the write tasks
        temps: list[tuple[Path, Path]] = []
        futures: list[Future[None]] = []
        known: set[Path] = set()
        try:
            for path, _ in items:
                # Folders above the month are few and shared: made here, in order. Each month
                # folder belongs to one file and is made by its write task (mkdir is a
                # journaled metadata write: ~0.2 ms, and it releases the GIL).
                missing = []
                d = path.parent.parent
                while d not in known and not d.exists():
                    missing.append(d)
                    d = d.parent
                for d in reversed(missing):
                    d.mkdir()
                    created_dirs.append(d)
                known.add(path.parent.parent)
                temps.append((path.with_name(f".{path.name}.{os.getpid()}.tmp"), path))
            # Each task makes its month folder, encodes the file and fsyncs it.
            pool = _io_pool()
            futures = [
                pool.submit(_write_one, tmp, frame, made_months)
                for (tmp, _), (_, frame) in zip(temps, items, strict=True)
            ]
            for fut in futures:
                fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            wait(futures)  # no task may still be writing while we clean up
            for tmp, _ in temps:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            for d in [*made_months, *reversed(created_dirs)]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        for tmp, path in temps:
            os.replace(tmp, path)
        dirs = {path.parent for _, path in temps}
        dirs |= {d.parent for d in [*created_dirs, *made_months]}
        list(_io_pool().map(_fsync, sorted(dirs)))


def _write_one(tmp: Path, frame: pl.DataFrame, made_months: list[Path]) -> None:
    """Make the month folder if needed (recording it), write one partition file (see the
    module docstring for the encoding) and fsync it."""
    import pyarrow as pa  # imported here: loading candles never needs pyarrow
    import pyarrow.parquet as pq

    try:
        os.mkdir(tmp.parent)
        made_months.append(tmp.parent)  # list.append is atomic
    except FileExistsError:
        pass

    time_col = next(c for c in frame.columns if c in _TIME_COLUMNS)
    # Encoded in memory, then written with one write(): pyarrow's many small writes to a
    # file cost more system time than the encoding of a month.
    sink = pa.BufferOutputStream()
    pq.write_table(
        # A month is a slice of a bigger frame: pyarrow encodes offset arrays ~1.6x slower
        # than a compact copy of the slice costs.
        frame.rechunk().to_arrow(),
        sink,
        compression=_COMPRESSION,
        use_dictionary=False,
        column_encoding={time_col: "DELTA_BINARY_PACKED"},
        write_statistics=True,
    )
    view = memoryview(sink.getvalue())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _schema_type(col: str) -> pl.DataType:
    return pl.Int64() if COLUMN_TYPES[col] == "i64" else pl.Float64()


def read_partition(path: Path) -> pl.DataFrame:
    """Read one partition file, turning a corrupt file into a DataError naming it."""
    try:
        return pl.read_parquet(path, memory_map=True)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(
            f"{path}: cannot read this store file: {err}",
            hint="delete the month folder and import or download that month again",
        ) from None
