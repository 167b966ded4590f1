"""Compiled plans: every requested feature, on every timeframe, advanced by one bar at once
(numba).

A *plan* is the catalogue a caller asked for, compiled to arrays
(:func:`engine.features.catalogue.build_plan`):

- ``ops``: int64 ``[n_ops, 8]`` rows ``(kind, tf, state_offset, slot, p0, p1, p2, n_outputs)``, sorted
  by timeframe; ``pf``: float64 ``[n_ops]`` (Bollinger's sigma multiplier);
- ``tfs``: int64 ``[n_tf, 4]`` rows ``(tf_ms, agg_state_offset, first_op, end_op)``; row 0 is
  the base interval (no aggregation);
- ``sel``: int64 ``[n_names]``, for each requested name its slot in ``last``.

The state of the whole plan is one float64 vector ``st`` (every indicator's slice plus each
higher timeframe's bar aggregator, :mod:`engine.features.htf_nb`) and ``last`` (the latest
value of every output).

:func:`step_plan_nb` is THE step: one base bar through the whole plan. Streaming calls it
once per closed bar; :func:`fold_plan_nb` folds it over an array of bars. The batch path
(:func:`engine.features.batch.compute_columns`) runs the kernels of
:mod:`engine.features.indicators_batch_nb` and :func:`engine.features.htf_nb.aggregate_batch_nb`
instead, with the helpers at the end of this module; the tests prove it equal to the fold,
bit for bit.

A bar with a NaN in open/high/low/close/volume is *invalid*: no indicator sees it (their
states stay as they were) and every output at that bar is NaN. It still moves the clock: it
can close a higher-timeframe bar.
"""

from __future__ import annotations

import numpy as np

from engine.features.htf_nb import agg_step_nb
from engine.features.indicators_nb import (
    atr_step_nb,
    bbands_step_nb,
    candle_step_nb,
    dmi_step_nb,
    ema_step_nb,
    funding_step_nb,
    logret_step_nb,
    macd_step_nb,
    mom_step_nb,
    obv_step_nb,
    raw_volume_step_nb,
    rsi_step_nb,
    sma_step_nb,
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
    MAX_OUTPUTS,
    MOM,
    OBV,
    RAW_VOLUME,
    RSI,
    SMA,
    SRC_VOLUME,
)
from engine.kernels import kernel


@kernel
def op_step_nb(kind, st, so, p0, p1, p2, pf, t, op, hi, lo, cl, vo, fr, base_ms, res):  # type: ignore[no-untyped-def]
    """Run one indicator of any kind on one bar (the dispatcher of the streaming plan)."""
    if kind == RAW_VOLUME:
        raw_volume_step_nb(st, so, vo, res)
    elif kind == SMA:
        sma_step_nb(st, so, vo if p1 == SRC_VOLUME else cl, p0, res)
    elif kind == EMA:
        ema_step_nb(st, so, vo if p1 == SRC_VOLUME else cl, p0, res)
    elif kind == RSI:
        rsi_step_nb(st, so, cl, p0, res)
    elif kind == MACD:
        macd_step_nb(st, so, cl, p0, p1, p2, res)
    elif kind == BBANDS:
        bbands_step_nb(st, so, cl, p0, pf, res)
    elif kind == ATR:
        atr_step_nb(st, so, hi, lo, cl, p0, res)
    elif kind == OBV:
        obv_step_nb(st, so, cl, vo, res)
    elif kind == DMI:
        dmi_step_nb(st, so, hi, lo, cl, p0, res)
    elif kind == CANDLE:
        candle_step_nb(st, so, op, hi, lo, cl, res)
    elif kind == MOM:
        mom_step_nb(st, so, vo if p1 == SRC_VOLUME else cl, p0, res)
    elif kind == LOGRET:
        logret_step_nb(st, so, cl, p0, res)
    elif kind == FUNDING:
        funding_step_nb(st, so, t, fr, base_ms, res)


@kernel
def _is_valid(op, hi, lo, cl, vo):  # type: ignore[no-untyped-def]
    return not (np.isnan(op) or np.isnan(hi) or np.isnan(lo) or np.isnan(cl) or np.isnan(vo))


@kernel
def _run_ops(ops, pf, first, end, st, last, res, t, op, hi, lo, cl, vo, fr, base_ms):  # type: ignore[no-untyped-def]
    for i in range(first, end):
        kind = ops[i, 0]
        op_step_nb(
            kind,
            st,
            ops[i, 2],
            ops[i, 4],
            ops[i, 5],
            ops[i, 6],
            pf[i],
            t,
            op,
            hi,
            lo,
            cl,
            vo,
            fr,
            base_ms,
            res,
        )
        slot = ops[i, 3]
        for j in range(ops[i, 7]):
            last[slot + j] = res[j]


@kernel
def step_plan_nb(ops, pf, tfs, sel, st, last, fin, res, out, t, op, hi, lo, cl, vo, fr):  # type: ignore[no-untyped-def]
    """One closed base bar through the whole plan (all features, all timeframes).

    Updates ``st`` and ``last`` in place and writes the requested features to ``out``
    (all NaN for an invalid bar). Cost is O(size of the plan), independent of history.
    """
    base_ms = tfs[0, 0]
    valid = _is_valid(op, hi, lo, cl, vo)
    if valid:
        _run_ops(ops, pf, tfs[0, 2], tfs[0, 3], st, last, res, t, op, hi, lo, cl, vo, fr, base_ms)
    for k in range(1, tfs.shape[0]):
        nfin = agg_step_nb(st, tfs[k, 1], t, op, hi, lo, cl, vo, valid, base_ms, tfs[k, 0], fin)
        for f in range(nfin):
            _run_ops(
                ops,
                pf,
                tfs[k, 2],
                tfs[k, 3],
                st,
                last,
                res,
                fin[f, 0],
                fin[f, 1],
                fin[f, 2],
                fin[f, 3],
                fin[f, 4],
                fin[f, 5],
                np.nan,
                tfs[k, 0],
            )
    if valid:
        for j in range(sel.shape[0]):
            out[j] = last[sel[j]]
    else:
        out[:] = np.nan


@kernel(allocates=True)
def fold_plan_nb(ops, pf, tfs, sel, st, last, t, op, hi, lo, cl, vo, fr):  # type: ignore[no-untyped-def]
    """Fold :func:`step_plan_nb` over arrays of bars; returns ``[n_names, n_bars]``."""
    n = t.shape[0]
    out2 = np.empty((sel.shape[0], n))
    fin = np.empty((2, 6))
    res = np.empty(MAX_OUTPUTS)
    out = np.empty(sel.shape[0])
    for i in range(n):
        step_plan_nb(
            ops,
            pf,
            tfs,
            sel,
            st,
            last,
            fin,
            res,
            out,
            t[i],
            op[i],
            hi[i],
            lo[i],
            cl[i],
            vo[i],
            fr[i],
        )
        out2[:, i] = out
    return out2


# --------------------------------------------------------------------------------------
# Helpers of the batch path.


@kernel(allocates=True)
def valid_mask_nb(op, hi, lo, cl, vo):  # type: ignore[no-untyped-def]
    """True where the bar has no NaN in open/high/low/close/volume."""
    n = op.shape[0]
    m = np.empty(n, dtype=np.bool_)
    for i in range(n):
        m[i] = _is_valid(op[i], hi[i], lo[i], cl[i], vo[i])
    return m


@kernel
def check_times_nb(t, step):  # type: ignore[no-untyped-def]
    """``(i, ok)``: i is the first row whose open time does not exceed the previous one's (-1
    if none); ok is False when some open time is not a multiple of ``step``."""
    n = t.shape[0]
    if n == 0:
        return -1, True
    ok = t[0] % step == 0
    for i in range(1, n):
        d = t[i] - t[i - 1]
        if d <= 0:
            return i, ok
        if d != step and d % step != 0:
            ok = False
    return -1, ok


@kernel
def scatter_nb(values, rows, n, dest):  # type: ignore[no-untyped-def]
    """``dest[rows[i]] = values[i]``; NaN elsewhere (values computed on valid bars only)."""
    dest[:] = np.nan
    for i in range(rows.shape[0]):
        dest[rows[i]] = values[i]
