"""Exchange rules per symbol: filters from exchangeInfo and Binance's leverage brackets.

The engine ships two snapshots in ``engine/resources``:

- ``exchange_info.json``: a ``GET /fapi/v1/exchangeInfo`` answer for BTCUSDT and ETHUSDT
  (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL, PERCENT_PRICE, precisions,
  liquidation fee).
- ``leverage_brackets.json``: a ``GET /fapi/v1/leverageBracket`` answer for the same symbols
  (bracket, initialLeverage, notionalCap, notionalFloor, maintMarginRatio, cum).

Maintenance margin of a position with notional ``N`` in bracket ``b`` is
``N * maintMarginRatio[b] - cum[b]``; ``cum`` makes the function continuous at the bracket
edges, and :func:`load_specs` checks that it does.

Example
-------
>>> from engine.sim.specs import load_specs
>>> spec = load_specs(["BTCUSDT"])[0]
>>> spec.tick_size, spec.step_size, spec.min_notional
(0.1, 0.001, 100.0)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.errors import ConfigError, DataError

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
EXCHANGE_INFO = RESOURCES / "exchange_info.json"
LEVERAGE_BRACKETS = RESOURCES / "leverage_brackets.json"


@dataclass(frozen=True, eq=False)
class SymbolSpec:
    """The trading rules of one symbol.

    Bracket arrays are float64 and sorted by bracket number; ``bracket_floor[i]`` ..
    ``bracket_cap[i]`` is the notional range (USDT) of bracket ``i``.
    """

    symbol: str
    tick_size: float
    step_size: float
    min_qty: float
    max_qty: float
    market_max_qty: float
    min_notional: float
    min_price: float
    max_price: float
    price_precision: int
    qty_precision: int
    liquidation_fee: float
    bracket_floor: np.ndarray
    bracket_cap: np.ndarray
    bracket_mmr: np.ndarray
    bracket_cum: np.ndarray
    bracket_leverage: np.ndarray

    def maint_margin(self, notional: float) -> float:
        """Maintenance margin (USDT) of a position of ``notional`` USDT (Binance's formula)."""
        n = abs(notional)
        i = int(np.searchsorted(self.bracket_cap, n, side="left"))
        i = min(i, len(self.bracket_cap) - 1)
        return float(n * self.bracket_mmr[i] - self.bracket_cum[i])

    def max_notional(self, leverage: float) -> float:
        """Largest position notional Binance allows at ``leverage`` (0 if the leverage is too high)."""
        ok = self.bracket_leverage >= leverage
        return float(self.bracket_cap[ok].max()) if ok.any() else 0.0


class SpecArrays(NamedTuple):
    """All symbols' rules as arrays, the form the numba kernels take (index = symbol column)."""

    tick: np.ndarray  # float64[S]
    step: np.ndarray  # float64[S]
    min_qty: np.ndarray  # float64[S]
    max_qty: np.ndarray  # float64[S] LOT_SIZE maxQty (limit orders)
    market_max_qty: np.ndarray  # float64[S] MARKET_LOT_SIZE maxQty
    min_notional: np.ndarray  # float64[S]
    liq_fee: np.ndarray  # float64[S] liquidation clearance fee rate
    br_floor: np.ndarray  # float64[S, B] (padded with +inf)
    br_cap: np.ndarray  # float64[S, B] (padded with +inf)
    br_mmr: np.ndarray  # float64[S, B]
    br_cum: np.ndarray  # float64[S, B]
    br_lev: np.ndarray  # float64[S, B] (padded with 0)
    n_br: np.ndarray  # int64[S]


def _num(value: object, *, where: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a number, got {value!r}") from None


def _decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


@lru_cache(maxsize=4)
def _read(path: str) -> object:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{p}: file not found", hint="reinstall the engine package (pip install -e .)"
        ) from None
    except json.JSONDecodeError as err:
        raise DataError(f"{p}:{err.lineno}: invalid JSON ({err.msg})") from None


def _bracket_arrays(symbol: str, data: object, source: str) -> dict[str, np.ndarray]:
    """The bracket arrays of ``symbol`` from a leverageBracket answer (a list of per-symbol
    objects); ``source`` names the document in messages."""
    rows = None
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and item.get("symbol") == symbol:
            rows = item.get("brackets")
    if not rows:
        raise DataError(f"{source}: no leverage brackets for {symbol}")
    rows = sorted(rows, key=lambda r: int(r["bracket"]))
    where = f"{source}: {symbol}"
    out = {
        "floor": np.array([_num(r["notionalFloor"], where=where) for r in rows]),
        "cap": np.array([_num(r["notionalCap"], where=where) for r in rows]),
        "mmr": np.array([_num(r["maintMarginRatio"], where=where) for r in rows]),
        "cum": np.array([_num(r["cum"], where=where) for r in rows]),
        "lev": np.array([_num(r["initialLeverage"], where=where) for r in rows]),
    }
    # Brackets must tile [0, cap_max) and the maintenance margin must be continuous.
    if out["floor"][0] != 0 or np.any(out["floor"][1:] != out["cap"][:-1]):
        raise DataError(
            f"{where}: brackets do not tile the notional range",
            hint="check notionalFloor/notionalCap",
        )
    edge = out["floor"][1:]
    left = edge * out["mmr"][:-1] - out["cum"][:-1]
    right = edge * out["mmr"][1:] - out["cum"][1:]
    if np.any(np.abs(left - right) > 1e-6 * np.maximum(1.0, edge)):
        raise DataError(f"{where}: 'cum' is inconsistent with maintMarginRatio at a bracket edge")
    return out


def _spec(
    symbol: str, entry: dict, brackets: object, *, info_source: str, br_source: str
) -> SymbolSpec:
    """One symbol's spec from its exchangeInfo ``entry`` and a leverageBracket answer (a list
    of per-symbol objects); the sources name the documents in messages."""
    filters = {f["filterType"]: f for f in entry.get("filters", [])}
    where = f"{info_source}: {symbol}"
    try:
        pf, lot, mlot, mn = (
            filters[k] for k in ("PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL")
        )
    except KeyError as err:
        raise DataError(f"{where}: missing filter {err.args[0]}") from None
    br = _bracket_arrays(symbol, brackets, br_source)
    tick = _num(pf["tickSize"], where=where)
    step = _num(lot["stepSize"], where=where)
    spec = SymbolSpec(
        symbol=symbol,
        tick_size=tick,
        step_size=step,
        min_qty=_num(lot["minQty"], where=where),
        max_qty=_num(lot["maxQty"], where=where),
        market_max_qty=_num(mlot["maxQty"], where=where),
        min_notional=_num(mn["notional"], where=where),
        min_price=_num(pf["minPrice"], where=where),
        max_price=_num(pf["maxPrice"], where=where),
        price_precision=int(entry["pricePrecision"]),
        qty_precision=int(entry["quantityPrecision"]),
        liquidation_fee=_num(entry.get("liquidationFee", "0.0125"), where=where),
        bracket_floor=br["floor"],
        bracket_cap=br["cap"],
        bracket_mmr=br["mmr"],
        bracket_cum=br["cum"],
        bracket_leverage=br["lev"],
    )
    if _decimals(step) > spec.qty_precision or _decimals(tick) > spec.price_precision:
        raise DataError(f"{where}: stepSize/tickSize finer than quantityPrecision/pricePrecision")
    return spec


def load_specs(
    symbols: list[str] | tuple[str, ...],
    *,
    exchange_info: str | Path | None = None,
    brackets: str | Path | None = None,
) -> list[SymbolSpec]:
    """Load the trading rules of ``symbols`` from the shipped (or given) snapshots.

    Raises
    ------
    ConfigError
        A symbol is not in the snapshot (the message lists the ones that are).
    """
    info_path = Path(exchange_info) if exchange_info else EXCHANGE_INFO
    br_path = Path(brackets) if brackets else LEVERAGE_BRACKETS
    info = _read(str(info_path))
    brackets_doc = _read(str(br_path))
    entries = {s["symbol"]: s for s in info.get("symbols", [])} if isinstance(info, dict) else {}
    specs = []
    for symbol in symbols:
        if symbol not in entries:
            raise ConfigError(
                f"symbol {symbol!r} is not in the exchangeInfo snapshot {info_path.name}",
                hint=f"use one of: {', '.join(sorted(entries))}",
            )
        entry = entries[symbol]
        key = (id(entry), id(brackets_doc))
        hit = _PARSED.get(key)
        if hit is None or hit[0] is not entry or hit[1] is not brackets_doc:
            spec = _spec(symbol, entry, brackets_doc,
                         info_source=str(info_path), br_source=str(br_path))
            if len(_PARSED) >= 256:  # documents read and dropped since: start over
                _PARSED.clear()
            hit = _PARSED[key] = (entry, brackets_doc, spec)
        specs.append(hit[2])
    return specs


#: each parsed spec by its exchangeInfo entry and brackets document, both kept with it (so
#: the ids stay theirs): while :func:`_read` answers the same documents a
#: symbol is parsed once (a sweep validates and plans every combination, each asking for
#: the same symbols); a new read parses again
_PARSED: dict[tuple[int, int], tuple[object, object, SymbolSpec]] = {}


def specs_from_documents(
    symbols: Sequence[str],
    exchange_info: object,
    leverage_brackets: object,
    *,
    source: str = "the venue",
) -> list[SymbolSpec]:
    """The trading rules of ``symbols`` from a venue's answers, already parsed, by the same
    parser as :func:`load_specs`.

    ``exchange_info`` is a ``GET /fapi/v1/exchangeInfo`` document; ``leverage_brackets`` is
    what ``GET /fapi/v1/leverageBracket`` answered: an array of per-symbol objects (asked
    without ``symbol``), one object (asked with ``symbol``), or a list of such answers.
    ``source`` names the venue in messages.

    Raises
    ------
    ConfigError
        A symbol the exchangeInfo does not list (the message lists the ones it does).
    DataError
        A document without a symbol's filters or brackets, or with inconsistent ones.

    Example
    -------
    >>> info = json.loads(EXCHANGE_INFO.read_text())
    >>> btc = json.loads(LEVERAGE_BRACKETS.read_text())[0]  # the one object ?symbol= answers
    >>> spec = specs_from_documents(["BTCUSDT"], info, btc)[0]
    >>> spec.tick_size, spec.max_notional(125)
    (0.1, 50000.0)
    """
    symbols_doc = exchange_info.get("symbols", []) if isinstance(exchange_info, dict) else []
    entries = {s["symbol"]: s for s in symbols_doc if isinstance(s, dict) and "symbol" in s}
    rows: list[object] = []
    for answer in leverage_brackets if isinstance(leverage_brackets, list) else [leverage_brackets]:
        rows.extend(answer if isinstance(answer, list) else [answer])
    specs = []
    for symbol in symbols:
        if symbol not in entries:
            raise ConfigError(
                f"symbol {symbol!r} is not in {source}'s exchangeInfo",
                hint=f"use one of: {', '.join(sorted(entries)) or 'none'}",
            )
        specs.append(_spec(symbol, entries[symbol], rows, info_source=f"{source} exchangeInfo",
                           br_source=f"{source} leverageBracket"))
    return specs


def spec_arrays(specs: list[SymbolSpec]) -> SpecArrays:
    """Pack specs into the arrays the kernels take (brackets padded to a common width)."""
    s = len(specs)
    b = max(len(sp.bracket_cap) for sp in specs)
    floor = np.full((s, b), np.inf)
    cap = np.full((s, b), np.inf)
    mmr = np.zeros((s, b))
    cum = np.zeros((s, b))
    lev = np.zeros((s, b))
    n_br = np.zeros(s, dtype=np.int64)
    for i, sp in enumerate(specs):
        k = len(sp.bracket_cap)
        floor[i, :k] = sp.bracket_floor
        cap[i, :k] = sp.bracket_cap
        mmr[i, :k] = sp.bracket_mmr
        cum[i, :k] = sp.bracket_cum
        lev[i, :k] = sp.bracket_leverage
        n_br[i] = k
    return SpecArrays(
        tick=np.array([sp.tick_size for sp in specs]),
        step=np.array([sp.step_size for sp in specs]),
        min_qty=np.array([sp.min_qty for sp in specs]),
        max_qty=np.array([sp.max_qty for sp in specs]),
        market_max_qty=np.array([sp.market_max_qty for sp in specs]),
        min_notional=np.array([sp.min_notional for sp in specs]),
        liq_fee=np.array([sp.liquidation_fee for sp in specs]),
        br_floor=floor,
        br_cap=cap,
        br_mmr=mmr,
        br_cum=cum,
        br_lev=lev,
        n_br=n_br,
    )
