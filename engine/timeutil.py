"""Time helpers. All timestamps are UTC integers in milliseconds since the epoch.

This module is the only place that parses user-facing dates and interval names.
"""

from __future__ import annotations

import datetime as _dt
import re

from engine.errors import UsageError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

_UNIT_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}

# Binance kline intervals (1M, a calendar month, has no fixed length and is not supported
# as a bar interval for the engine's store).
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")

_INTERVAL_RE = re.compile(r"^(\d+)([mhdw])$")


def interval_ms(interval: str) -> int:
    """Length of a Binance interval name in milliseconds.

    >>> interval_ms("5m")
    300000
    """
    if interval not in INTERVALS:
        raise UsageError(
            f"unknown interval {interval!r}",
            hint=f"use one of Binance's intervals: {', '.join(INTERVALS)}",
        )
    m = _INTERVAL_RE.match(interval)
    assert m is not None
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_time(value: int | str | _dt.date | _dt.datetime | None, *, name: str = "time") -> int | None:
    """Parse a user-facing time into UTC milliseconds.

    Accepts integer milliseconds, an ISO date (``2024-01-01``), an ISO datetime
    (``2024-01-01T12:00``, ``2024-01-01 12:00:00Z``) or a date/datetime object. Naive
    datetimes are taken as UTC.

    >>> parse_time("2023-01-01")
    1672531200000
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"{name}: expected a date or milliseconds, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, _dt.datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
        return int(dt.timestamp() * 1000)
    if isinstance(value, _dt.date):
        return int(_dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC).timestamp() * 1000)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        dt = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{name}: cannot read {value!r} as a date",
            hint="use an ISO date such as 2024-01-31, a datetime such as 2024-01-31T12:00, or ms since the epoch",
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.UTC)
    return int(dt.timestamp() * 1000)


def fmt_ms(ms: int | None) -> str:
    """Format UTC milliseconds as ``YYYY-MM-DD HH:MM`` (UTC)."""
    if ms is None:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M")


def month_of(ms: int) -> str:
    """``YYYY-MM`` of a UTC millisecond timestamp."""
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m")


def parse_end(value: int | str | _dt.date | _dt.datetime | None, *, name: str = "end") -> int | None:
    """Parse an inclusive end time into UTC milliseconds.

    A date alone (``2024-05-14``) means the whole of that day: the result is the last
    millisecond of the day, so every bar that opens on it is included. Anything more precise
    is taken as given.

    >>> parse_end("2023-01-01")
    1672617599999
    """
    if value is None:
        return None
    is_date_only = (isinstance(value, _dt.date) and not isinstance(value, _dt.datetime)) or (
        isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()) is not None
    )
    ms = parse_time(value, name=name)
    assert ms is not None
    return ms + DAY_MS - 1 if is_date_only else ms
