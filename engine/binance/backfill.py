"""Backfill klines through the REST API of any Binance-compatible USD-M server, with ccxt.

``engine data download --source rest --rest-url URL`` calls :func:`backfill_klines`. It pages
``GET /fapi/v1/klines`` 1500 bars at a time (weight 10 each) from ``start`` to ``end`` with
the one :class:`engine.binance.klines.KlinePager`, keeps only CLOSED bars (a bar whose close
time the server's clock has not reached is left out), stays within a share of the server's
REQUEST_WEIGHT limit through the one :class:`engine.binance.budget.RequestBudget` (which reads
``X-MBX-USED-WEIGHT-1M`` from every answer, and halts on a 429/418 until its Retry-After),
and retries through the one
:class:`engine.binance.retry.RetryPolicy` (Retry-After on 429/418 obeyed, 5xx retried with
backoff). The rows (Binance's 12 kline columns) go through the store's validated import
(:func:`engine.data.import_paths`), so a failed run leaves the store as it was. Progress is
reported through :mod:`engine.progress` (``progress(task, bars so far, bars at most)``);
nothing is drawn here.
"""

from __future__ import annotations

import csv
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.binance.budget import RequestBudget, limits_from_rate_limits
from engine.binance.klines import KlinePager
from engine.binance.retry import RetryPolicy
from engine.binance.venue import make_ccxt
from engine.errors import UsageError
from engine.progress import Progress, step
from engine.timeutil import interval_ms, parse_end, parse_time

T = TypeVar("T")
KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)

# what Binance's exchangeInfo says, for a server whose exchangeInfo lists no rateLimits
DEFAULT_WEIGHT_LIMIT = {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                        "limit": 2400}


def backfill_retry(sleep: Callable[[float], Any] = time.sleep) -> RetryPolicy:
    """The backfill's retry budget: 9 attempts, backoff from 0.5 s up to 30 s."""
    return RetryPolicy(max_attempts=9, base_s=0.5, max_wait_s=30.0, sleep=sleep)


def budgeted(budget: RequestBudget, weight: int, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` waiting for ``budget`` before each attempt (sync)."""

    def call() -> T:
        with budget.use_sync(weight=weight):
            return fn()

    return call


def fetch_klines(
    url: str,
    symbol: str,
    interval: str,
    *,
    start_ms: int,
    end_ms: int | None = None,
    weight_share: float = 0.5,
    window_s: float = 60.0,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.time,
    retry: RetryPolicy | None = None,
    progress: Progress | None = None,
) -> list[list[Any]]:
    """All CLOSED klines of ``symbol``/``interval`` with open time in [start_ms, end_ms].

    Rows are Binance's 12 columns as the server sent them. ``weight_share`` of the server's
    REQUEST_WEIGHT limit is the budget this download may use per ``window_s``; ``sleep`` and
    ``clock`` pace it (and back off, unless ``retry`` is given).
    """
    retry = retry or backfill_retry(sleep)
    ex = make_ccxt(url)
    headers = functools.partial(getattr, ex, "last_response_headers")
    info = retry.run("exchangeInfo", ex.fapiPublicGetExchangeInfo, headers=headers)
    symbols = {s["symbol"] for s in info.get("symbols", [])}
    if symbol not in symbols:
        raise UsageError(
            f"symbol {symbol!r} is not listed by {url}",
            hint=f"the server lists: {', '.join(sorted(symbols)) or 'none'}",
        )
    limits = limits_from_rate_limits(info.get("rateLimits") or [DEFAULT_WEIGHT_LIMIT],
                                     windows={"weight_1m": window_s})
    # a page costing more than the share waits for a whole share (it never waits forever)
    budget = RequestBudget([x for x in limits if x.kind == "weight"], share=weight_share,
                           clock=clock, sleep=sleep)
    budget.attach(ex)
    budget.observe(ex.last_response_headers)
    now = int(retry.run("server time", budgeted(budget, 1, ex.fapiPublicGetTime),
                        headers=headers)["serverTime"])
    step_ms = interval_ms(interval)
    last_closed_open = (now // step_ms) * step_ms - step_ms  # the newest bar whose close passed
    stop = last_closed_open if end_ms is None else min(end_ms, last_closed_open)
    pager = KlinePager(start=start_ms, stop=stop, now=now, step=step_ms,
                       name=f"{url}: {symbol} {interval}")
    task = f"klines {symbol} {interval}"
    rows: list[list[Any]] = []
    step(progress, task, 0, pager.total)
    while not pager.done:
        fetch = functools.partial(ex.fapiPublicGetKlines, pager.params(symbol, interval))
        page = retry.run(task, budgeted(budget, pager.weight, fetch), headers=headers)
        rows.extend(list(r) for r in pager.take(page))
        step(progress, task, len(rows), pager.total)
    return rows


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    # A server that does not know quote volume, trade count and taker volumes (the simulator
    # replaying a 6-column store) sends them as 0: keep them out of the store rather than
    # record zeros as data.
    extras = all(float(r[7]) == 0 and int(r[8]) == 0 and float(r[9]) == 0 for r in rows)
    header = list(KLINE_COLUMNS[:6] if extras else KLINE_COLUMNS)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(r[: len(header)] for r in rows)


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
    sleep: Callable[[float], Any] = time.sleep,
    progress: Progress | None = None,
) -> Any:
    """Fetch klines for each symbol and interval from ``url`` and import them into the store.

    Returns the :class:`engine.data.ImportReport` (None when nothing was fetched).
    """
    from engine.data import import_paths  # polars: loaded only when importing

    start_ms = parse_time(start, name="--start")
    end_ms = parse_end(end, name="--end")
    assert start_ms is not None
    if end_ms is not None and end_ms < start_ms:
        raise UsageError(f"--end {end} is before --start {start}",
                         hint="give an --end on or after --start")
    with tempfile.TemporaryDirectory(prefix="rest-backfill-") as tmp:
        files = []
        for symbol in symbols:
            for interval in intervals:
                rows = fetch_klines(
                    url, symbol, interval, start_ms=start_ms, end_ms=end_ms,
                    weight_share=weight_share, window_s=window_s, sleep=sleep, progress=progress,
                )
                if rows:
                    path = Path(tmp) / f"{symbol}-{interval}-rest.csv"
                    _write_csv(path, rows)
                    files.append((path, symbol, interval))
        report = None
        for path, symbol, interval in files:
            r = import_paths([path], store=store, market="usdm", symbol=symbol, interval=interval)
            report = r if report is None else _merge(report, r)
        return report


def _merge(a: Any, b: Any) -> Any:
    a.files.extend(b.files)
    a.skipped.extend(b.skipped)
    a.series.update(b.series)
    return a
