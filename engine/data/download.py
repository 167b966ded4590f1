"""``engine data download``: fetch Binance Vision kline files, verify them, import them.

URL layout (base ``https://data.binance.vision``, or ``--vision-url`` / ``ENGINE_VISION_URL``)::

    data/{futures/um|spot}/monthly/klines/{SYM}/{INT}/{SYM}-{INT}-{YYYY-MM}.zip
    data/{futures/um|spot}/daily/klines/{SYM}/{INT}/{SYM}-{INT}-{YYYY-MM-DD}.zip
    ... each with a ``.CHECKSUM`` beside it ("<sha256>  <file name>")

Whole months before the current one come as monthly files; the current month as daily
files up to yesterday. The previous month falls back to daily files while its monthly file
is not yet published. Files land in ``<store>/_downloads/`` under the same path as on the
site, first as ``.part`` and renamed once complete; a file whose checksum verified is never
fetched again, so a re-run after an interruption fetches only the rest. Nothing is
imported until every file is fetched and verified; then the files are imported together
(see :mod:`engine.data.importer`). Transient failures (5xx, 429, dropped connections,
timeouts) are retried with exponential backoff (tenacity).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
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
from engine.data.schema import check_interval, check_market, check_symbol
from engine.data.store import Store
from engine.errors import DataError, RunError, UsageError
from engine.timeutil import fmt_ms, parse_end, parse_time

DEFAULT_VISION_URL = "https://data.binance.vision"
VISION_ENV = "ENGINE_VISION_URL"
_MARKET_PATH = {"usdm": "futures/um", "spot": "spot"}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """One Vision file: its path below the base URL and what it holds."""

    path: str
    market: str
    symbol: str
    interval: str
    period: str  # YYYY-MM (monthly) or YYYY-MM-DD (daily)

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


class _NotFound(Exception):
    pass


class _Transient(Exception):
    """A failure worth retrying (5xx, 429, dropped connection, short body, timeout)."""


def vision_url(override: str | None = None) -> str:
    """The Vision base URL: option, then ``ENGINE_VISION_URL``, then Binance's site."""
    url = override or os.environ.get(VISION_ENV) or DEFAULT_VISION_URL
    return url.rstrip("/")


def _remote(market: str, freq: str, symbol: str, interval: str, period: str) -> RemoteFile:
    name = f"{symbol}-{interval}-{period}.zip"
    path = f"data/{_MARKET_PATH[market]}/{freq}/klines/{symbol}/{interval}/{name}"
    return RemoteFile(path, market, symbol, interval, period)


def _month_add(y: int, m: int, k: int) -> tuple[int, int]:
    n = y * 12 + (m - 1) + k
    return n // 12, n % 12 + 1


def plan(
    symbols: list[str],
    intervals: list[str],
    *,
    start: int,
    end: int,
    market: str,
    today: _dt.date,
) -> list[tuple[RemoteFile, list[RemoteFile]]]:
    """Files to fetch: (file, fallback daily files if it is missing) for each piece.

    ``start``/``end`` are inclusive UTC ms; nothing at or after ``today`` is requested.
    """
    first = _dt.datetime.fromtimestamp(start / 1000, tz=_dt.UTC).date()
    last = min(
        _dt.datetime.fromtimestamp(end / 1000, tz=_dt.UTC).date(), today - _dt.timedelta(days=1)
    )
    out: list[tuple[RemoteFile, list[RemoteFile]]] = []
    if last < first:
        return out
    prev_month = _month_add(today.year, today.month, -1)
    for sym in symbols:
        for iv in intervals:
            y, m = first.year, first.month
            while (y, m) <= (last.year, last.month):
                lo = max(first, _dt.date(y, m, 1))
                ny, nm = _month_add(y, m, 1)
                hi = min(last, _dt.date(ny, nm, 1) - _dt.timedelta(days=1))
                days = [
                    _remote(market, "daily", sym, iv, (lo + _dt.timedelta(days=k)).isoformat())
                    for k in range((hi - lo).days + 1)
                ]
                if (y, m) == (today.year, today.month):
                    out.extend((d, []) for d in days)
                else:
                    fallback = days if (y, m) == prev_month else []
                    out.append((_remote(market, "monthly", sym, iv, f"{y:04d}-{m:02d}"), fallback))
                y, m = ny, nm
    return out


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


def download(
    symbols: list[str],
    intervals: list[str],
    *,
    start: int | str,
    end: int | str | None = None,
    market: str = "usdm",
    store: str | os.PathLike[str] | Store | None = None,
    base_url: str | None = None,
    today: _dt.date | None = None,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 0.5,
    progress: Callable[[int, int, str], None] | None = None,
) -> DownloadReport:
    """Download Vision kline files for the symbols and intervals over [start, end], then import.

    Parameters
    ----------
    symbols, intervals
        E.g. ``["BTCUSDT", "ETHUSDT"]`` and ``["5m"]``.
    start, end
        Inclusive; ms or ISO dates (a date-only end means the whole day). ``end`` defaults
        to yesterday (UTC).
    market
        ``"usdm"`` (futures/um) or ``"spot"``.
    base_url
        Vision base URL (default ``$ENGINE_VISION_URL`` or https://data.binance.vision).
    today
        The current UTC date (default: the system clock); files from today on do not exist.
    progress
        Called as ``progress(done, total, file_name)`` after each file.

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
    ivs = [check_interval(i) for i in intervals]
    mk = check_market(market)
    if not syms or not ivs:
        raise UsageError("give at least one --symbol and one --interval")
    now = today or _dt.datetime.now(tz=_dt.UTC).date()
    lo = parse_time(start, name="--start")
    assert lo is not None
    hi = parse_end(end, name="--end")
    if hi is None:
        hi = int(_dt.datetime(now.year, now.month, now.day, tzinfo=_dt.UTC).timestamp() * 1000) - 1
    if lo >= int(_dt.datetime(now.year, now.month, now.day, tzinfo=_dt.UTC).timestamp() * 1000):
        raise UsageError(
            f"--start {fmt_ms(lo)} is today or later; Binance Vision publishes a day's file after it ends",
            hint=f"use a start before {now.isoformat()}",
        )
    if lo > hi:
        raise UsageError(f"--start {fmt_ms(lo)} is after --end {fmt_ms(hi)}", hint="swap them")
    st = store if isinstance(store, Store) else Store(store)
    base = vision_url(base_url)
    cache = st.downloads
    todo = plan(syms, ivs, start=lo, end=hi, market=mk, today=now)
    report = DownloadReport()
    files: list[Path] = []
    total = len(todo)
    opts = {"timeout": timeout, "retries": retries, "backoff": backoff}
    for k, (rf, fallback) in enumerate(todo, start=1):
        try:
            path, fetched = _fetch_one(rf, base, cache, **opts)  # type: ignore[arg-type]
            (report.fetched if fetched else report.cached).append(path)
            files.append(path)
        except _NotFound:
            if not fallback:
                report.missing.append(f"{base}/{rf.path}")
            for day in fallback:
                try:
                    path, fetched = _fetch_one(day, base, cache, **opts)  # type: ignore[arg-type]
                    (report.fetched if fetched else report.cached).append(path)
                    files.append(path)
                except _NotFound:
                    report.missing.append(f"{base}/{day.path}")
        if progress is not None:
            progress(k, total, rf.name)
    if files:
        report.imported = import_paths([], store=st, market=mk, files=files)
    return report
