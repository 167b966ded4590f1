"""``engine data list`` and ``engine data check``: what the store holds and what is wrong with it.

Checks, each reported with the series, the file and the time(s):

- ``gap`` (error): missing bars between two stored bars (from, to, count). Never filled.
- ``duplicate`` (error): a time held more than once.
- ``unsorted`` (error): a time smaller than the one before it (raw files; the store sorts).
- ``misaligned`` (error): a bar time off the interval's grid.
- ``ohlc`` (error): high below open/close/low, low above open/close/high, or a price <= 0.
- ``negative_volume`` (error).
- ``zero_volume`` (warning): a bar with no trades, e.g. an exchange halt. Reported, but only
  fails the check with ``strict=True``: real markets have them.

Funding series are checked for gaps longer than 8 h, duplicates, unsorted times and
times off the hour.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from engine.data.formats import read_path
from engine.data.importer import collect_files
from engine.data.schema import FUNDING, KLINES, TIME_COLUMN, Dataset
from engine.data.store import Store
from engine.timeutil import DAY_MS, HOUR_MS, fmt_ms, interval_ms

ERROR = "error"
WARNING = "warning"
FUNDING_STEP_MS = 8 * HOUR_MS


@dataclass(frozen=True)
class Finding:
    """One problem found in a series or file."""

    kind: str
    severity: str
    series: str
    where: str
    start: int | None
    end: int | None
    count: int
    detail: str

    def span(self) -> str:
        """``from → to`` (UTC) or the single time."""
        if self.start is None:
            return "-"
        if self.end is None or self.end == self.start:
            return fmt_ms(self.start)
        return f"{fmt_ms(self.start)} → {fmt_ms(self.end)}"


@dataclass(frozen=True)
class SeriesSummary:
    """One line of ``engine data list``."""

    dataset: Dataset
    first: int | None
    last: int | None
    rows: int
    missing: int | None
    months: int


def _step(ds: Dataset) -> int:
    return FUNDING_STEP_MS if ds.table == FUNDING else interval_ms(ds.interval)


def summarize(store: Store) -> list[SeriesSummary]:
    """Rows, first and last time and missing bars of every series, from Parquet metadata only."""
    out = []
    for ds in store.datasets():
        parts = store.partitions(ds)
        rows = 0
        first: int | None = None
        last: int | None = None
        for p in parts:
            md = pq.read_metadata(p.path)
            rows += md.num_rows
            for g in range(md.num_row_groups):
                stats = md.row_group(g).column(0).statistics
                if stats is None or not stats.has_min_max:
                    t = pl.read_parquet(p.path, columns=[TIME_COLUMN[ds.table]])[
                        TIME_COLUMN[ds.table]
                    ]
                    lo, hi = int(t.min()), int(t.max())  # type: ignore[arg-type]
                else:
                    lo, hi = int(stats.min), int(stats.max)
                first = lo if first is None else min(first, lo)
                last = hi if last is None else max(last, hi)
        missing = None
        if first is not None and last is not None:
            missing = max(0, (last - first) // _step(ds) + 1 - rows)
        out.append(SeriesSummary(ds, first, last, rows, missing, len(parts)))
    return out


DetailFn = Callable[[dict[str, Any]], str]


def _findings(
    kind: str,
    severity: str,
    label: str,
    col: str,
    rows: pl.DataFrame,
    detail: DetailFn,
    count_col: str | None = None,
) -> list[Finding]:
    """One Finding per row of ``rows`` (``_w`` the place, ``_from``/``_to`` the span if any)."""
    return [
        Finding(
            kind,
            severity,
            label,
            r["_w"],
            r.get("_from", r[col]),
            r.get("_to", r[col]),
            int(r[count_col]) if count_col else 1,
            detail(r),
        )
        for r in rows.iter_rows(named=True)
    ]


def _order_findings(f: pl.DataFrame, col: str, label: str) -> list[Finding]:
    """Unsorted times (in the order given) and duplicated times."""
    t = pl.col(col)
    prev = f.with_columns(t.shift(1).alias("_prev"), pl.col("_w").shift(1).alias("_pw"))
    out = _findings(
        "unsorted",
        ERROR,
        label,
        col,
        prev.filter(pl.col("_prev") > t),
        lambda r: f"{r[col]} comes after {r['_prev']} ({fmt_ms(r['_prev'])}, {r['_pw']})",
    )
    dup = f.filter(t.is_duplicated())
    if dup.height:
        groups = dup.group_by(col, maintain_order=True).agg(
            pl.len().alias("_n"), pl.col("_w").str.join(", ").alias("_w")
        )
        out += _findings(
            "duplicate", ERROR, label, col, groups, lambda r: f"{r['_n']} rows at {r[col]}", "_n"
        )
    return out


def _grid_findings(f: pl.DataFrame, col: str, ds: Dataset, label: str) -> list[Finding]:
    """Gaps between the sorted unique times, and times off the interval's grid."""
    t = pl.col(col)
    step = _step(ds)
    s = f.unique(subset=[col], keep="first").sort(col)
    d = s.with_columns((t - t.shift(1)).alias("_d"), t.shift(1).alias("_prev"))
    gaps = d.filter(pl.col("_d") > step)
    if ds.table == FUNDING:
        gaps = gaps.with_columns((pl.col("_prev") + 1).alias("_from"), (t - 1).alias("_to"))
        out = _findings(
            "gap",
            ERROR,
            label,
            col,
            gaps,
            lambda r: f"{(r['_d']) / HOUR_MS:.0f} h without funding after {fmt_ms(r['_prev'])}",
        )
    else:
        gaps = gaps.with_columns(
            (pl.col("_prev") + step).alias("_from"),
            (t - step).alias("_to"),
            (pl.col("_d") // step - 1).alias("_n"),
        )
        out = _findings(
            "gap",
            ERROR,
            label,
            col,
            gaps,
            lambda r: f"{r['_n']} missing bar(s) between {fmt_ms(r['_prev'])} and {fmt_ms(r[col])}",
            "_n",
        )
    grid = step if ds.table != FUNDING else HOUR_MS
    if grid <= DAY_MS and DAY_MS % grid == 0:
        out += _findings(
            "misaligned",
            ERROR,
            label,
            col,
            f.filter(t % grid != 0),
            lambda r: f"{r[col]} is not on the {ds.interval or '1h'} grid",
        )
    return out


def _value_findings(
    f: pl.DataFrame, col: str, ds: Dataset, label: str, strict: bool
) -> list[Finding]:
    """OHLC violations and prices <= 0; negative and (warning unless strict) zero volume."""
    o, h, lo, c = (pl.col(x) for x in ("open", "high", "low", "close"))
    bad = f.filter(
        (h < pl.max_horizontal(o, c, lo))
        | (lo > pl.min_horizontal(o, c, h))
        | (pl.min_horizontal(o, h, lo, c) <= 0)
    )
    out = _findings(
        "ohlc",
        ERROR,
        label,
        col,
        bad,
        lambda r: f"open {r['open']} high {r['high']} low {r['low']} close {r['close']}",
    )
    if ds.table == KLINES:
        vol = pl.col("volume")
        out += _findings(
            "negative_volume",
            ERROR,
            label,
            col,
            f.filter(vol < 0),
            lambda r: f"volume {r['volume']}",
        )
        out += _findings(
            "zero_volume",
            ERROR if strict else WARNING,
            label,
            col,
            f.filter(vol == 0),
            lambda r: "volume 0",
        )
    return out


def check_frame(
    frame: pl.DataFrame,
    *,
    ds: Dataset,
    where: pl.Series | str,
    strict: bool = False,
) -> list[Finding]:
    """Every problem in one series' rows, in the order given.

    ``where`` is either one label for all rows or a per-row String Series (file, line).
    Findings come kind by kind: unsorted, duplicate, gap, misaligned, then (klines and mark
    price) ohlc, negative_volume, zero_volume.
    """
    n = frame.height
    if n == 0:
        return []
    label = ds.label()
    col = TIME_COLUMN[ds.table]
    w = where if isinstance(where, pl.Series) else pl.Series("_w", [where] * n)
    f = frame.with_columns(w.alias("_w"))
    out = _order_findings(f, col, label) + _grid_findings(f, col, ds, label)
    if ds.table != FUNDING:
        out += _value_findings(f, col, ds, label, strict)
    return out


def check_store(
    store: Store,
    *,
    market: str | None = None,
    symbol: str | None = None,
    interval: str | None = None,
    strict: bool = False,
) -> tuple[list[Dataset], list[Finding]]:
    """Check every series matching the filters; returns (series checked, findings)."""
    checked = []
    findings: list[Finding] = []
    for ds in store.datasets():
        if market and ds.market != market:
            continue
        if symbol and ds.symbol != symbol:
            continue
        if interval and ds.interval != interval:
            continue
        parts = store.partitions(ds)
        if not parts:
            continue
        frame = pl.concat(
            [
                pl.read_parquet(p.path).with_columns(pl.lit(str(p.path)).alias("_file"))
                for p in parts
            ],
            how="diagonal_relaxed",
        )
        checked.append(ds)
        findings.extend(
            check_frame(frame.drop("_file"), ds=ds, where=frame["_file"], strict=strict)
        )
    return checked, findings


def check_files(
    paths: list[Path],
    *,
    market: str | None = None,
    symbol: str | None = None,
    interval: str | None = None,
    strict: bool = False,
) -> tuple[list[Dataset], list[Finding]]:
    """Check raw data files as they are (file order kept, so unsorted rows are found)."""
    files, _ = collect_files([os.fspath(p) for p in paths])
    checked = []
    findings: list[Finding] = []
    for path in files:
        for parsed in read_path(path, market=market, symbol=symbol, interval=interval):
            n = parsed.frame.height
            base = parsed.first_line if parsed.first_line is not None else 1
            unit = "line" if parsed.first_line is not None else "row"
            where = pl.Series(
                "_w", [f"{parsed.source} {unit} {base + i}" for i in range(n)], dtype=pl.String
            )
            checked.append(parsed.dataset)
            findings.extend(
                check_frame(parsed.frame, ds=parsed.dataset, where=where, strict=strict)
            )
    return checked, findings
