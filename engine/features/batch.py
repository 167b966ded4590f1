"""Batch features: :func:`compute` over a frame of candles."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import ConfigError, DataError
from engine.features.catalogue import Plan, build_plan
from engine.features.htf_nb import aggregate_batch_nb, forward_fill_nb
from engine.features.indicators_batch_nb import (
    atr_batch_nb,
    bbands_batch_nb,
    candle_batch_nb,
    dmi_atr_batch_nb,
    dmi_batch_nb,
    ema2_batch_nb,
    ema4_batch_nb,
    ema_batch_nb,
    funding_batch_nb,
    logret_batch_nb,
    macd_batch_nb,
    mom_batch_nb,
    obv_batch_nb,
    rsi2_batch_nb,
    rsi_batch_nb,
    sma_batch_nb,
)
from engine.features.kinds import (
    ATR,
    BBANDS,
    CANDLE,
    DMI,
    EMA,
    FUNDING,
    LOGRET,
    MACD,
    MOM,
    OBV,
    RAW_VOLUME,
    RSI,
    SMA,
    SRC_VOLUME,
)
from engine.features.plan_nb import check_times_nb, fold_plan_nb, scatter_nb, valid_mask_nb
from engine.timeutil import INTERVALS, fmt_ms, interval_ms

if TYPE_CHECKING:
    import polars as pl

CANDLE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")


def infer_interval(open_time: np.ndarray) -> str:
    """The base interval of a series of bar open times: its smallest positive step."""
    if open_time.shape[0] < 2:
        raise ConfigError(
            f"cannot infer the bar interval from {open_time.shape[0]} bar(s)",
            hint="pass interval= (for example interval='5m')",
        )
    step = int(np.min(np.diff(open_time)))
    for name in INTERVALS:
        if interval_ms(name) == step:
            return name
    raise DataError(
        f"candles: the smallest step between open times is {step} ms, which is not a Binance interval",
        hint="pass interval= explicitly, or check the candles' open_time column (ms since the epoch)",
    )


def candle_arrays(candles: pl.DataFrame, *, interval: str | None) -> tuple[str, list[np.ndarray]]:
    """Validate a candles frame and return its interval and (t, o, h, l, c, v) arrays."""
    import polars as pl

    if not isinstance(candles, pl.DataFrame):
        raise ConfigError(f"candles: expected a polars.DataFrame, got {type(candles).__name__}")
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(
            f"candles: missing column(s) {', '.join(missing)}; got {', '.join(candles.columns)}",
            hint="pass the frame returned by engine.data.load_candles",
        )
    t = np.ascontiguousarray(candles["open_time"].cast(pl.Int64).to_numpy(), dtype=np.int64)
    if candles["open_time"].null_count():
        raise DataError(
            "candles: open_time has nulls", hint="every bar needs its open time (ms UTC)"
        )
    arrays = [t]
    for col in CANDLE_COLUMNS[1:]:
        s = candles[col]
        if s.dtype != pl.Float64 or s.null_count():  # else to_numpy is a view, no copy
            s = s.cast(pl.Float64).fill_null(np.nan)
        arrays.append(np.ascontiguousarray(s.to_numpy(), dtype=np.float64))
    given = interval is not None
    i, on_grid = check_times_nb(t, interval_ms(interval) if interval is not None else 1)
    if i >= 0:
        raise DataError(
            f"candles: open_time must be strictly increasing; row {i} ({fmt_ms(int(t[i]))}) "
            f"follows row {i - 1} ({fmt_ms(int(t[i - 1]))})",
            hint="sort the candles by open_time and drop duplicates",
        )
    if interval is None:
        interval = infer_interval(t)
    step = interval_ms(interval)
    if not given:
        on_grid = check_times_nb(t, step)[1]
    if not on_grid:
        off = np.flatnonzero(t % step)
        if off.size:
            i = int(off[0])
            raise DataError(
                f"candles: row {i} opens at {int(t[i])} ms, not a multiple of the {interval} interval",
                hint=f"check that the candles are {interval} bars with open_time in ms",
            )
    return interval, arrays


def funding_asof(funding: pl.DataFrame | None, t: np.ndarray, base_ms: int) -> np.ndarray:
    """For each bar, the rate of the last funding event at or before its close (NaN if none)."""
    if funding is None:
        return np.full(t.shape[0], np.nan)
    for col in ("funding_time", "funding_rate"):
        if col not in funding.columns:
            raise DataError(
                f"funding: missing column {col!r}; got {', '.join(funding.columns)}",
                hint="pass the frame returned by engine.data.load_funding",
            )
    import polars as pl

    ft = funding["funding_time"].cast(pl.Int64).to_numpy()
    fr = funding["funding_rate"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    if ft.shape[0] > 1 and np.any(np.diff(ft) <= 0):
        raise DataError(
            "funding: funding_time must be strictly increasing",
            hint="sort the funding events and drop duplicates",
        )
    idx = np.searchsorted(ft, t + base_ms, side="right") - 1
    out = np.where(idx >= 0, fr[np.maximum(idx, 0)], np.nan)
    return np.ascontiguousarray(out, dtype=np.float64)


@dataclass
class _Block:
    """The batch path's working set: the result block and where each output goes."""

    plan: Plan
    result: np.ndarray  # [n_names + 1, n]: the last row takes outputs nobody asked for
    rows_of: dict[int, list[int]]  # output slot -> result rows that requested it
    valid: np.ndarray  # bool per base bar
    all_valid: bool
    rows: np.ndarray  # indices of the valid base bars (empty when all are valid)
    invalid: np.ndarray  # indices of the invalid base bars (empty when all are valid)
    base_in: list[np.ndarray]  # t (float), o, h, l, c, v, funding over the valid base bars
    # t, o, h, l, c, v of every base bar (the higher-timeframe bars are built from them)
    ohlcv: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    tf_bars: dict[int, tuple[list[np.ndarray], np.ndarray]]  # tf -> (bar arrays, visible at)

    @property
    def scratch(self) -> np.ndarray:
        return self.result[-1]


def compute_columns(
    plan: Plan,
    t: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    fr: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """All requested features, ``[n_names, n]``, by the specialised batch kernels (in
    ``out[:n_names]`` when given: float64 ``[n_names + 1, n]``, each row contiguous; its last
    row is scratch).

    Equal to :func:`compute_columns_fold` (proved by the tests): base indicators run over the
    valid bars, higher-timeframe ones over the bars :func:`engine.features.htf_nb.aggregate_batch_nb`
    builds, and HTF values are forward-filled to the base bar at which their bar completed.
    When every bar is valid, base indicators write straight into their rows of the result.
    The result is one block: numpy backs a block this large with huge pages, and fresh memory
    is most of the cost at this size (89 separate columns of 143,900 bars fault in 4 KiB
    pages, ~4x slower).
    """
    n = t.shape[0]
    n_names = plan.sel.shape[0]
    if out is None:
        out = np.empty((n_names + 1, n))
    elif out.shape != (n_names + 1, n) or out.dtype != np.float64 or out.strides[1] != 8:
        raise ValueError(
            f"out: float64 [{n_names + 1}, {n}] with contiguous rows expected, got "
            f"{out.dtype} {list(out.shape)} with strides {out.strides}"
        )
    valid = valid_mask_nb(o, h, lo, c, v)
    all_valid = bool(valid.all())
    rows_of: dict[int, list[int]] = {}
    for j, s in enumerate(plan.sel.tolist()):
        rows_of.setdefault(s, []).append(j)
    # fr may be empty when no funding feature is requested (then nothing reads it)
    base_in = [t.astype(np.float64), o, h, lo, c, v, fr]
    rows = np.empty(0, dtype=np.int64) if all_valid else np.flatnonzero(valid)
    if not all_valid:
        base_in = [a[rows] if a.shape[0] else a for a in base_in]
    blk = _Block(
        plan=plan,
        result=out,
        rows_of=rows_of,
        valid=valid,
        all_valid=all_valid,
        rows=rows,
        invalid=np.empty(0, dtype=np.int64) if all_valid else np.flatnonzero(~valid),
        base_in=base_in,
        ohlcv=(t, o, h, lo, c, v),
        tf_bars={},
    )
    ops = plan.ops.tolist()
    for job in _jobs(ops):
        _run_job(blk, ops, job)
    for js in rows_of.values():
        for j in js[1:]:
            blk.result[j] = blk.result[js[0]]
    return blk.result[:n_names]


def _run_job(blk: _Block, ops: list[list[int]], job: list[int]) -> None:
    """One kernel call (one indicator, or two fused) and its outputs into the result rows."""
    tf = ops[job[0]][1]
    tf_ms = int(blk.plan.tfs[tf, 0])
    src = blk.base_in if tf == 0 else _htf_bars(blk, tf, tf_ms)
    direct = tf == 0 and blk.all_valid
    outs_of = [_outputs(blk, ops[i], direct, src[0].shape[0]) for i in job]
    if len(job) == 2 and ops[job[0]][0] in (ATR, DMI):  # DMI + ATR: one loop
        dmi, atr = (0, 1) if ops[job[0]][0] == DMI else (1, 0)
        d_outs, a_outs = outs_of[dmi][1], outs_of[atr][1]
        dmi_atr_batch_nb(src[2], src[3], src[4], ops[job[0]][4], *d_outs[:3], *a_outs[:2])
    elif len(job) > 1:  # EMAs (two to four) or two RSIs of one series: one loop
        kind, p1 = ops[job[0]][0], ops[job[0]][5]
        x = src[5] if kind == EMA and p1 == SRC_VOLUME else src[4]
        periods = [ops[i][4] for i in job]
        firsts = [outs[1][0] for outs in outs_of]
        if len(job) == 4:
            ema4_batch_nb(x, *periods, *firsts)
        else:
            pair = ema2_batch_nb if kind == EMA else rsi2_batch_nb
            pair(x, periods[0], periods[1], firsts[0], firsts[1])
            if len(job) == 3:
                ema_batch_nb(x, periods[2], firsts[2])
    else:
        kind, _, _, _, p0, p1, p2, _ = ops[job[0]]
        primary, outs = outs_of[0]
        extras = kind == BBANDS and (primary[3] >= 0 or primary[4] >= 0)
        t_, op_, hi_, lo_, cl_, vo_, fr_ = src
        pf = float(blk.plan.pf[job[0]])
        run_op(kind, p0, p1, p2, pf, t_, op_, hi_, lo_, cl_, vo_, fr_, tf_ms, *outs, extras=extras)
    if not direct:
        _place(blk, tf, outs_of)


def _htf_bars(blk: _Block, tf: int, tf_ms: int) -> list[np.ndarray]:
    """The bars of higher timeframe ``tf`` (built once) plus a NaN funding column."""
    if tf not in blk.tf_bars:
        base_ms = int(blk.plan.tfs[0, 0])
        t, o, h, lo, c, v = blk.ohlcv
        bars, vis = aggregate_batch_nb(t, o, h, lo, c, v, blk.valid, base_ms, tf_ms)
        blk.tf_bars[tf] = ([bars[j] for j in range(6)] + [np.full(bars.shape[1], np.nan)], vis)
    return blk.tf_bars[tf][0]


def _outputs(
    blk: _Block, op: list[int], direct: bool, m: int
) -> tuple[list[int], list[np.ndarray]]:
    """``(primary rows, 5 output arrays)`` of one op: each output's first result row (-1 if
    nobody asked for it) and where the kernel writes it: that row itself on the direct path,
    else a temporary over the kernel's ``m`` bars; unrequested outputs go to a scratch row."""
    slot, n_out = op[3], op[7]
    primary = [blk.rows_of[slot + j][0] if slot + j in blk.rows_of else -1 for j in range(n_out)]
    if direct:
        res = blk.result
        outs = [res[primary[j]] if j < n_out and primary[j] >= 0 else blk.scratch for j in range(5)]
    else:
        tmp = np.empty((n_out + 1, m))
        outs = [tmp[j] if j < n_out else tmp[n_out] for j in range(5)]
    return primary, outs


def _place(blk: _Block, tf: int, outs_of: list[tuple[list[int], list[np.ndarray]]]) -> None:
    """Temporaries into the result rows: base values scattered to the valid bars, HTF values
    forward-filled from the base bar at which their bar completed."""
    n = blk.result.shape[1]
    for primary, outs in outs_of:
        for j, r in enumerate(primary):
            if r < 0:
                continue
            if tf == 0:
                scatter_nb(outs[j], blk.rows, n, blk.result[r])
            else:
                forward_fill_nb(outs[j], blk.tf_bars[tf][1], blk.invalid, blk.result[r])


def run_op(
    kind: int,
    p0: int,
    p1: int,
    p2: int,
    pf: float,
    t: np.ndarray,
    op: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    cl: np.ndarray,
    vo: np.ndarray,
    fr: np.ndarray,
    base_ms: int,
    *outs: np.ndarray,
    extras: bool,
) -> None:
    """Run one indicator over arrays of (valid) bars with its ``*_batch_nb`` kernel: output j
    goes to ``outs[j]`` (5 arrays; a scratch array where nobody asked for the output).
    ``extras``: Bollinger width and %b are wanted. Dispatched here rather than in one numba
    function so that only the kernels a plan uses are compiled."""
    x = vo if p1 == SRC_VOLUME else cl
    o0, o1, o2, o3, o4 = outs
    if kind == RAW_VOLUME:
        o0[:] = vo
    elif kind == SMA:
        sma_batch_nb(x, p0, o0, o1)
    elif kind == EMA:
        ema_batch_nb(x, p0, o0)
    elif kind == RSI:
        rsi_batch_nb(cl, p0, o0)
    elif kind == MACD:
        macd_batch_nb(cl, p0, p1, p2, o0, o1, o2)
    elif kind == BBANDS:
        bbands_batch_nb(cl, p0, pf, o0, o1, o2, o3, o4, extras)
    elif kind == ATR:
        atr_batch_nb(hi, lo, cl, p0, o0, o1)
    elif kind == OBV:
        obv_batch_nb(cl, vo, o0)
    elif kind == DMI:
        dmi_batch_nb(hi, lo, cl, p0, o0, o1, o2)
    elif kind == CANDLE:
        candle_batch_nb(op, hi, lo, cl, o0, o1, o2)
    elif kind == MOM:
        mom_batch_nb(x, p0, o0)
    elif kind == LOGRET:
        logret_batch_nb(cl, p0, o0)
    elif kind == FUNDING:
        funding_batch_nb(t, fr, base_ms, o0, o1)
    else:
        raise AssertionError(f"unknown indicator kind {kind}")


def _jobs(ops: list[list[int]]) -> list[list[int]]:
    """The plan's ops (rows of ``plan.ops``) in kernel calls: EMAs of one series on one
    timeframe go four by four and RSIs two by two (latency-bound chains overlap in one
    loop), and an ATR goes with the DMI of its period."""
    jobs: list[list[int]] = []
    waiting: dict[tuple[int, int, int], int] = {}
    for i, (kind, tf, _, _, p0, p1, _, _) in enumerate(ops):
        if kind == EMA:
            key = (kind, tf, p1)
        elif kind == RSI:
            key = (kind, tf, 0)
        elif kind in (ATR, DMI):  # an ATR and a DMI of one period share the true range
            key = (DMI, tf, p0)
        else:
            jobs.append([i])
            continue
        if key in waiting:
            job = jobs[waiting[key]]
            job.append(i)
            if len(job) == (4 if kind == EMA else 2):
                del waiting[key]
        else:
            waiting[key] = len(jobs)
            jobs.append([i])
    return jobs


@functools.lru_cache(maxsize=32)
def _plan(names: tuple[str, ...] | None, interval: str) -> Plan:
    """:func:`build_plan`, remembered (parsing 89 names costs ~0.5 ms a call); the cached
    plan's arrays are read-only, and errors are not cached (they are raised again)."""
    plan = build_plan(list(names) if names is not None else None, interval=interval)
    for a in (plan.ops, plan.pf, plan.tfs, plan.sel):
        a.setflags(write=False)
    return plan


def compute_columns_fold(
    plan: Plan,
    t: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    fr: np.ndarray,
) -> np.ndarray:
    """All requested features by folding the streaming step over the bars: ``[n_names, n]``."""
    st, last = plan.new_state()
    return fold_plan_nb(
        plan.ops, plan.pf, plan.tfs, plan.sel, st, last, t.astype(np.int64), o, h, lo, c, v, fr
    )


def compute(
    candles: pl.DataFrame,
    names: list[str] | None = None,
    *,
    funding: pl.DataFrame | None = None,
    interval: str | None = None,
    out: np.ndarray | None = None,
) -> pl.DataFrame:
    """Compute features over candles.

    Parameters
    ----------
    candles
        Bars sorted by unique ``open_time`` (Int64 ms, bar open) with ``open, high, low,
        close, volume`` (as :func:`engine.data.load_candles` returns them).
    names
        Feature names (see :func:`engine.features.default_names`); all of the catalogue when
        None.
    funding
        Funding events (``funding_time``, ``funding_rate``) as :func:`engine.data.load_funding`
        returns them; without it ``funding_rate`` is NaN.
    interval
        The candles' interval; inferred from ``open_time`` when None (pass it for a frame of
        fewer than two bars).
    out
        Where to compute (float64 ``[len(names) + 1, len(candles)]``, rows contiguous: name
        j in row j, the last row scratch); a new block when None. The frame's columns are
        views of it (polars keeps numpy's memory), so a caller that needs the values as
        one block (the fused sweep) holds them once.

    Returns
    -------
    polars.DataFrame
        ``open_time`` and one Float64 column per name, in the order given; NaN until warm.

    Examples
    --------
    >>> import polars as pl
    >>> bars = pl.DataFrame({"open_time": [0, 300_000, 600_000], "open": [1.0, 2.0, 3.0],
    ...     "high": [2.0, 3.0, 4.0], "low": [0.5, 1.5, 2.5], "close": [2.0, 3.0, 4.0],
    ...     "volume": [10.0, 11.0, 12.0]})
    >>> compute(bars, ["momentum_1", "volume"])["momentum_1"].to_list()
    [nan, 1.0, 1.0]
    """
    import polars as pl

    interval, (t, o, h, lo, c, v) = candle_arrays(candles, interval=interval)
    if names is None or (
        isinstance(names, list | tuple) and all(isinstance(x, str) for x in names)
    ):
        plan = _plan(tuple(names) if names is not None else None, interval)
    else:  # not a list of strings: build_plan raises the ConfigError that says so
        plan = build_plan(names, interval=interval)
    if funding is not None or bool(np.any(plan.ops[:, 0] == FUNDING)):
        fr = funding_asof(funding, t, interval_ms(interval))  # validates a given frame
    else:  # no funding and nobody reads the rates: no array of NaN
        fr = np.empty(0)
    block = compute_columns(plan, t, o, h, lo, c, v, fr, out)
    data: dict[str, pl.Series] = {"open_time": pl.Series("open_time", t, dtype=pl.Int64)}
    for j, name in enumerate(plan.names):
        data[name] = pl.Series(name, block[j], dtype=pl.Float64)
    return pl.DataFrame(data)
