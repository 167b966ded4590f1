"""Table names, canonical column schemas and the dataset key of the market-data store.

The store holds three tables, each Hive-partitioned by month:

- ``klines``: ``open_time`` (Int64, ms UTC, bar open) and Float64 ``open, high, low, close,
  volume``; where the source had them also ``quote_volume`` (Float64), ``trades`` (Int64),
  ``taker_buy_volume`` and ``taker_buy_quote_volume`` (Float64).
- ``funding``: ``funding_time`` (Int64 ms, on the funding hour) and ``funding_rate`` (Float64).
- ``markprice``: ``open_time`` and Float64 ``open, high, low, close``.

This module imports nothing heavy so that the CLI can use it at parse time.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from engine.errors import UsageError
from engine.timeutil import INTERVALS

KLINES = "klines"
FUNDING = "funding"
MARKPRICE = "markprice"
TABLES = (KLINES, FUNDING, MARKPRICE)

MARKETS = ("usdm", "spot")

PRICE_COLUMNS = ("open", "high", "low", "close")
KLINE_CORE = ("open_time", *PRICE_COLUMNS, "volume")
KLINE_EXTRAS = ("quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume")
FUNDING_COLUMNS = ("funding_time", "funding_rate")
MARK_COLUMNS = ("open_time", *PRICE_COLUMNS)

# Column -> dtype name ("i64" or "f64"); polars types are built from these where needed.
COLUMN_TYPES: dict[str, str] = {
    "open_time": "i64",
    "open": "f64",
    "high": "f64",
    "low": "f64",
    "close": "f64",
    "volume": "f64",
    "quote_volume": "f64",
    "trades": "i64",
    "taker_buy_volume": "f64",
    "taker_buy_quote_volume": "f64",
    "funding_time": "i64",
    "funding_rate": "f64",
}

TIME_COLUMN = {KLINES: "open_time", FUNDING: "funding_time", MARKPRICE: "open_time"}

# Earliest plausible exchange time (2010-01-01 UTC, ms): anything smaller is not ms/us.
MIN_PLAUSIBLE_MS = 1_262_304_000_000
# open_time values at or above this are microseconds (1e14 ms would be the year 5138).
MICROS_THRESHOLD = 100_000_000_000_000

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


class Dataset(NamedTuple):
    """One series in the store: a table plus its partition keys (interval '' for funding)."""

    table: str
    market: str
    symbol: str
    interval: str

    def label(self) -> str:
        """Human-readable name, e.g. ``usdm BTCUSDT 5m klines``."""
        parts = [self.market, self.symbol]
        if self.interval:
            parts.append(self.interval)
        parts.append(self.table)
        return " ".join(parts)

    def columns(self) -> tuple[str, ...]:
        """The table's required columns."""
        return {KLINES: KLINE_CORE, FUNDING: FUNDING_COLUMNS, MARKPRICE: MARK_COLUMNS}[self.table]


def check_symbol(symbol: str, *, where: str = "--symbol") -> str:
    """Upper-case and validate a Binance symbol such as ``BTCUSDT``."""
    sym = symbol.strip().upper()
    if not _SYMBOL_RE.match(sym):
        raise UsageError(
            f"{where}: {symbol!r} is not a Binance symbol",
            hint="use the exchange symbol without separators, e.g. BTCUSDT",
        )
    return sym


def check_market(market: str, *, where: str = "--market") -> str:
    """Validate a market name (``usdm`` or ``spot``)."""
    m = market.strip().lower()
    if m not in MARKETS:
        raise UsageError(
            f"{where}: unknown market {market!r}", hint=f"use one of: {', '.join(MARKETS)}"
        )
    return m


def check_interval(interval: str, *, where: str = "--interval") -> str:
    """Validate a Binance kline interval name such as ``5m``."""
    if interval not in INTERVALS:
        raise UsageError(
            f"{where}: unknown interval {interval!r}",
            hint=f"use one of Binance's intervals: {', '.join(INTERVALS)}",
        )
    return interval
