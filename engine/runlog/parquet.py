"""A run's bulk rows as Parquet: staged while the run runs, published in one rename when it ends.

Layout under the results directory::

    runs/<run_id>/<table>.parquet     bulk rows of a finished run (backtests, sweeps)
    runs/.partial/<run_id>/...        a running run's parts (invisible to queries)

:func:`stage_part` writes each frame as a complete part (a temporary name, then a rename);
:func:`publish` merges each table's parts into one file and renames the whole folder into
``runs/``. A reader therefore never sees a half-written file. A Parquet file keeps the columns
of the schema it was written with: readers (:meth:`engine.runlog.RunLog.read` and the views of
:mod:`engine.runlog.query`) add the columns an older file lacks, as nulls.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.runlog import schema

if TYPE_CHECKING:
    import polars as pl

RUNS_DIR = "runs"
PARTIAL_DIR = ".partial"


def run_dir(root: Path, run_id: str) -> Path:
    """Where a finished run's Parquet tables are."""
    return root / RUNS_DIR / run_id


def staging_dir(root: Path, run_id: str) -> Path:
    """Where a running run's Parquet parts are staged."""
    return root / RUNS_DIR / PARTIAL_DIR / run_id


def stage_part(stage: Path, table: str, frame: pl.DataFrame) -> None:
    """Write ``frame`` as the next complete part of ``table`` in the staging folder."""
    stage.mkdir(parents=True, exist_ok=True)
    name = f"{table}-{time.time_ns():020d}-{secrets.token_hex(3)}.parquet"
    tmp = stage / f".{name}.tmp"
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    os.replace(tmp, stage / name)


def publish(stage: Path, final: Path) -> None:
    """Merge each table's parts into ``<table>.parquet`` and move ``stage`` to ``final``."""
    if not stage.exists():
        return
    for tmp in stage.glob(".*.tmp"):  # an interrupted write: never published
        tmp.unlink()
    for table in schema.RUN_TABLES:
        parts = sorted(stage.glob(f"{table}-*.parquet"))
        if not parts:
            continue
        target = stage / f"{table}.parquet"
        if len(parts) == 1:
            os.replace(parts[0], target)
            continue
        _merge_parts(parts, stage / f".{table}.parquet.tmp")
        os.replace(stage / f".{table}.parquet.tmp", target)
        for part in parts:
            part.unlink()
    if final.exists():  # published before (should not happen): keep both, never overwrite
        for f in stage.iterdir():
            os.replace(f, final / f.name)
        shutil.rmtree(stage, ignore_errors=True)
    else:
        os.replace(stage, final)


def _merge_parts(parts: list[Path], out: Path) -> None:
    """Concatenate the row groups of ``parts`` (same schema) into one file, in order."""
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for part in parts:
            pf = pq.ParquetFile(part)
            for i in range(pf.num_row_groups):
                rg = pf.read_row_group(i)
                if writer is None:
                    writer = pq.ParquetWriter(out, rg.schema, compression="zstd")
                writer.write_table(rg)
    finally:
        if writer is not None:
            writer.close()


def read_published(root: Path, run_id: str, table: str) -> pl.DataFrame | None:
    """A finished run's ``table`` as written (older files lack newer columns), or None."""
    import polars as pl

    path = run_dir(root, run_id) / f"{table}.parquet"
    return pl.read_parquet(path) if path.exists() else None
