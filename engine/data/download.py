"""Binance Vision: plan its files, fetch and verify them, then import them.

``engine data download`` and the loaders' automatic fetch (:func:`fetch_series`, used by
:mod:`engine.data.api` when a run needs bars the store lacks) both run through here.

URL layout (base ``https://data.binance.vision``, or ``--vision-url`` / ``ENGINE_VISION_URL``)::

    data/{futures/um|spot}/{monthly|daily}/klines/{SYM}/{INT}/{SYM}-{INT}-{YYYY-MM[-DD]}.zip
    data/futures/um/{monthly|daily}/markPriceKlines/{SYM}/{INT}/{SYM}-{INT}-{YYYY-MM[-DD]}.zip
    data/futures/um/monthly/fundingRate/{SYM}/{SYM}-fundingRate-{YYYY-MM}.zip
    ... each with a ``.CHECKSUM`` beside it ("<sha256>  <file name>")

Klines and mark price: whole months before the current one come as monthly files; the
current month as daily files up to yesterday. The previous month falls back to daily files
while its monthly file is not yet published. Funding comes in monthly files only (Vision
publishes no daily ones), so the current month cannot be fetched from it.

Files land in ``<store>/_downloads/`` under the same path as on the site, first as ``.part``
and renamed once complete; a file whose checksum verified is never fetched again, so a re-run
after an interruption fetches only the rest. Nothing is imported until every file is
fetched and verified; then the files are imported together (see
:mod:`engine.data.importer`). Transient failures (5xx, 429, dropped connections, timeouts)
are retried with exponential backoff (tenacity). Progress is reported through
:mod:`engine.progress` (``progress(task, done, total)``); nothing here draws.

``ENGINE_VISION_URL=off`` switches the automatic fetch off (and makes ``engine data
download`` ask for ``--vision-url``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from engine.data.formats import verify_checksum
from engine.data.importer import ImportReport, import_paths
from engine.data.schema import (
    FUNDING,
    KLINES,
    MARKPRICE,
    Dataset,
    check_interval,
    check_market,
    check_symbol,
)
from engine.data.store import Store
from engine.errors import DataError, RunError, UsageError
from engine.progress import Progress, step
from engine.timeutil import fmt_ms, parse_end, parse_time

DEFAULT_VISION_URL = "https://data.binance.vision"
VISION_ENV = "ENGINE_VISION_URL"
VISION_OFF = "off"
_MARKET_PATH = {"usdm": "futures/um", "spot": "spot"}
# The folder of each store table on Vision.
VISION_KIND = {KLINES: "klines", MARKPRICE: "markPriceKlines", FUNDING: "fundingRate"}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """One Vision file: its path below the base URL and what it holds."""

    path: str
    market: str
    symbol: str
    interval: str  # "" for funding
    period: str  # YYYY-MM (monthly) or YYYY-MM-DD (daily)
    table: str = KLINES

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class DownloadReport:
    """What a download did: files fetched, found in the cache, missing on the site."""

    fetched: list[Path] = field(default_factory=list)
    cached: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    imported: ImportReport | None = None

    @property
    def files(self) -> list[Path]:
        """Every verified file, fetched now or found in the cache."""
        return [*self.fetched, *self.cached]


class _NotFound(Exception):
    pass


class _Transient(Exception):
    """A failure worth retrying (5xx, 429, dropped connection, short body, timeout)."""


def auto_fetch_enabled() -> bool:
    """False when ``ENGINE_VISION_URL=off``: the loaders then never download."""
    return (os.environ.get(VISION_ENV) or "").strip().lower() != VISION_OFF


def vision_url(override: str | None = None) -> str:
    """The Vision base URL: option, then ``ENGINE_VISION_URL``, then Binance's site.

    >>> vision_url("http://127.0.0.1:8000/")
    'http://127.0.0.1:8000'
    """
    url = (override or os.environ.get(VISION_ENV) or DEFAULT_VISION_URL).strip()
    if url.lower() == VISION_OFF:
        raise UsageError(
            f"{VISION_ENV}=off: downloading from Binance Vision is switched off",
            hint=f"pass --vision-url URL, or unset {VISION_ENV}",
        )
    return url.rstrip("/")


def remote_file(
    table: str, market: str, freq: str, symbol: str, interval: str, period: str
) -> RemoteFile:
    """The Vision file of one period (``freq`` ``"monthly"`` or ``"daily"``) of a series.

    >>> remote_file("funding", "usdm", "monthly", "BTCUSDT", "", "2024-01").path
    'data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip'
    >>> remote_file("markprice", "usdm", "daily", "ETHUSDT", "8h", "2024-01-02").name
    'ETHUSDT-8h-2024-01-02.zip'
    """
    kind = VISION_KIND[table]
    if table == FUNDING:
        name = f"{symbol}-fundingRate-{period}.zip"
        path = f"data/{_MARKET_PATH[market]}/{freq}/{kind}/{symbol}/{name}"
    else:
        name = f"{symbol}-{interval}-{period}.zip"
        path = f"data/{_MARKET_PATH[market]}/{freq}/{kind}/{symbol}/{interval}/{name}"
    return RemoteFile(path, market, symbol, interval, period, table)


def _month_add(y: int, m: int, k: int) -> tuple[int, int]:
    n = y * 12 + (m - 1) + k
    return n // 12, n % 12 + 1


def _months(first: _dt.date, last: _dt.date) -> list[tuple[int, int, _dt.date, _dt.date]]:
    """(year, month, first day, last day) of each month touched by [first, last]."""
    out = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        ny, nm = _month_add(y, m, 1)
        lo = max(first, _dt.date(y, m, 1))
        hi = min(last, _dt.date(ny, nm, 1) - _dt.timedelta(days=1))
        out.append((y, m, lo, hi))
        y, m = ny, nm
    return out


def _date(ms: int) -> _dt.date:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).date()


def _day_ms(day: _dt.date) -> int:
    return int(_dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC).timestamp() * 1000)


def _series_plan(
    table: str, market: str, sym: str, iv: str, first: _dt.date, last: _dt.date, today: _dt.date
) -> list[tuple[RemoteFile, list[RemoteFile]]]:
    """:func:`plan` for one series."""
    prev_month = _month_add(today.year, today.month, -1)
    out: list[tuple[RemoteFile, list[RemoteFile]]] = []
    for y, m, lo, hi in _months(first, last):
        current = (y, m) == (today.year, today.month)
        month = remote_file(table, market, "monthly", sym, iv, f"{y:04d}-{m:02d}")
        if table == FUNDING:  # monthly files only: none yet for the current month
            if not current:
                out.append((month, []))
            continue
        days = [
            remote_file(table, market, "daily", sym, iv, (lo + _dt.timedelta(days=k)).isoformat())
            for k in range((hi - lo).days + 1)
        ]
        if current:
            out.extend((d, []) for d in days)
        else:
            out.append((month, days if (y, m) == prev_month else []))
    return out


def plan(
    symbols: list[str],
    intervals: list[str],
    *,
    start: int,
    end: int,
    market: str,
    today: _dt.date,
    table: str = KLINES,
) -> list[tuple[RemoteFile, list[RemoteFile]]]:
    """Files to fetch: (file, fallback daily files if it is missing) for each piece.

    ``start``/``end`` are inclusive UTC ms; nothing at or after ``today`` is requested.
    Funding (``table="funding"``, ``intervals`` ignored) has monthly files only, none for
    the current month.
    """
    first = _date(start)
    last = min(_date(end), today - _dt.timedelta(days=1))
    if last < first:
        return []
    return [
        piece
        for sym in symbols
        for iv in ([""] if table == FUNDING else intervals)
        for piece in _series_plan(table, market, sym, iv, first, last, today)
    ]


def _retryable(err: BaseException) -> bool:
    return isinstance(err, _Transient)


def _fetch(url: str, dest: Path, *, timeout: float) -> str:
    """GET url into dest (via dest.part); returns the SHA-256 of the body."""
    part = dest.with_name(dest.name + ".part")
    req = urllib.request.Request(url, headers={"User-Agent": "engine-data/0.1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, part.open("wb") as fh:
            expected = resp.headers.get("Content-Length")
            h = hashlib.sha256()
            n = 0
            while True:
                block = resp.read(_CHUNK)
                if not block:
                    break
                fh.write(block)
                h.update(block)
                n += len(block)
            if expected is not None and n != int(expected):
                raise _Transient(f"connection dropped after {n} of {expected} bytes")
            fh.flush()
            os.fsync(fh.fileno())
    except urllib.error.HTTPError as err:
        err.close()
        with contextlib.suppress(OSError):
            part.unlink()
        if err.code == 404:
            raise _NotFound(url) from None
        if err.code >= 500 or err.code == 429:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise RunError(
            f"{url}: HTTP {err.code} {err.reason}", hint="check --vision-url and the symbol"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
        with contextlib.suppress(OSError):
            part.unlink()
        raise _Transient(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None
    except _Transient:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    os.replace(part, dest)
    return h.hexdigest()


def _get(url: str, dest: Path, *, timeout: float, retries: int, backoff: float) -> str:
    try:
        for attempt in Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(retries),
            wait=wait_exponential(multiplier=backoff, max=10 * backoff),
            reraise=False,
        ):
            with attempt:
                return _fetch(url, dest, timeout=timeout)
    except RetryError as err:
        cause = err.last_attempt.exception()
        raise RunError(
            f"{url}: download failed after {retries} attempts: {cause}",
            hint="check the connection and --vision-url, then run the same command again:"
            " finished files are kept and not fetched again",
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _cached(zip_path: Path) -> bool:
    checksum = zip_path.with_name(zip_path.name + ".CHECKSUM")
    if not (zip_path.is_file() and checksum.is_file()):
        return False
    try:
        verify_checksum(zip_path, checksum)
    except DataError:
        return False
    return True


def _fetch_one(
    rf: RemoteFile, base: str, cache: Path, *, timeout: float, retries: int, backoff: float
) -> tuple[Path, bool]:
    """Fetch one file and its checksum into the cache; (path, fetched?). Raises _NotFound."""
    dest = cache / rf.path
    if _cached(dest):
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    checksum = dest.with_name(dest.name + ".CHECKSUM")
    url = f"{base}/{rf.path}"
    _get(url + ".CHECKSUM", checksum, timeout=timeout, retries=retries, backoff=backoff)
    actual = _get(url, dest, timeout=timeout, retries=retries, backoff=backoff)
    text = checksum.read_text().split()
    expected = text[0].lower() if text else ""
    if actual != expected:
        for p in (dest, checksum):
            with contextlib.suppress(OSError):
                p.unlink()
        raise DataError(
            f"{url}: checksum mismatch: {rf.name}.CHECKSUM says {expected or '(empty)'},"
            f" the file has {actual}",
            hint="the file was corrupted on the way or on the server; run the command again,"
            " and if it persists report it or import the month from another source",
        )
    return dest, True


def fetch_files(
    todo: list[tuple[RemoteFile, list[RemoteFile]]],
    *,
    base: str,
    cache: Path,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    progress: Progress | None = None,
) -> DownloadReport:
    """Fetch and verify the planned files into ``cache``; a 404 lands in ``missing``.

    Progress: ``(file name, files done, files planned)`` after each file (and 0 at the start).

    Raises
    ------
    DataError
        A checksum mismatch (the bad file is deleted).
    RunError
        The site could not be reached after the retries (finished files stay cached).
    """
    report = DownloadReport()
    opts = {"timeout": timeout, "retries": retries, "backoff": backoff}
    total = len(todo)
    if todo:
        step(progress, todo[0][0].name, 0, total)
    for k, (rf, fallback) in enumerate(todo, start=1):
        for piece in [rf, *fallback] if fallback else [rf]:
            try:
                path, fetched = _fetch_one(piece, base, cache, **opts)  # type: ignore[arg-type]
            except _NotFound:
                if piece is not rf or not fallback:
                    report.missing.append(f"{base}/{piece.path}")
                continue
            (report.fetched if fetched else report.cached).append(path)
            if piece is rf:
                break
        step(progress, rf.name, k, total)
    return report


def _span(start: int | str, end: int | str | None, today: _dt.date) -> tuple[int, int]:
    """Parse and check --start/--end (end defaults to the end of yesterday, UTC)."""
    lo = parse_time(start, name="--start")
    if lo is None:
        raise UsageError("--start is required", hint="pass --start YYYY-MM-DD")
    hi = parse_end(end, name="--end")
    midnight = _day_ms(today)
    if hi is None:
        hi = midnight - 1
    if lo >= midnight:
        raise UsageError(
            f"--start {fmt_ms(lo)} is today or later; Binance Vision publishes a day's file after it ends",
            hint=f"use a start before {today.isoformat()}",
        )
    if lo > hi:
        raise UsageError(f"--start {fmt_ms(lo)} is after --end {fmt_ms(hi)}", hint="swap them")
    return lo, hi


def download(
    symbols: list[str],
    intervals: list[str],
    *,
    start: int | str,
    end: int | str | None = None,
    market: str = "usdm",
    table: str = KLINES,
    store: str | os.PathLike[str] | Store | None = None,
    base_url: str | None = None,
    today: _dt.date | None = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    progress: Progress | None = None,
) -> DownloadReport:
    """Download Vision files for the symbols and intervals over [start, end], then import.

    Parameters
    ----------
    symbols, intervals
        E.g. ``["BTCUSDT", "ETHUSDT"]`` and ``["5m"]`` (intervals are ignored for funding).
    start, end
        Inclusive; ms or ISO dates (a date-only end means the whole day). ``end`` defaults
        to yesterday (UTC).
    market
        ``"usdm"`` (futures/um) or ``"spot"``.
    table
        ``"klines"`` (default), ``"markprice"`` or ``"funding"`` (the last two: USD-M only).
    base_url
        Vision base URL (default ``$ENGINE_VISION_URL`` or https://data.binance.vision).
    today
        The current UTC date (default: the system clock); files from today on do not exist.
    progress
        :mod:`engine.progress`'s ``progress(task, done, total)``: files downloaded, then
        files imported.

    Returns
    -------
    DownloadReport
        Files fetched and found in the cache, URLs missing on the site (404), the import.

    Raises
    ------
    DataError
        A checksum mismatch (the bad file is deleted; nothing is imported).
    RunError
        The site could not be reached after the retries (finished files stay cached).
    """
    syms = [check_symbol(s) for s in symbols]
    mk = check_market(market)
    if table not in VISION_KIND:
        raise UsageError(f"unknown data {table!r}", hint=f"use one of: {', '.join(VISION_KIND)}")
    if table != KLINES and mk != "usdm":
        raise UsageError(f"{table} data exists only for USD-M futures", hint="use --market usdm")
    ivs = [check_interval(i) for i in intervals] if table != FUNDING else [""]
    if not syms or not ivs:
        raise UsageError("give at least one --symbol and one --interval")
    now = today or _dt.datetime.now(tz=_dt.UTC).date()
    lo, hi = _span(start, end, now)
    st = store if isinstance(store, Store) else Store(store)
    todo = plan(syms, ivs, start=lo, end=hi, market=mk, today=now, table=table)
    report = fetch_files(
        todo,
        base=vision_url(base_url),
        cache=st.downloads,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        progress=progress,
    )
    if report.files:
        report.imported = import_paths(
            [], store=st, market=mk, files=report.files, progress=progress
        )
    return report


def fetch_series(
    ds: Dataset,
    start: int,
    end: int | None,
    *,
    store: Store,
    base_url: str | None = None,
    today: _dt.date | None = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    progress: Progress | None = None,
) -> DownloadReport:
    """Fetch the Vision files holding [start, end] of one series and import them: all or nothing.

    ``end`` None means up to yesterday (UTC). This is the loaders' automatic fetch.

    Raises
    ------
    DataError
        Vision has no file for the span yet, a file is missing on the site (404), a checksum
        does not match, or the site cannot be reached: the message says which. Nothing is
        imported then (files that verified stay in the download cache, so a retry fetches
        only the rest).
    """
    now = today or _dt.datetime.now(tz=_dt.UTC).date()
    hi = _day_ms(now) - 1 if end is None else end
    todo = plan(
        [ds.symbol], [ds.interval], start=start, end=hi, market=ds.market, today=now, table=ds.table
    )
    if not todo:
        when = "the current month" if ds.table == FUNDING else "today"
        raise DataError(
            f"Binance Vision has no file for {fmt_ms(start)} to {fmt_ms(hi)} UTC yet: it publishes"
            f" {ds.table} files for {when} only after {when} ends",
        )
    base = vision_url(base_url)
    try:
        report = fetch_files(
            todo,
            base=base,
            cache=store.downloads,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            progress=progress,
        )
    except RunError as err:
        raise DataError(err.message, hint=err.hint) from None
    if report.missing:
        names = ", ".join(url.rsplit("/", 1)[-1] for url in report.missing[:3])
        more = f" and {len(report.missing) - 3} more" if len(report.missing) > 3 else ""
        raise DataError(
            f"{len(report.missing)} file(s) not found on {base}: {names}{more}"
            f" (first: {report.missing[0]})",
        )
    report.imported = import_paths(
        [], store=store, market=ds.market, files=report.files, progress=progress
    )
    return report
