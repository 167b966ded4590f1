"""Loading from the store: the Python API every later stage uses.

``load_candles`` / ``load_mark_price`` / ``load_funding`` read only the month partitions
that overlap the request and cut the exact span by binary search on the sorted times.
When the store lacks the requested span and ``ENGINE_LOCAL_DATA`` names a folder, the
matching files of that folder are imported first; otherwise a DataError names the missing
span and the command that fetches it.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import polars as pl

from engine.data.importer import collect_files, import_paths
from engine.data.naming import path_hints
from engine.data.schema import (
    FUNDING,
    KLINE_EXTRAS,
    KLINES,
    MARKPRICE,
    TIME_COLUMN,
    Dataset,
    check_interval,
    check_market,
    check_symbol,
)
from engine.data.store import Store, read_partition
from engine.errors import DataError, EngineError, UsageError
from engine.timeutil import HOUR_MS, fmt_ms, interval_ms, parse_end, parse_time

LOCAL_DATA_ENV = "ENGINE_LOCAL_DATA"
# Funding is paid every 8 h on the markets stored here (some symbols use 4 h): a request edge
# further than this from the nearest stored funding time counts as missing.
FUNDING_STEP_MS = 8 * HOUR_MS

TimeArg = int | str | _dt.date | _dt.datetime | None


def _read(store: Store, ds: Dataset, start: int | None, end: int | None) -> pl.DataFrame:
    parts = store.partitions(ds, start=start, end=end)
    if not parts:
        return store.read(ds, start=start, end=end)
    try:
        frame = pl.read_parquet([p.path for p in parts], memory_map=True)
    except (pl.exceptions.PolarsError, OSError):
        # Months written from different sources may differ in their optional columns, or a
        # file may be damaged: read one by one (naming a damaged file) and align the columns.
        frames = [read_partition(p.path) for p in parts]
        frame = pl.concat(frames, how="diagonal_relaxed")
    if start is not None or end is not None:
        col = TIME_COLUMN[ds.table]
        t = frame[col]
        a = 0 if start is None else int(t.search_sorted(start, side="left"))
        b = frame.height if end is None else int(t.search_sorted(end, side="right"))
        frame = frame.slice(a, b - a)
    return frame


def _missing(
    frame: pl.DataFrame, ds: Dataset, start: int | None, end: int | None
) -> tuple[int | None, int | None] | None:
    """The requested span the frame does not cover at its edges, or None when covered.

    Kline edges are checked to the UTC day: a store that holds part of the day on which the
    request starts (or ends) covers that edge. So ``end="2024-05-14"`` over data that stops at
    2024-05-14 15:35 is served up to 15:35 (the last closed bar), while a request that runs
    into days the store does not touch at all is an error naming those days. Funding edges are
    strict (within one funding period), since a missing event changes PnL.
    """
    col = TIME_COLUMN[ds.table]
    if frame.height == 0:
        return (start, end)
    first, last = int(frame[col][0]), int(frame[col][-1])
    if ds.table == FUNDING:
        # Funding is sparse and every event moves PnL: an edge a whole funding period away
        # from the stored events is missing, whatever the day.
        if start is not None and first - start >= FUNDING_STEP_MS:
            return (start, first - 1)
        if end is not None and end - last >= FUNDING_STEP_MS:
            return (last + 1, end)
        return None
    step = interval_ms(ds.interval)
    if start is not None:
        want_first = -(-start // step) * step
        if first > want_first and _day(first) != _day(start):
            return (want_first, first - step)
    if end is not None:
        want_last = (end // step) * step
        if last < want_last and _day(last) != _day(end):
            return (last + step, want_last)
    return None


def _day(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d")


def _missing_error(
    ds: Dataset, span: tuple[int | None, int | None], store: Store, explicit_store: bool
) -> DataError:
    lo, hi = span
    what = (
        "no data at all"
        if lo is None and hi is None
        else f"no bars from {fmt_ms(lo) if lo is not None else 'the start'}"
        f" to {fmt_ms(hi) if hi is not None else 'the end'} UTC"
    )
    store_opt = f" --store {store.root}" if explicit_store else ""
    if ds.table == KLINES:
        start = f" --start {_day(lo)}" if lo is not None else " --start YYYY-MM-DD"
        end = f" --end {_day(hi)}" if hi is not None else ""
        fetch = (
            f"engine data download --market {ds.market} --symbol {ds.symbol}"
            f" --interval {ds.interval}{start}{end}{store_opt}"
        )
        hint = f"run `{fetch}`, or `engine data import DIR{store_opt}` with local files, or set {LOCAL_DATA_ENV}=DIR"
    else:
        hint = f"run `engine data import DIR{store_opt}` with a folder holding {ds.symbol} {ds.table} files, or set {LOCAL_DATA_ENV}=DIR"
    return DataError(f"the store {store.root} has {what} for {ds.label()}", hint=hint)


def _auto_import(store: Store, ds: Dataset, folder: str) -> bool:
    """Import the files of ``folder`` that belong to ``ds``; True if any was found."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"{LOCAL_DATA_ENV}={folder}: not a folder",
            hint=f"point {LOCAL_DATA_ENV} at a folder of Binance data files, or unset it",
        )
    files, _ = collect_files([root])
    chosen = []
    for f in files:
        try:
            h = path_hints(f)
        except EngineError:
            continue
        if h.symbol != ds.symbol or (h.market or "usdm") != ds.market:
            continue
        table = h.table or KLINES
        if table != ds.table or (ds.table != FUNDING and h.interval != ds.interval):
            continue
        chosen.append(f)
    if not chosen:
        return False
    import_paths([], store=store, files=chosen)
    return True


def _load(
    ds: Dataset, start: TimeArg, end: TimeArg, store: str | os.PathLike[str] | Store | None
) -> pl.DataFrame:
    lo = parse_time(start, name="start")
    hi = parse_end(end, name="end")
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"start {fmt_ms(lo)} is after end {fmt_ms(hi)}", hint="swap start and end")
    st = store if isinstance(store, Store) else Store(store)
    frame = _read(st, ds, lo, hi)
    span = _missing(frame, ds, lo, hi)
    if span is not None:
        local = os.environ.get(LOCAL_DATA_ENV)
        if local and _auto_import(st, ds, local):
            frame = _read(st, ds, lo, hi)
            span = _missing(frame, ds, lo, hi)
        if span is not None:
            raise _missing_error(ds, span, st, store is not None)
    return frame


def _drop_empty_extras(frame: pl.DataFrame) -> pl.DataFrame:
    empty = [
        c for c in KLINE_EXTRAS if c in frame.columns and frame[c].null_count() == frame.height
    ]
    return frame.drop(empty) if empty else frame


def load_candles(
    symbol: str,
    interval: str,
    *,
    start: TimeArg = None,
    end: TimeArg = None,
    store: str | os.PathLike[str] | Store | None = None,
    market: str = "usdm",
) -> pl.DataFrame:
    """Klines of one symbol and interval from the store.

    Parameters
    ----------
    symbol
        Binance symbol, e.g. ``"BTCUSDT"``.
    interval
        Binance interval, e.g. ``"5m"``.
    start, end
        Inclusive bounds on ``open_time``: ms integers, ISO dates or datetimes (a date-only
        ``end`` means the whole day). None means from the first / to the last stored bar.
    store
        Store root (default ``$ENGINE_DATA`` or ``./data``).
    market
        ``"usdm"`` (default) or ``"spot"``.

    Returns
    -------
    polars.DataFrame
        Sorted by unique ``open_time`` (Int64 ms UTC, bar open) with Float64 ``open, high,
        low, close, volume``, plus ``quote_volume``, ``trades`` (Int64), ``taker_buy_volume``,
        ``taker_buy_quote_volume`` where the source had them.

    Raises
    ------
    DataError
        The store (after importing from ``$ENGINE_LOCAL_DATA`` if set) lacks bars at either
        edge of the request; the message names the span, the hint the command that fetches it.

    Examples
    --------
    >>> df = load_candles("BTCUSDT", "5m", start="2024-01-01", end="2024-01-31")  # doctest: +SKIP
    >>> df.height  # doctest: +SKIP
    8928
    """
    ds = Dataset(
        KLINES,
        check_market(market, where="market"),
        check_symbol(symbol, where="symbol"),
        check_interval(interval, where="interval"),
    )
    return _drop_empty_extras(_load(ds, start, end, store))


def load_mark_price(
    symbol: str,
    interval: str = "8h",
    *,
    start: TimeArg = None,
    end: TimeArg = None,
    store: str | os.PathLike[str] | Store | None = None,
) -> pl.DataFrame:
    """Mark-price klines (``open_time`` + Float64 ``open, high, low, close``) of a USD-M symbol.

    Bounds and errors as for :func:`load_candles`.
    """
    ds = Dataset(
        MARKPRICE,
        "usdm",
        check_symbol(symbol, where="symbol"),
        check_interval(interval, where="interval"),
    )
    return _load(ds, start, end, store)


def load_funding(
    symbol: str,
    *,
    start: TimeArg = None,
    end: TimeArg = None,
    store: str | os.PathLike[str] | Store | None = None,
) -> pl.DataFrame:
    """Funding rates of a USD-M symbol.

    Returns
    -------
    polars.DataFrame
        ``funding_time`` (Int64 ms UTC, on the funding hour: Binance's ms jitter removed at
        import) and ``funding_rate`` (Float64), sorted. ``start``/``end`` bound
        ``funding_time`` inclusively; a request edge more than 8 h from the stored data
        counts as missing (DataError, after trying ``$ENGINE_LOCAL_DATA``).

    Examples
    --------
    >>> load_funding("BTCUSDT", start="2024-01-01", end="2024-01-01")["funding_time"].to_list()  # doctest: +SKIP
    [1704067200000, 1704096000000, 1704124800000]
    """
    ds = Dataset(FUNDING, "usdm", check_symbol(symbol, where="symbol"), "")
    return _load(ds, start, end, store).select("funding_time", "funding_rate")
