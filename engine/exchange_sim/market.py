"""Replayed market data: bars from the store, cut into sub-steps, plus funding.

Each bar of the replay interval is played as ``K`` sub-steps. After sub-step ``k`` (1..K) the
bar's partial OHLCV is what had traded by ``open + k*interval/K``; sub-step ``K`` is the close.

How the partial bars are built (deterministic, no randomness):

- **From finer data** when the store has 1m bars covering the bar and they aggregate exactly
  to the bar's OHLC (checked per bar): then ``K = interval / 1m`` and the partial after ``k``
  sub-steps is the aggregate of the first ``k`` one-minute bars (volume scaled so the whole
  bar's volume is the stored one).
- **Otherwise by interpolation**: the price walks ``open -> low -> high -> close`` when
  ``close >= open`` and ``open -> high -> low -> close`` otherwise, at constant speed along
  the path; after a fraction ``f = k/K`` of the bar the partial high/low are the extremes
  visited so far, the partial close is the point reached, volume (and trades, quote and
  taker volumes where the store has them) are ``f`` times the bar's.

Fields the store does not have (quote volume, trade count, taker-buy volumes) are sent as 0.
The stored bar is the truth: the ``x: true`` frame and the REST klines of closed bars are
exactly the stored OHLCV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import DataError
from engine.timeutil import interval_ms as interval_to_ms

FINE_MS = 60_000
OPTIONAL = ("quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume")


@dataclass
class SymbolBars:
    """One symbol's bars (sorted by ``open_time``) and funding, as NumPy arrays."""

    symbol: str
    open_time: np.ndarray  # int64 ms
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # OPTIONAL columns present
    funding_time: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    funding_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # fine[i] is a (K, 5) array of o,h,l,c,v of bar i's sub-bars, or absent
    fine: dict[int, np.ndarray] = field(default_factory=dict)

    def index_of(self, open_ms: int) -> int:
        """Row of the bar opening at ``open_ms``, or -1."""
        i = int(np.searchsorted(self.open_time, open_ms))
        if i < len(self.open_time) and int(self.open_time[i]) == open_ms:
            return i
        return -1


def _path(o: float, h: float, l: float, c: float) -> tuple[list[float], list[float]]:  # noqa: E741
    verts = [o, l, h, c] if c >= o else [o, h, l, c]
    cum = [0.0]
    for a, b in zip(verts[:-1], verts[1:], strict=True):
        cum.append(cum[-1] + abs(b - a))
    return verts, cum


def _point(verts: list[float], cum: list[float], dist: float) -> float:
    for i in range(1, len(verts)):
        if dist <= cum[i]:
            seg = cum[i] - cum[i - 1]
            if seg == 0:
                return verts[i]
            return verts[i - 1] + (verts[i] - verts[i - 1]) * (dist - cum[i - 1]) / seg
    return verts[-1]


def interp_segment(o: float, h: float, l: float, c: float, f0: float, f1: float) -> tuple[float, float, float, float]:  # noqa: E741
    """(open, high, low, close) of the interpolated path between bar fractions f0 and f1."""
    verts, cum = _path(o, h, l, c)
    total = cum[-1]
    if total == 0.0:
        return o, o, o, o
    d0, d1 = f0 * total, f1 * total
    p0, p1 = _point(verts, cum, d0), _point(verts, cum, d1)
    inside = [verts[i] for i in range(1, len(verts) - 1) if d0 < cum[i] < d1]
    pts = [p0, p1, *inside]
    if f1 >= 1.0:
        p1 = c
        pts.append(c)
    return p0, max(pts), min(pts), p1


class MarketData:
    """All symbols' replay data on one interval grid, with ``substeps`` sub-steps per bar."""

    def __init__(self, bars: dict[str, SymbolBars], *, interval_ms: int, substeps: int = 4) -> None:
        if not bars:
            raise DataError("no symbols to replay", hint="pass --symbols BTCUSDT,ETHUSDT")
        if substeps < 1:
            raise ValueError("substeps must be >= 1")
        self.bars = bars
        self.interval_ms = interval_ms
        # tick size per symbol: interpolated prices are rounded to it (set by the Exchange)
        self.ticks: dict[str, float] = {}
        fine_k = interval_ms // FINE_MS if interval_ms % FINE_MS == 0 else 0
        has_fine = any(sb.fine for sb in bars.values())
        self.substeps = fine_k if (has_fine and fine_k > 1) else substeps
        if has_fine and fine_k > 1:
            for sb in bars.values():
                sb.fine = {i: a for i, a in sb.fine.items() if a.shape[0] == self.substeps}

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_frames(
        cls,
        candles: dict[str, Any],
        *,
        interval_ms: int,
        funding: dict[str, Any] | None = None,
        fine: dict[str, Any] | None = None,
        substeps: int = 4,
    ) -> MarketData:
        """Build from polars frames in the store's schema (``engine.data.load_candles``)."""
        out: dict[str, SymbolBars] = {}
        for sym, df in candles.items():
            if df.height == 0:
                raise DataError(f"{sym}: no candles to replay")
            ot = df["open_time"].to_numpy().astype(np.int64)
            if np.any(np.diff(ot) <= 0):
                raise DataError(f"{sym}: candles are not sorted by unique open_time")
            sb = SymbolBars(
                symbol=sym,
                open_time=ot,
                o=df["open"].to_numpy().astype(np.float64),
                h=df["high"].to_numpy().astype(np.float64),
                l=df["low"].to_numpy().astype(np.float64),
                c=df["close"].to_numpy().astype(np.float64),
                v=df["volume"].to_numpy().astype(np.float64),
                extra={k: df[k].to_numpy().astype(np.float64) for k in OPTIONAL if k in df.columns},
            )
            fdf = (funding or {}).get(sym)
            if fdf is not None and fdf.height:
                sb.funding_time = fdf["funding_time"].to_numpy().astype(np.int64)
                sb.funding_rate = fdf["funding_rate"].to_numpy().astype(np.float64)
            mdf = (fine or {}).get(sym)
            if mdf is not None and mdf.height and interval_ms % FINE_MS == 0 and interval_ms > FINE_MS:
                sb.fine = _fine_blocks(sb, mdf, interval_ms)
            out[sym] = sb
        return cls(out, interval_ms=interval_ms, substeps=substeps)

    @classmethod
    def load(
        cls,
        symbols: list[str],
        *,
        interval: str,
        start_ms: int,
        end_ms: int | None,
        store: Any = None,
        substeps: int = 4,
        fine: bool = True,
    ) -> tuple[MarketData, list[str]]:
        """Load from the data store; return the data and notices to print (e.g. no funding)."""
        from engine.data import load_candles, load_funding  # lazy: engine.data loads polars

        ims = interval_to_ms(interval)
        notices: list[str] = []
        candles, funding, fine_frames = {}, {}, {}
        for sym in symbols:
            candles[sym] = load_candles(sym, interval, end=end_ms, store=store)
            last = int(candles[sym]["open_time"][-1])
            if last < start_ms:
                raise DataError(
                    f"{sym} {interval}: the store ends at bar {last} before --start {start_ms}",
                    hint="choose an earlier --start or download more data with engine data download",
                )
            try:
                funding[sym] = load_funding(sym, end=end_ms, store=store)
            except DataError:
                notices.append(f"{sym}: no funding rates in the store for the replay; no funding is paid")
            if fine and ims > FINE_MS:
                try:
                    fine_frames[sym] = load_candles(sym, "1m", start=start_ms, end=end_ms, store=store)
                except DataError:
                    pass
        md = cls.from_frames(candles, interval_ms=ims, funding=funding, fine=fine_frames, substeps=substeps)
        n_fine = sum(len(sb.fine) for sb in md.bars.values())
        notices.append(
            f"partial bars: {n_fine} bars from 1m data, the rest interpolated; {md.substeps} updates per bar"
        )
        return md, notices

    # ---------------------------------------------------------------- queries
    def partial(self, sym: str, i: int, k: int) -> tuple[float, float, float, float, float, float]:
        """(o, h, l, c, v, fraction) of bar ``i`` after ``k`` of K sub-steps."""
        sb = self.bars[sym]
        K = self.substeps
        o = float(sb.o[i])
        if k >= K:
            return o, float(sb.h[i]), float(sb.l[i]), float(sb.c[i]), float(sb.v[i]), 1.0
        if k <= 0:
            return o, o, o, o, 0.0, 0.0
        f = k / K
        blk = sb.fine.get(i)
        if blk is not None:
            tot = float(blk[:, 4].sum())
            vol = float(blk[:k, 4].sum()) * (float(sb.v[i]) / tot if tot > 0 else 0.0)
            return o, float(blk[:k, 1].max()), float(blk[:k, 2].min()), float(blk[k - 1, 3]), vol, f
        _, hh, ll, cc = interp_segment(o, float(sb.h[i]), float(sb.l[i]), float(sb.c[i]), 0.0, f)
        hh, ll, cc = self._tick(sym, hh), self._tick(sym, ll), self._tick(sym, cc)
        return o, hh, ll, cc, float(sb.v[i]) * f, f

    def segment(self, sym: str, i: int, k: int) -> tuple[float, float, float, float]:
        """(open, high, low, close) of the prices traded during sub-step ``k`` of bar ``i``.

        Sub-step 1 opens at the bar's open, so a gap through a resting order's price is seen.
        """
        sb = self.bars[sym]
        K = self.substeps
        blk = sb.fine.get(i)
        if blk is not None:
            seg = blk[k - 1]
            return float(seg[0]), float(seg[1]), float(seg[2]), float(seg[3])
        so, sh, sl, sc = interp_segment(
            float(sb.o[i]), float(sb.h[i]), float(sb.l[i]), float(sb.c[i]), (k - 1) / K, k / K
        )
        if k < K:
            sc = self._tick(sym, sc)
        if k > 1:
            so = self._tick(sym, so)
        return so, self._tick(sym, sh), self._tick(sym, sl), sc

    def _tick(self, sym: str, price: float) -> float:
        """An interpolated price on the symbol's tick grid (traded prices always are)."""
        tick = self.ticks.get(sym)
        if not tick:
            return price
        return round(round(price / tick) * tick, 10)


def _fine_blocks(sb: SymbolBars, mdf: Any, interval_ms: int) -> dict[int, np.ndarray]:
    k = interval_ms // FINE_MS
    mt = mdf["open_time"].to_numpy().astype(np.int64)
    cols = np.column_stack([mdf[c].to_numpy().astype(np.float64) for c in ("open", "high", "low", "close", "volume")])
    blocks: dict[int, np.ndarray] = {}
    starts = np.searchsorted(mt, sb.open_time)
    for i, s in enumerate(starts):
        if s + k > len(mt) or int(mt[s]) != int(sb.open_time[i]) or int(mt[s + k - 1]) != int(sb.open_time[i]) + (k - 1) * FINE_MS:
            continue
        blk = cols[s : s + k]
        ok = (
            np.isclose(blk[0, 0], sb.o[i], rtol=1e-12, atol=0)
            and np.isclose(blk[:, 1].max(), sb.h[i], rtol=1e-12, atol=0)
            and np.isclose(blk[:, 2].min(), sb.l[i], rtol=1e-12, atol=0)
            and np.isclose(blk[-1, 3], sb.c[i], rtol=1e-12, atol=0)
        )
        if ok:
            blocks[i] = blk
    return blocks
