"""Streaming features: one closed bar at a time, one compiled call per bar."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import DataError
from engine.features.catalogue import build_plan
from engine.features.kinds import warmup as _kind_warmup
from engine.features.plan_nb import step_plan_nb
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import polars as pl


class FeatureStream:
    """The live counterpart of :func:`engine.features.compute`.

    Feed closed bars in order with :meth:`update`; each call advances every feature on every
    timeframe by one compiled call (O(1) in the history) and returns the same row
    ``compute`` gives for that bar.

    Parameters
    ----------
    names
        Feature names; the whole catalogue when None.
    interval
        The base bar interval (``"5m"``).
    funding
        Known funding events (``funding_time``, ``funding_rate``); more can be added live with
        :meth:`add_funding`.

    Examples
    --------
    >>> fs = FeatureStream(["momentum_1"], interval="5m")
    >>> fs.update({"open_time": 0, "open": 1, "high": 2, "low": 1, "close": 2, "volume": 5})
    {'momentum_1': nan}
    >>> fs.update({"open_time": 300_000, "open": 2, "high": 3, "low": 2, "close": 3, "volume": 5})
    {'momentum_1': 1.0}
    """

    def __init__(
        self, names: list[str] | None = None, *, interval: str, funding: pl.DataFrame | None = None
    ) -> None:
        self._plan = build_plan(names, interval=interval)
        self.names: tuple[str, ...] = self._plan.names
        self.interval = interval
        self._base_ms = interval_ms(interval)
        self._ftimes: list[int] = []
        self._frates: list[float] = []
        if funding is not None:
            for ft, rate in zip(
                funding["funding_time"].to_list(), funding["funding_rate"].to_list(), strict=True
            ):
                self.add_funding(int(ft), float("nan") if rate is None else float(rate))
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen (funding events are kept)."""
        self._st, self._last = self._plan.new_state()
        self._fin = np.empty((2, 6))
        self._res = np.empty(5)
        self._out = np.full(len(self.names), np.nan)
        self._prev_time: int | None = None
        self._fidx = -1
        self.count = 0

    def add_funding(self, funding_time: int, rate: float) -> None:
        """Record a funding event (time aligned to the funding hour, ms UTC)."""
        if self._ftimes and funding_time <= self._ftimes[-1]:
            if funding_time == self._ftimes[-1]:
                self._frates[-1] = rate
                return
            i = bisect.bisect_left(self._ftimes, funding_time)
            if self._ftimes[i] == funding_time:
                self._frates[i] = rate
                return
            self._ftimes.insert(i, funding_time)
            self._frates.insert(i, rate)
            self._fidx = (
                -1 if self._prev_time is None else self._seek(self._prev_time + self._base_ms)
            )
            return
        self._ftimes.append(funding_time)
        self._frates.append(rate)

    def _seek(self, close_ms: int) -> int:
        return bisect.bisect_right(self._ftimes, close_ms) - 1

    def _funding_at(self, close_ms: int) -> float:
        i = self._fidx
        times = self._ftimes
        while i + 1 < len(times) and times[i + 1] <= close_ms:
            i += 1
        self._fidx = i
        return self._frates[i] if i >= 0 else math.nan

    def update_values(
        self, open_time: int, open_: float, high: float, low: float, close: float, volume: float
    ) -> np.ndarray:
        """:meth:`update` without the dict: returns the feature row as an array (reused)."""
        prev = self._prev_time
        if prev is not None and open_time <= prev:
            raise DataError(
                f"feature stream: bar {fmt_ms(open_time)} does not follow the last bar {fmt_ms(prev)}",
                hint="feed closed bars once each, in time order",
            )
        if open_time % self._base_ms:
            raise DataError(
                f"feature stream: open_time {open_time} is not a multiple of the {self.interval} interval",
                hint="pass the bar's open time in ms",
            )
        fr = self._funding_at(open_time + self._base_ms)
        p = self._plan
        step_plan_nb(
            p.ops,
            p.pf,
            p.tfs,
            p.sel,
            self._st,
            self._last,
            self._fin,
            self._res,
            self._out,
            open_time,
            open_,
            high,
            low,
            close,
            volume,
            fr,
        )
        self._prev_time = open_time
        self.count += 1
        return self._out

    def update(self, bar: Mapping[str, Any]) -> dict[str, float]:
        """Advance by one closed bar and return ``{name: value}`` for it.

        ``bar`` has ``open_time`` (ms) and ``open, high, low, close, volume``; a missing or
        None price counts as NaN (the bar is invalid and its row is all NaN).
        """
        try:
            t = int(bar["open_time"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"feature stream: bar has no integer open_time: {bar!r}",
                hint="pass {'open_time': ms, 'open': ..., 'high': ..., 'low': ..., "
                "'close': ..., 'volume': ...}",
            ) from None
        vals = []
        for key in ("open", "high", "low", "close", "volume"):
            x = bar.get(key)
            vals.append(math.nan if x is None else float(x))
        row = self.update_values(t, vals[0], vals[1], vals[2], vals[3], vals[4])
        return dict(zip(self.names, row.tolist(), strict=True))

    @property
    def warm(self) -> bool:
        """True once every indicator has passed its declared warm-up (funding_rate can still
        be NaN if no funding event is known)."""
        p = self._plan
        for i in range(p.ops.shape[0]):
            kind, _, off, _, p0, p1, p2, n_out = (int(x) for x in p.ops[i])
            need = max(_kind_warmup(kind, j, p0, p1, p2) for j in range(n_out))
            if self._st[off] < need + 1:
                return False
        return True
