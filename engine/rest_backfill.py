"""Backfill klines through the REST API of any Binance-compatible USD-M server, with ccxt.

``engine data download --source rest --rest-url URL`` calls :func:`backfill_klines`. It pages
``GET /fapi/v1/klines`` 1500 bars at a time (weight 10 each) from ``start`` to ``end``, keeps
only CLOSED bars (a bar whose close time the server's clock has not reached is left out),
stays within a share of the server's REQUEST_WEIGHT budget by reading
``X-MBX-USED-WEIGHT-1M`` after every call and waiting for the next window when the next call
would cross it, obeys ``Retry-After`` on 429/418, and retries 5xx answers with exponential
backoff. The rows (Binance's 12 kline columns) go through the store's validated import
(:func:`engine.data.import_paths`), so a failed run leaves the store as it was.
"""

from __future__ import annotations

import csv
import functools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import DataError, ExchangeError, UsageError
from engine.timeutil import interval_ms, parse_end, parse_time

PAGE = 1500
PAGE_WEIGHT = 10


class _Pacer:
    """Keeps the used request weight under ``budget`` per ``window_s`` of wall time."""

    def __init__(self, budget: int, window_s: float, sleep: Callable[[float], None]) -> None:
        self.budget = budget
        self.window_s = window_s
        self.sleep = sleep
        self.waited = 0.0

    def before(self, used: int, weight: int) -> None:
        if used + weight > self.budget:
            now = time.time()
            pause = (math.floor(now / self.window_s) + 1) * self.window_s - now + 0.05
            self.waited += pause
            self.sleep(pause)


def _call(ex: Any, fn: Callable[[], Any], *, sleep: Callable[[float], None], retries: int = 8) -> Any:
    import ccxt

    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return fn()
        except ccxt.DDoSProtection:  # 429 or 418: back off exactly as long as told
            headers = ex.last_response_headers or {}
            retry_after = float(headers.get("Retry-After") or headers.get("retry-after") or 1)
            sleep(retry_after)
        except (ccxt.NetworkError, ccxt.OperationFailed) as err:  # 5xx, timeouts
            if attempt == retries:
                raise ExchangeError(
                    f"klines download failed after {retries + 1} attempts: {type(err).__name__}",
                    hint="check the --rest-url server, then run the same command again (it resumes)",
                ) from None
            sleep(delay)
            delay = min(delay * 2, 30.0)
    raise ExchangeError("klines download kept being rate limited", hint="try again later")


def fetch_klines(
    url: str,
    symbol: str,
    interval: str,
    *,
    start_ms: int,
    end_ms: int | None = None,
    weight_share: float = 0.5,
    window_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] | None = None,
) -> list[list[Any]]:
    """All CLOSED klines of ``symbol``/``interval`` with open time in [start_ms, end_ms].

    Rows are Binance's 12 columns as the server sent them. ``weight_share`` of the server's
    REQUEST_WEIGHT limit is the budget this download may use per window.
    """
    from engine.exchange_sim.client import make_ccxt

    step = interval_ms(interval)
    ex = make_ccxt(url)
    info = _call(ex, lambda: ex.fapiPublicGetExchangeInfo(), sleep=sleep)
    symbols = {s["symbol"] for s in info.get("symbols", [])}
    if symbol not in symbols:
        raise UsageError(
            f"symbol {symbol!r} is not listed by {url}", hint=f"the server lists: {', '.join(sorted(symbols)) or 'none'}"
        )
    limit = next(
        (int(r["limit"]) for r in info.get("rateLimits", []) if r.get("rateLimitType") == "REQUEST_WEIGHT"), 2400
    )
    pacer = _Pacer(max(PAGE_WEIGHT, int(limit * weight_share)), window_s, sleep)
    now = int(_call(ex, lambda: ex.fapiPublicGetTime(), sleep=sleep)["serverTime"])
    last_closed_open = (now // step) * step - step  # the newest bar whose close has passed
    stop = last_closed_open if end_ms is None else min(end_ms, last_closed_open)
    rows: list[list[Any]] = []
    since = start_ms
    while since <= stop:
        used = int((ex.last_response_headers or {}).get("X-MBX-USED-WEIGHT-1M", 0))
        pacer.before(used, PAGE_WEIGHT)
        params = {"symbol": symbol, "interval": interval, "startTime": since, "endTime": stop, "limit": PAGE}
        page = _call(ex, functools.partial(ex.fapiPublicGetKlines, params), sleep=sleep)
        page = [r for r in page if int(r[0]) <= stop and int(r[6]) < now]
        if not page:
            break
        if rows and int(page[0][0]) <= int(rows[-1][0]):
            raise DataError(f"{url}: klines went backwards at {page[0][0]} for {symbol} {interval}")
        rows.extend(page)
        since = int(page[-1][0]) + step
        if progress is not None:
            progress(len(rows))
    return rows


def backfill_klines(
    symbols: list[str],
    intervals: list[str],
    *,
    start: str | int,
    end: str | int | None,
    url: str,
    store: str | Path | None = None,
    weight_share: float = 0.5,
    window_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str, int], None] | None = None,
) -> Any:
    """Fetch klines for each symbol and interval from ``url`` and import them into the store.

    Returns the :class:`engine.data.ImportReport` (None when nothing was fetched).
    """
    from engine.data import import_paths

    start_ms = parse_time(start, name="--start")
    end_ms = parse_end(end, name="--end")
    assert start_ms is not None
    if end_ms is not None and end_ms < start_ms:
        raise UsageError(f"--end {end} is before --start {start}", hint="give an --end on or after --start")
    with tempfile.TemporaryDirectory(prefix="rest-backfill-") as tmp:
        files = []
        for symbol in symbols:
            for interval in intervals:
                rows = fetch_klines(
                    url, symbol, interval, start_ms=start_ms, end_ms=end_ms, weight_share=weight_share,
                    window_s=window_s, sleep=sleep,
                    progress=functools.partial(_report, progress, f"{symbol} {interval}") if progress else None,
                )
                if not rows:
                    continue
                path = Path(tmp) / f"{symbol}-{interval}-rest.csv"
                # A server that does not know quote volume, trade count and taker volumes (the
                # simulator replaying a 6-column store) sends them as 0: keep them out of the
                # store rather than record zeros as data.
                extras = all(float(r[7]) == 0 and int(r[8]) == 0 and float(r[9]) == 0 for r in rows)
                header = ["open_time", "open", "high", "low", "close", "volume"]
                if not extras:
                    header += ["close_time", "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
                with path.open("w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(header)
                    w.writerows(r[: len(header)] for r in rows)
                files.append((path, symbol, interval))
        if not files:
            return None
        report = None
        for path, symbol, interval in files:
            r = import_paths([path], store=store, market="usdm", symbol=symbol, interval=interval)
            report = r if report is None else _merge(report, r)
        return report


def _report(progress: Callable[[str, int], None], name: str, n: int) -> None:
    progress(name, n)


def _merge(a: Any, b: Any) -> Any:
    a.files.extend(b.files)
    a.skipped.extend(b.skipped)
    a.series.update(b.series)
    return a


def download_rest_cmd(
    symbols: list[str], intervals: list[str], *, start: str, end: str | None, market: str, url: str, store: str | None
) -> None:
    """Body of ``engine data download --source rest`` (progress and the import summary)."""
    from engine.cli.common import console, err_console

    if market != "usdm":
        raise UsageError(f"--source rest: market {market!r} is not supported", hint="use --market usdm")
    status = err_console.status("fetching klines")
    with status:
        report = backfill_klines(
            symbols, intervals, start=start, end=end, url=url, store=store,
            progress=lambda name, n: status.update(f"fetching klines: {name}: {n} bars"),
        )
    if report is None:
        console.print("no closed klines in that span on the server")
        return
    for ds, change in sorted(report.series.items(), key=lambda kv: str(kv[0])):
        console.print(
            f"{ds.symbol} {ds.interval}: {change.rows_before} -> {change.rows_after} rows "
            f"({change.months_written} month file(s) written)",
            highlight=False,
        )
