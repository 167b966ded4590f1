"""What a data file's name and path say about it: table, market, symbol and interval.

Recognised names (``.zip``, ``.csv``, ``.csv.gz``, ``.parquet``, ``.feather``):

- Binance Vision and the usdm recordings: ``BTCUSDT-5m``, ``BTCUSDT-1h-2024-01``,
  ``BTCUSDT-1m-2024-01-15``, ``BTCUSDT-fundingRate``, ``BTCUSDT-fundingRate-2024-01``.
- freqtrade: ``BTC_USDT-5m`` (spot), ``BTC_USDT_USDT-5m-futures``, ``...-8h-mark``,
  ``...-8h-funding_rate``.
- Hive folders of this store: ``market=usdm/symbol=BTCUSDT/interval=5m/month=2024-01``.

Folders say the rest: a ``fundingRate`` or ``funding`` folder means funding rates, a
``markPriceKlines`` or ``markprice`` folder mark-price klines; ``spot`` means the spot market,
``um``/``usdm``/``futures``/``binance-usdm`` USD-M futures.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from engine.data.schema import FUNDING, KLINES, MARKPRICE, check_symbol
from engine.errors import DataError
from engine.timeutil import INTERVALS

DATA_SUFFIXES = (".csv.gz", ".csv", ".zip", ".parquet", ".feather")

_VISION_RE = re.compile(
    r"^(?P<symbol>[A-Za-z0-9]+)-(?P<kind>[0-9]+[A-Za-z]+|fundingRate)(?:-\d{4}-\d{2}(?:-\d{2})?)?$"
)
_FREQTRADE_RE = re.compile(
    r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_(?P<settle>[A-Za-z0-9]+))?"
    r"-(?P<interval>[0-9]+[A-Za-z]+)(?:-(?P<ctype>futures|mark|funding_rate|spot))?$"
)


class PathHints(NamedTuple):
    """What a path says (None where it says nothing)."""

    table: str | None
    market: str | None
    symbol: str | None
    interval: str | None


def data_suffix(path: Path) -> str | None:
    """The recognised data suffix of ``path`` (``.csv.gz``, ``.zip``, ...) or None."""
    name = path.name.lower()
    for suffix in DATA_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def _interval_token(token: str, path: Path) -> str:
    if token not in INTERVALS:
        raise DataError(
            f"{path}: unknown interval {token!r} in the file name",
            hint=f"Binance intervals are {', '.join(INTERVALS)}; rename the file or pass --interval",
        )
    return token


def path_hints(path: Path) -> PathHints:
    """Read table, market, symbol and interval from a file's name and folders.

    Raises DataError when the name carries an interval that Binance does not have, or names
    a market the engine does not support (coin-margined futures).
    """
    suffix = data_suffix(path) or path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    table: str | None = None
    market: str | None = None
    symbol: str | None = None
    interval: str | None = None

    dirs = [p.lower() for p in path.parent.parts]
    for i, part in enumerate(dirs):
        key, eq, value = part.partition("=")
        if eq:
            if key == "market":
                market = value
            elif key == "symbol":
                symbol = path.parent.parts[i].partition("=")[2].upper()
            elif key == "interval":
                interval = _interval_token(path.parent.parts[i].partition("=")[2], path)
            elif key == "table":
                table = value
            continue
        if part in ("fundingrate", "funding"):
            table = FUNDING
        elif part in ("markpriceklines", "markprice"):
            table = MARKPRICE
        elif part == "klines":
            table = table or KLINES
        elif part == "spot":
            market = "spot"
        elif part in ("um", "usdm", "binance-usdm"):
            market = "usdm"
        elif part == "futures":
            market = market or "usdm"
        elif part == "cm" and i > 0 and dirs[i - 1] == "futures":
            raise DataError(
                f"{path}: coin-margined futures (futures/cm) are not supported",
                hint="the engine stores USD-M futures (futures/um) and spot data",
            )

    m = _VISION_RE.match(stem)
    f = _FREQTRADE_RE.match(stem) if m is None else None
    if m is not None:
        symbol = m.group("symbol").upper()
        if m.group("kind") == "fundingRate":
            table = FUNDING
        else:
            interval = _interval_token(m.group("kind"), path)
    elif f is not None:
        symbol = (f.group("base") + f.group("quote")).upper()
        interval = _interval_token(f.group("interval"), path)
        ctype = f.group("ctype")
        if f.group("settle") or ctype in ("futures", "mark", "funding_rate"):
            market = "usdm"
        elif ctype == "spot":
            market = "spot"
        if ctype == "mark":
            table = MARKPRICE
        elif ctype == "funding_rate":
            table = FUNDING
    if symbol is not None:
        symbol = check_symbol(symbol, where=f"{path}: symbol in the path")
    return PathHints(table, market, symbol, interval)
