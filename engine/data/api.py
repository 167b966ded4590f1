"""Loading from the store: the Python API every later stage uses.

``load_candles`` / ``load_mark_price`` / ``load_funding`` read only the month partitions
that overlap the request and cut the exact span by binary search on the sorted times.

When the store lacks the requested span (at either edge), the missing data is fetched:

- ``ENGINE_LOCAL_DATA`` names a folder: the matching files of that folder are imported, and
  nothing is downloaded (machines without internet, CI with ``../shared`` beside it);
- otherwise (unset, or naming no folder) the missing months come from Binance Vision
  (:func:`engine.data.download.fetch_series`, the code of ``engine data download``), unless
  ``ENGINE_VISION_URL=off``.

If the data is still missing, a DataError names the span, why it could not be fetched, and
the command that fetches it. A failed fetch leaves the store's tables unchanged.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import polars as pl

from engine.data.download import VISION_ENV, VISION_OFF, auto_fetch_enabled, fetch_series
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
from engine.progress import Progress
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
    ds: Dataset,
    span: tuple[int | None, int | None],
    store: Store,
    explicit_store: bool,
    why: str = "",
) -> DataError:
    lo, hi = span
    what = (
        "no data at all"
        if lo is None and hi is None
        else f"no bars from {fmt_ms(lo) if lo is not None else 'the start'}"
        f" to {fmt_ms(hi) if hi is not None else 'the end'} UTC"
    )
    store_opt = f" --store {store.root}" if explicit_store else ""
    local = f"`engine data import DIR{store_opt}` with local files, or set {LOCAL_DATA_ENV}=DIR"
    if ds.table == FUNDING:
        local = f"`engine data import DIR{store_opt}` with a folder holding {ds.symbol} funding files, or set {LOCAL_DATA_ENV}=DIR"
    if lo is None:
        fetch = ""
    else:
        table = "" if ds.table == KLINES else f" --data {ds.table}"
        interval = f" --interval {ds.interval}" if ds.interval else ""
        end = f" --end {_day(hi)}" if hi is not None else ""
        fetch = (
            f"run `engine data download --market {ds.market} --symbol {ds.symbol}{interval}"
            f"{table} --start {_day(lo)}{end}{store_opt}`, or "
        )
    hint = f"{fetch}{local}"
    return DataError(f"the store {store.root} has {what} for {ds.label()}{why}", hint=hint)


def _auto_import(store: Store, ds: Dataset, folder: Path) -> bool:
    """Import the files of ``folder`` that belong to ``ds``; True if any was found."""
    files, _ = collect_files([folder])
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


def _why_not_fetched(
    span: tuple[int | None, int | None], tried: list[tuple[int | None, int | None]], local: str
) -> str | None:
    """Why the missing span is not fetched from Vision (appended to the error), or None."""
    note = f"; {LOCAL_DATA_ENV}={local} is not a folder" if local else ""
    if not auto_fetch_enabled():
        return f" ({VISION_ENV}={VISION_OFF}: nothing downloaded{note})"
    if span[0] is None:
        return f" (give a start to fetch it from Binance Vision{note})"
    if span in tried:
        return f" (Binance Vision's files do not cover it either{note})"
    return None


def _fill(
    st: Store,
    ds: Dataset,
    lo: int | None,
    hi: int | None,
    explicit_store: bool,
    progress: Progress | None,
) -> pl.DataFrame:
    """The stored rows of [lo, hi], after fetching missing edges (local folder, else Vision)."""
    frame = _read(st, ds, lo, hi)
    span = _missing(frame, ds, lo, hi)
    if span is None:
        return frame
    local = os.environ.get(LOCAL_DATA_ENV, "")
    if local and Path(local).is_dir():  # a local folder: import from it, never download
        if _auto_import(st, ds, Path(local)):
            frame = _read(st, ds, lo, hi)
            span = _missing(frame, ds, lo, hi)
        if span is not None:
            raise _missing_error(
                ds, span, st, explicit_store, f" (nor has {LOCAL_DATA_ENV}={local})"
            )
        return frame
    tried: list[tuple[int | None, int | None]] = []
    while span is not None:
        why = _why_not_fetched(span, tried, local)
        if why is not None:
            raise _missing_error(ds, span, st, explicit_store, why)
        assert span[0] is not None
        try:
            fetch_series(ds, span[0], span[1], store=st, progress=progress)
        except DataError as err:
            note = f"; {LOCAL_DATA_ENV}={local} is not a folder" if local else ""
            why = f", and fetching it from Binance Vision failed: {err.message}{note}"
            raise _missing_error(ds, span, st, explicit_store, why) from None
        tried.append(span)
        frame = _read(st, ds, lo, hi)
        span = _missing(frame, ds, lo, hi)
    return frame


def _load(
    ds: Dataset,
    start: TimeArg,
    end: TimeArg,
    store: str | os.PathLike[str] | Store | None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    lo = parse_time(start, name="start")
    hi = parse_end(end, name="end")
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"start {fmt_ms(lo)} is after end {fmt_ms(hi)}", hint="swap start and end")
    st = store if isinstance(store, Store) else Store(store)
    return _fill(st, ds, lo, hi, store is not None, progress)


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
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Klines of one symbol and interval from the store (missing bars fetched first).

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
    progress
        :mod:`engine.progress`'s ``progress(task, done, total)``, told about a download from
        Binance Vision and the import that follows it (nothing is reported otherwise).

    Returns
    -------
    polars.DataFrame
        Sorted by unique ``open_time`` (Int64 ms UTC, bar open) with Float64 ``open, high,
        low, close, volume``, plus ``quote_volume``, ``trades`` (Int64), ``taker_buy_volume``,
        ``taker_buy_quote_volume`` where the source had them.

    Raises
    ------
    DataError
        The store lacks bars at either edge of the request, also after importing from
        ``$ENGINE_LOCAL_DATA`` or fetching from Binance Vision (see the module docstring);
        the message names the span and why it could not be fetched, the hint the command
        that fetches it.

    Examples
    --------
    A store holding three real BTCUSDT 1h bars (imported from a CSV), read back:

    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> csv = Path(tmp.name) / "BTCUSDT-1h.csv"
    >>> _ = csv.write_text(
    ...     "open_time,open,high,low,close,volume\\n"
    ...     "1704067200000,42314.0,42603.2,42289.6,42503.5,8459.477\\n"
    ...     "1704070800000,42503.5,42832.0,42462.0,42647.9,9043.411\\n"
    ...     "1704074400000,42647.9,42676.9,42530.0,42620.4,4653.067\\n"
    ... )
    >>> store = Path(tmp.name) / "store"
    >>> _ = import_paths([csv], store=store)
    >>> df = load_candles("BTCUSDT", "1h", start="2024-01-01T01:00", end="2024-01-01", store=store)
    >>> df["open_time"].to_list(), df["close"].to_list()
    ([1704070800000, 1704074400000], [42647.9, 42620.4])
    >>> tmp.cleanup()
    """
    return _drop_empty_extras(
        _load(_klines_series(symbol, interval, market), start, end, store, progress)
    )


def _klines_series(symbol: str, interval: str, market: str) -> Dataset:
    """The klines series :func:`load_candles` reads (its arguments checked)."""
    return Dataset(
        KLINES,
        check_market(market, where="market"),
        check_symbol(symbol, where="symbol"),
        check_interval(interval, where="interval"),
    )


def _funding_series(symbol: str) -> Dataset:
    """The funding series :func:`load_funding` reads (its symbol checked)."""
    return Dataset(FUNDING, "usdm", check_symbol(symbol, where="symbol"), "")


def stored_stamp(
    symbols: tuple[str, ...] | list[str],
    interval: str,
    *,
    market: str = "usdm",
    funding: bool = False,
    store: str | os.PathLike[str] | Store | None = None,
) -> tuple[object, ...]:
    """What loading these series reads from the store, as its files' identities: the store's
    root, then each symbol's klines (and funding) partitions (:meth:`Store.stamp`). Two equal
    stamps, the same stored rows: a cache of loaded data is valid while the stamp is
    unchanged (:func:`engine.decisions.market.load_market`). Costs a listing and a ``stat``
    a month partition (~10 us)."""
    st = store if isinstance(store, Store) else Store(store)
    out: list[object] = [str(st.root.resolve())]
    for sym in symbols:
        out.append(st.stamp(_klines_series(sym, interval, market)))
        if funding:
            out.append(st.stamp(_funding_series(sym)))
    return tuple(out)


def load_mark_price(
    symbol: str,
    interval: str = "8h",
    *,
    start: TimeArg = None,
    end: TimeArg = None,
    store: str | os.PathLike[str] | Store | None = None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Mark-price klines (``open_time`` + Float64 ``open, high, low, close``) of a USD-M symbol.

    Bounds, fetching, ``progress`` and errors as for :func:`load_candles`.
    """
    ds = Dataset(
        MARKPRICE,
        "usdm",
        check_symbol(symbol, where="symbol"),
        check_interval(interval, where="interval"),
    )
    return _load(ds, start, end, store, progress)


def load_funding(
    symbol: str,
    *,
    start: TimeArg = None,
    end: TimeArg = None,
    store: str | os.PathLike[str] | Store | None = None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Funding rates of a USD-M symbol (missing events fetched first, as for :func:`load_candles`).

    Returns
    -------
    polars.DataFrame
        ``funding_time`` (Int64 ms UTC, on the funding hour: Binance's ms jitter removed at
        import) and ``funding_rate`` (Float64), sorted. ``start``/``end`` bound
        ``funding_time`` inclusively; a request edge more than 8 h from the stored data
        counts as missing (fetched, else a DataError, as for :func:`load_candles`).

    Examples
    --------
    Binance's ``calc_time`` (here 1 ms late) is put on the funding hour at import:

    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()
    >>> csv = Path(tmp.name) / "BTCUSDT-fundingRate.csv"
    >>> _ = csv.write_text(
    ...     "calc_time,funding_interval_hours,last_funding_rate\\n"
    ...     "1704009600001,8,0.00034573\\n"
    ...     "1704038400000,8,0.00033597\\n"
    ...     "1704067200000,8,0.00037409\\n"
    ... )
    >>> store = Path(tmp.name) / "store"
    >>> _ = import_paths([csv], store=store)
    >>> load_funding("BTCUSDT", end="2023-12-31", store=store)["funding_time"].to_list()
    [1704009600000, 1704038400000]
    >>> tmp.cleanup()
    """
    frame = _load(_funding_series(symbol), start, end, store, progress)
    return frame.select("funding_time", "funding_rate")
