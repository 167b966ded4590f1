"""The fused sweep kernel: rules, the futures simulator and the metrics of many parameter
combinations in one numba call, parallel over combinations, nothing per bar kept.

Per combination (:func:`lane_nb` runs a lane of combinations one after the other;
:mod:`engine.sweep.fused` runs one lane per thread):

1. the rules, compiled by :mod:`engine.sweep.fused` into small postfix programs over the
   shared feature columns (one program per rule; a combination differs only in which
   columns and constants its programs read), are evaluated a block of ``BLOCK`` bars at a
   time into the block's rule rows (:func:`engine.sweep.program_nb.eval_program_nb`);
2. the block's four signals per bar go through the rule state machine
   (:func:`engine.strategy.rules_nb.rule_step_nb`, tabulated once per combination by
   :func:`rule_table_nb`) into the state and the direction, and
   :func:`engine.sim.loop.fold_step_nb` (the very bar step
   :func:`engine.sim.loop.simulate_nb` folds: funding, fills, stops, liquidation, close,
   breaker and risk, with its quiet-bar fast path) books it; :func:`engine.sim.loop.close_all_nb` ends the run as
   ``simulate_nb`` does;
3. the record buffers are drained after every bar into per-thread arrays of fees, trade
   PnLs and funding amounts; equity goes into a per-thread array of one value per bar;
4. at the end the summary statistics that :func:`engine.metrics.compute_metrics` derives
   from those arrays are computed with numpy's own summation order
   (:func:`pairwise_sum_nb`, numpy's pairwise sum), so every metric is the same float.

Memory is one set of per-thread buffers (bars-long), never a bars x combinations matrix: a
combination's output is one row of :data:`N_STATS` numbers.

Oracle: ``engine backtest`` of the same params (``tests/sweep/test_fused.py`` compares
every metric with ``==``), and numpy's ``sum`` / ``mean`` / ``std`` for the statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.kernels import kernel
from engine.kernels.atomics import fetch_add_nb
from engine.kernels.simd import (
    TERM_DEV2,
    TERM_DOWN2,
    TERM_RETURNS,
    TERM_VALUE,
    lane_sums8_nb,
    range_nb,
    return_sums8_nb,
)
from engine.sim.config import SimParams
from engine.sim.fold import one_views_nb, run_possible_nb, steady_run_nb
from engine.sim.loop import close_all_nb, fold_step_nb
from engine.sim.steps import equity_nb
from engine.strategy.rules_nb import rule_step_nb
from engine.sweep.program_nb import eval_program_nb

#: bars evaluated per rule-program pass (the stack rows are this long). A steady run of the
#: simulator stops at a block's end and starts again (~0.3 us), so a long block pays that
#: less often: 256 -> 4096 measured ~15% faster over the whole kernel, at ~0.5 MB a lane
BLOCK = 4096
#: record slots per bar (drained after every bar); a bar books at most a closing, an
#: opening and an exit fill per symbol, plus the other positions of a cross liquidation
PER_BAR = 16


class FusedMarket(NamedTuple):
    """The market every combination reads (grid arrays ``[n, S]``, the symbols' own rows)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    funding: np.ndarray  # float64[n, S] rate at funding bars, NaN elsewhere (all NaN: off)
    next_funding: np.ndarray  # int64[n, S] engine.sim.bars.next_funding_bars(funding)
    time_ms: np.ndarray  # int64[n] bar open times
    block_prices: np.ndarray  # float64[B, 3] engine.sim.bars.bar_blocks (0 rows: several symbols)
    block_times: np.ndarray  # int64[B, 2] its times
    own: np.ndarray  # int64[n, S] the symbol's own row of each grid bar (-1: no bar)
    cols: np.ndarray  # float64[S, K, n_own] every column any program reads, own rows


class Programs(NamedTuple):
    """Every combination's rules and settings (``C`` combinations, 4 rule slots of ``L`` ops)."""

    ops: (
        np.ndarray
    )  # int64[C, 4, L] op codes (slots: long(_entry), long_exit, short(_entry), short_exit)
    args: np.ndarray  # int64[C, 4, L] column of a leaf
    offs: np.ndarray  # int64[C, 4, L] rows back of a leaf
    vals: np.ndarray  # float64[C, 4, L] constant of a leaf
    lens: np.ndarray  # int64[C, 4] ops in each slot (0: no rule, always false)
    flags: np.ndarray  # int64[C, 3] event rules, hold long, hold short
    atr_col: np.ndarray  # int64[C] column of the ATR for ATR stops (-1: none)
    params: np.ndarray  # float64[C, 25] SimParams fields


class Work(NamedTuple):
    """One thread's buffers: the rule stack and values of a block, the per-bar rows the bar
    step takes, and the run-long arrays the statistics read."""

    stack: np.ndarray  # float64[depth, BLOCK] operands above a program's bottom one (row 0 unused)
    rules: np.ndarray  # float64[S, 4, BLOCK] each rule's values over the block (a program's bottom)
    state: np.ndarray  # int64[S] rule state
    target: np.ndarray  # float64[S]
    reason: np.ndarray  # int64[S]
    equity: np.ndarray  # float64[n] the equity at each close (then its bar returns)
    fees: np.ndarray  # float64[cap] every fill's fee, in order
    pnl: np.ndarray  # float64[cap] every trade's net PnL, in order
    scratch: np.ndarray  # float64[cap] the PnLs of one sign, packed
    funding: np.ndarray  # float64[cap] every funding amount paid, in order
    counts: np.ndarray  # int64[4] fees, trades, funding, overflow
    frames: np.ndarray  # int64[64, 3] pairwise_sum_nb's stack
    values: np.ndarray  # float64[64] its partial sums
    empty: np.ndarray  # float64[0]
    liq_memo: np.ndarray  # float64[S, 5] engine.sim.loop.new_liq_memo, reset per combination
    dirs: np.ndarray  # float64[BLOCK, S] the block's directions (NaN: no bar, or no new event)
    table: np.ndarray  # int64[3, 16] the combination's rule_table_nb
    atrs: np.ndarray  # float64[BLOCK, S] the block's ATR rows of ATR stops
    targets: np.ndarray  # float64[BLOCK, S] steady bars' targets, runs of several symbols (not read)
    reasons: np.ndarray  # int64[BLOCK, S] their reasons (not read)
    no_prob: np.ndarray  # float64[0, S]


# the statistics row of one combination (engine.sweep.fused.metrics_of reads it)
S_OK, S_BARS, S_INITIAL, S_FINAL, S_MEAN, S_SD, S_DOWN = 0, 1, 2, 3, 4, 5, 6
S_MAXDD, S_TRADES, S_WINS, S_PROFIT, S_LOSS, S_INPOS = 7, 8, 9, 10, 11, 12
S_FEES, S_FUNDING, S_LIQ = 13, 14, 15
N_STATS = 16


@kernel(inline=True)
def _term_nb(v, kind, mean):  # type: ignore[no-untyped-def]
    """Term ``kind`` (``TERM_*`` of :mod:`engine.kernels.simd`) of value ``v``: the value, its
    squared downside ``min(v, 0) ** 2`` or its squared deviation ``(v - mean) ** 2``, each
    formed as numpy forms it, in the leaf that adds it (no array of the squares)."""
    if kind == TERM_DOWN2:
        m = min(v, 0.0)
        return m * m
    if kind == TERM_DEV2:
        d = v - mean
        return d * d
    return v


@kernel(inline=True)
def block_sum_nb(a, lo, n, kind, mean):  # type: ignore[no-untyped-def]
    """numpy's pairwise sum of at most 128 terms of ``a[lo:lo+n]`` (:func:`_term_nb`):
    under 8 a plain loop, else eight accumulators (:func:`engine.kernels.simd.lane_sums8_nb`,
    the lanes of two vectors) combined as ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, and the
    rest added one by one."""
    b = a[lo : lo + n]
    if n < 8:
        res = 0.0
        for i in range(n):
            res += _term_nb(b[i], kind, mean)
        return res
    m = n - n % 8
    r0, r1, r2, r3, r4, r5, r6, r7 = lane_sums8_nb(a, lo, m, kind, mean)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    rest = b[m:n]
    for i in range(n - m):
        res += _term_nb(rest[i], kind, mean)
    return res


@kernel(inline=True)
def _return_nb(a, i):  # type: ignore[no-untyped-def]
    """Bar return ``i`` of ``a`` (:func:`engine.metrics.bar_returns`: 0 after a mark <= 0)."""
    prev = a[i]
    return a[i + 1] / prev - 1.0 if prev > 0.0 else 0.0


@kernel(inline=True)
def block_returns_nb(a, lo, n):  # type: ignore[no-untyped-def]
    """:func:`block_sum_nb` of the returns of ``a[lo : lo + n + 1]`` and of their squared
    downsides, the returns written over ``a[lo : lo + n]`` left to right
    (:func:`engine.kernels.simd.return_sums8_nb`): ``(sum, downside sum)``."""
    if n < 8:
        res = 0.0
        down = 0.0
        for i in range(lo, lo + n):
            v = _return_nb(a, i)
            a[i] = v
            res += v
            down += _term_nb(v, TERM_DOWN2, 0.0)
        return res, down
    m = n - n % 8
    v0, v1, v2, v3, v4, v5, v6, v7, d0, d1, d2, d3, d4, d5, d6, d7 = return_sums8_nb(a, lo, m)
    res = ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))
    down = ((d0 + d1) + (d2 + d3)) + ((d4 + d5) + (d6 + d7))
    for i in range(lo + m, lo + n):
        v = _return_nb(a, i)
        a[i] = v
        res += v
        down += _term_nb(v, TERM_DOWN2, 0.0)
    return res, down


@kernel(inline=True)
def _leaf_nb(a, lo, m, kind, mean):  # type: ignore[no-untyped-def]
    """A leaf's sums: ``(sum, downside sum)`` of the returns (``TERM_RETURNS``), else
    ``(sum, 0.0)`` of term ``kind``."""
    if kind == TERM_RETURNS:
        return block_returns_nb(a, lo, m)
    return block_sum_nb(a, lo, m, kind, mean), 0.0


@kernel
def pairwise_sum_nb(a, n, frames, values):  # type: ignore[no-untyped-def]
    """numpy's pairwise summation (``np.add.reduce`` of a float64 array, bit for bit) of the
    first ``n`` values of ``a``: :func:`pairwise_terms_nb` of the values themselves.

    Oracle: ``np.sum`` (tested on lengths 0 .. 300 and up to 10^6)."""
    return pairwise_terms_nb(a, n, frames, values, TERM_VALUE, 0.0)[0]


@kernel
def pairwise_terms_nb(a, n, frames, values, kind, mean):  # type: ignore[no-untyped-def]
    """numpy's pairwise summation of term ``kind`` (:func:`_term_nb`) of the first ``n``
    values of ``a``, as ``np.sum`` of the array of those terms: blocks of at most 128 terms
    (:func:`block_sum_nb`), a longer run split in two at ``n // 2`` rounded down to a
    multiple of 8 and the halves' sums added. Returns ``(sum, 0.0)``; for ``TERM_RETURNS``
    the sum of the returns of ``a[:n + 1]``, written over ``a[:n]``, and the sum of their
    squared downsides (:func:`block_returns_nb`), both over the same tree.

    The recursion runs on the caller's scratch ``frames`` (int64[64, 3]) and ``values``
    (float64[64]: the two sums' partial sums in its halves). The leaves are taken left to
    right (a leaf's returns read the first value of the leaf after it); IEEE addition
    commutes, so the order the halves are summed in does not matter, only the tree."""
    if n <= 128:
        return _leaf_nb(a, 0, n, kind, mean)
    half = values.shape[0] // 2
    top = 1
    frames[0, 0] = 0
    frames[0, 1] = n
    frames[0, 2] = 0
    nv = 0
    while top > 0:
        lo = frames[top - 1, 0]
        m = frames[top - 1, 1]
        if m <= 128:
            top -= 1
            values[nv], values[half + nv] = _leaf_nb(a, lo, m, kind, mean)
            nv += 1
        elif frames[top - 1, 2] == 0:
            frames[top - 1, 2] = 1
            m2 = m // 2
            m2 -= m2 % 8
            frames[top, 0] = lo + m2  # the right half below the left: the left comes first
            frames[top, 1] = m - m2
            frames[top, 2] = 0
            frames[top + 1, 0] = lo
            frames[top + 1, 1] = m2
            frames[top + 1, 2] = 0
            top += 2
        else:
            top -= 1
            nv -= 1
            values[nv - 1] = values[nv - 1] + values[nv]
            values[half + nv - 1] = values[half + nv - 1] + values[half + nv]
    return values[0], values[half]


#: bars a drawdown block spans: a block without a new peak is two vector passes
DD_BLOCK = 128


@kernel(inline=True)
def max_drawdown_nb(eq, n):  # type: ignore[no-untyped-def]
    """The largest ``1 - eq / peak`` of ``eq[:n]`` (``peak``: the running high; a NaN
    equity counts nowhere; 0 while no peak is > 0).

    For one peak the drawdown is largest at the lowest equity (a correctly rounded division
    and subtraction are monotone), so one division per peak, not one per bar, gives the same
    float: the scan keeps the peak and the low since it. A block of :data:`DD_BLOCK` bars
    whose high (:func:`engine.kernels.simd.range_nb`, NaN skipped) is no new peak only
    lowers the low, by the block's low: the very state the bar-by-bar scan reaches. The
    other blocks (~5% of them in the bench's sweep) take the bar-by-bar scan."""
    peak = -np.inf
    low = np.inf
    maxdd = 0.0
    for lo in range(0, n, DD_BLOCK):
        m = min(DD_BLOCK, n - lo)
        if m == DD_BLOCK:
            high, block_low = range_nb(eq, lo, m)
            if not high > peak:
                low = min(low, block_low)
                continue
        block = eq[lo : lo + m]
        for i in range(m):
            e = block[i]
            if e > peak:
                if peak > 0.0:
                    maxdd = max(maxdd, 1.0 - low / peak)
                peak = e
                low = e
            elif e < low:
                low = e
    if peak > 0.0:
        maxdd = max(maxdd, 1.0 - low / peak)
    return maxdd


@kernel
def equity_stats_nb(eq, n, frames, values, out):  # type: ignore[no-untyped-def]
    """Mean, sample standard deviation (ddof 1) and downside deviation of the bar returns
    of ``eq[:n]`` and its largest drawdown, as :func:`engine.metrics.compute_metrics`
    computes them: the returns (:func:`engine.metrics.bar_returns`: 0 after a mark <= 0),
    their squared deviations and squared downsides each summed by numpy's pairwise sum
    (numpy's ``mean``/``std``; the squares formed in the sums' leaves), ``sqrt`` of the
    variances. The returns overwrite ``eq`` (the drawdown is read first): a lane's buffers
    hold one bars-long array for the statistics, not three."""
    maxdd = max_drawdown_nb(eq, n)
    k = n - 1 if n > 0 else 0
    mean = 0.0
    sd = 0.0
    down = 0.0
    if k >= 1:  # return i (bars i -> i + 1) written over equity i, read before it is
        total, down2 = pairwise_terms_nb(eq, k, frames, values, TERM_RETURNS, 0.0)
        mean = total / k
        down = np.sqrt(down2 / k)
    if k >= 2:
        sd = np.sqrt(pairwise_terms_nb(eq, k, frames, values, TERM_DEV2, mean)[0] / (k - 1))
    out[S_MEAN] = mean
    out[S_SD] = sd
    out[S_DOWN] = down
    out[S_MAXDD] = maxdd


@kernel
def trade_stats_nb(pnl, n, scratch, frames, values, out):  # type: ignore[no-untyped-def]
    """Trades, wins, the gross profit and the gross loss of the first ``n`` trade PnLs as
    :func:`engine.metrics.compute_metrics` sums them (``pnl[pnl > 0].sum()``: the selected
    values packed, then numpy's pairwise sum)."""
    k = 0
    for i in range(n):
        if pnl[i] > 0.0:
            scratch[k] = pnl[i]
            k += 1
    out[S_WINS] = k
    out[S_PROFIT] = pairwise_sum_nb(scratch, k, frames, values)
    k = 0
    for i in range(n):
        if pnl[i] < 0.0:
            scratch[k] = pnl[i]
            k += 1
    out[S_LOSS] = -pairwise_sum_nb(scratch, k, frames, values)
    out[S_TRADES] = n


@kernel
def params_nb(p):  # type: ignore[no-untyped-def]
    """One combination's :class:`~engine.sim.config.SimParams` from its row of the params
    table (``engine.sweep.fused.params_row`` writes it, in the tuple's field order)."""
    return SimParams(
        p[0], p[1], int(p[2]), p[3], p[4], p[5], int(p[6]), p[7], p[8], p[9], p[10], p[11],
        int(p[12]), p[13], p[14], p[15], p[16], p[17], p[18], p[19], p[20], int(p[21]),
        int(p[22]), p[23] != 0.0, p[24] != 0.0,
    )  # fmt: skip


@kernel
def reset_nb(acct, pend, brk, recs, cash):  # type: ignore[no-untyped-def]
    """Put a thread's state back to :func:`engine.sim.state.new_account` / ``new_pending``
    / ``new_breaker`` / empty records, for its next combination."""
    acct.wallet[0] = cash
    acct.loss_streak[0] = 0
    acct.n_liquidations[0] = 0
    for s in range(acct.qty.shape[0]):
        acct.qty[s] = 0.0
        acct.entry_price[s] = 0.0
        acct.margin[s] = 0.0
        acct.stop[s] = np.nan
        acct.target[s] = np.nan
        acct.last_price[s] = np.nan
        acct.tr_entry_bar[s] = -1
        acct.tr_qty_in[s] = 0.0
        acct.tr_value_in[s] = 0.0
        acct.tr_qty_out[s] = 0.0
        acct.tr_value_out[s] = 0.0
        acct.tr_realized[s] = 0.0
        acct.tr_fees[s] = 0.0
        acct.tr_funding[s] = 0.0
        pend.active[s] = False
        pend.target[s] = 0.0
        pend.limit_price[s] = np.nan
        pend.atr[s] = np.nan
        pend.bar[s] = -1
        pend.planned[s] = 0.0
        pend.planned_margin[s] = 0.0
    brk.halted[0] = False
    brk.halt_until[0] = -1
    brk.day[0] = np.iinfo(np.int64).min
    brk.day_start_equity[0] = cash
    brk.peak[0] = cash
    brk.prev_equity[0] = cash
    recs.fills.n[0] = 0
    recs.trades.n[0] = 0
    recs.funding.n[0] = 0
    recs.events.n[0] = 0


@kernel(inline=True)
def _take_nb(count, values, dst, counts, i, null_is_zero):  # type: ignore[no-untyped-def]
    """Append the ``count[0]`` values a record buffer holds to ``dst`` at ``counts[i]``
    (counting past its end without writing), then empty the buffer; a buffer that counted
    past its own capacity sets ``counts[3]``. ``null_is_zero``: NaN is stored as 0."""
    k = count[0]
    if k > values.shape[0]:
        counts[3] = 1
        k = values.shape[0]
    for j in range(k):
        if counts[i] < dst.shape[0]:
            v = values[j]
            dst[counts[i]] = 0.0 if (null_is_zero and np.isnan(v)) else v
        counts[i] += 1
    count[0] = 0


@kernel(inline=True)
def drain_nb(recs, work, counts):  # type: ignore[no-untyped-def]
    """Move the bar's new fees, trade PnLs (a null PnL counts as 0, as the metrics read
    it) and funding amounts from the record buffers into the thread's run-long arrays, in
    booking order, and empty the buffers. ``counts``: fees, trades, funding, overflow."""
    _take_nb(recs.fills.n, recs.fills.fee, work.fees, counts, 0, False)
    _take_nb(recs.trades.n, recs.trades.pnl, work.pnl, counts, 1, True)
    _take_nb(recs.funding.n, recs.funding.amount, work.funding, counts, 2, False)
    recs.events.n[0] = 0


@kernel(inline=True)
def in_position_nb(acct):  # type: ignore[no-untyped-def]
    """A bar is in a position when its gross exposure ``sum |qty| * last close`` is not 0
    (:func:`engine.decisions.records.equity_rows`; a symbol without a close yet adds 0)."""
    for s in range(acct.qty.shape[0]):
        if acct.qty[s] != 0.0 and not np.isnan(acct.last_price[s]):
            return True
    return False


@kernel
def rule_table_nb(flags, lens, table):  # type: ignore[no-untyped-def]
    """One combination's rule state machine as a table: ``table[state + 1, code]`` is
    :func:`engine.strategy.rules_nb.rule_step_nb`'s next state from ``state`` and a bar's
    four rule values as the bits of ``code`` (1 long entry, 2 long exit, 4 short entry, 8
    short exit: the rule's value is 1.0), with the combination's style applied as
    :func:`engine.decisions.signals` applies it: a missing rule is false and a hold rule's
    exit is the negation of its entry (``flags``: event rules, hold long, hold short;
    ``lens``: ops per slot). Every entry is computed by ``rule_step_nb`` itself.

    Returns whether the machine is memoryless: every state reachable from flat has the
    same row, so a bar's next state depends on its signals only (a hold rule on one side,
    e.g. ``long: ema_10 > ema_20``), and the bars need not wait for each other."""
    hold_long, hold_short = flags[1] != 0, flags[2] != 0
    for st in range(3):
        for code in range(16):
            le = lens[0] > 0 and (code & 1) != 0
            lx = (not le) if hold_long else (lens[1] > 0 and (code & 2) != 0)
            se = lens[2] > 0 and (code & 4) != 0
            sx = (not se) if hold_short else (lens[3] > 0 and (code & 8) != 0)
            table[st, code] = rule_step_nb(st - 1, le, lx, se, sx)
    reach = 2  # bit state + 1: the states reachable from flat (two steps reach them all)
    for _ in range(2):
        for st in range(3):
            if (reach >> st) & 1:
                for code in range(16):
                    reach |= 1 << (table[st, code] + 1)
    for st in range(3):
        if (reach >> st) & 1:
            for code in range(16):
                if table[st, code] != table[1, code]:
                    return False
    return True


@kernel(inline=True)
def _rule_rows_nb(own, rules, table, events, state, dirs, gap_free, memoryless):  # type: ignore[no-untyped-def]
    """:func:`decide_rows_nb`'s loop; ``gap_free`` and ``memoryless`` constants at each
    call site (memoryless: the next state read from flat's row, independent of the last)."""
    le, lx, se, sx = rules[0], rules[1], rules[2], rules[3]
    for j in range(own.shape[0]):
        if not gap_free and own[j] < 0:
            dirs[j] = np.nan
            continue
        code = 0
        if le[j] == 1.0:
            code |= 1
        if lx[j] == 1.0:
            code |= 2
        if se[j] == 1.0:
            code |= 4
        if sx[j] == 1.0:
            code |= 8
        new = table[1, code] if memoryless else table[state + 1, code]
        dirs[j] = np.nan if (events and new == state) else float(new)
        state = new
    return state


@kernel(inline=True)
def _one_rule_rows_nb(row, bit, table, dirs):  # type: ignore[no-untyped-def]
    """:func:`decide_rows_nb`'s loop for a memoryless machine without events that reads one
    rule (slot bit ``bit``) over a gap-free block: a bar's direction is flat's next state for
    that rule's value alone (the table ignores the slots the combination has no rule in), one
    of two values, chosen without a branch per bar. Returns the state after the block."""
    # off + (on - off) * flag, not a select of two floats: LLVM turns a select of two
    # converted ints into a conversion of the selected int, one scalar int64 -> float64
    # conversion a bar (0.57 ns a bar; this 0.26). The states are small ints, so both
    # give the same float
    off = float(table[1, 0])
    step = float(table[1, bit]) - off
    nb = row.shape[0]
    for j in range(nb):
        dirs[j] = off + step * (row[j] == 1.0)
    return table[1, bit] if (nb > 0 and row[nb - 1] == 1.0) else table[1, 0]


@kernel
def decide_rows_nb(own, rules, table, memoryless, events, state, dirs, used):  # type: ignore[no-untyped-def]
    """One symbol's directions over a block: ``own`` its own row of each bar (-1: no bar),
    ``rules`` the block's four rule rows (``[4, >= len(own)]``), ``table`` and
    ``memoryless`` the combination's :func:`rule_table_nb`; writes ``dirs`` (NaN where the
    symbol has no bar, and for event rules where the state did not change, as
    :func:`engine.strategy.rules_nb.rule_bar_nb` gives it) and returns the state after the
    block. ``used``: the slots the combination has a rule in (bit ``r``: slot ``r``). A
    block whose bars are consecutive own rows skips the per-bar test, and a memoryless
    machine of one rule without events (``long: ema_10 > ema_20``) is a select per bar
    (:func:`_one_rule_rows_nb`). Out of line and branch-light: the state machine's branches
    inlined into the kernel measured ~4-7 ns a bar, with the combination's flags reloaded
    from the stack every bar."""
    nb = own.shape[0]
    if nb > 0 and own[0] >= 0 and own[nb - 1] - own[0] == nb - 1:
        if memoryless and not events and used != 0 and (used & (used - 1)) == 0:
            slot = 0
            while (used >> slot) != 1:
                slot += 1
            return _one_rule_rows_nb(rules[slot, :nb], used, table, dirs)
        if memoryless:
            return _rule_rows_nb(own, rules, table, events, state, dirs, True, True)
        return _rule_rows_nb(own, rules, table, events, state, dirs, True, False)
    return _rule_rows_nb(own, rules, table, events, state, dirs, False, False)


@kernel(inline=True)
def decide_block_nb(mkt, prog, c, work, memoryless, b0, nb, dirs1):  # type: ignore[no-untyped-def]
    """Bars ``b0 .. b0+nb-1``: each symbol's directions from its rule rows
    (:func:`decide_rows_nb`; the rule state machine reads no account state, so a whole
    block is decided before the simulator books it) into ``work.dirs``, and the ATR rows of
    ATR stops into ``work.atrs``. ``dirs1``: ``work.dirs`` as one C-contiguous vector when
    there is one symbol (:func:`~engine.sim.fold.one_views_nb`), else empty: a column of the
    2-D array has a stride known only at run time, and the loops writing it are not
    vectorised (the one-rule select 0.25 -> 0.64 ns a bar)."""
    events = prog.flags[c, 0] != 0
    k = prog.atr_col[c]
    used = 0  # the slots the combination has a rule in (bit r: slot r)
    for r in range(4):
        if prog.lens[c, r] > 0:
            used |= 1 << r
    for s in range(mkt.own.shape[1]):
        own = mkt.own[b0 : b0 + nb, s]
        if dirs1.shape[0] > 0:
            work.state[s] = decide_rows_nb(
                own, work.rules[s], work.table, memoryless, events, work.state[s],
                dirs1[:nb], used,
            )  # fmt: skip
        else:
            work.state[s] = decide_rows_nb(
                own, work.rules[s], work.table, memoryless, events, work.state[s],
                work.dirs[:nb, s], used,
            )  # fmt: skip
        if k >= 0:
            for j in range(nb):
                i = own[j]
                work.atrs[j, s] = mkt.cols[s, k, i] if i >= 0 else np.nan


@kernel(inline=True)
def combo_nb(mkt, spec, prog, c, st, work, out):  # type: ignore[no-untyped-def]
    """Run combination ``c`` over every bar with the thread's state ``st`` (Account,
    Pending, Breaker, Records) and buffers ``work``; write its statistics row ``out``."""
    acct, pend, brk, recs = st
    prm = params_nb(prog.params[c])
    reset_nb(acct, pend, brk, recs, prm.initial_cash)
    n = mkt.open.shape[0]
    n_sym = mkt.open.shape[1]
    memoryless = rule_table_nb(prog.flags[c], prog.lens[c], work.table)
    for s in range(n_sym):
        work.state[s] = 0
        for k in range(work.liq_memo.shape[1]):
            work.liq_memo[s, k] = np.nan
    counts = work.counts
    for i in range(4):
        counts[i] = 0
    in_pos = 0
    # the one-symbol runs write no held quantities and reasons (none is read here)
    one = one_views_nb(
        mkt.open, mkt.high, mkt.low, mkt.close, work.dirs, work.no_prob, work.targets[:0],
        work.reasons[:0],
    )  # fmt: skip
    for b0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - b0)
        for s in range(n_sym):
            for r in range(4):
                length = prog.lens[c, r]
                if length > 0:
                    eval_program_nb(
                        prog.ops[c, r], prog.args[c, r], prog.offs[c, r], prog.vals[c, r],
                        length, mkt.cols, mkt.own, s, b0, nb, work.stack, work.rules[s, r],
                    )  # fmt: skip
        decide_block_nb(mkt, prog, c, work, memoryless, b0, nb, one[4])
        j = 0
        while j < nb:
            end = b0 + j
            if run_possible_nb(acct, pend, brk, prm):
                end = steady_run_nb(
                    acct, pend, brk, spec, prm, mkt.open, mkt.high, mkt.low, mkt.close,
                    mkt.funding, mkt.next_funding, mkt.time_ms, work.dirs, work.no_prob, b0 + j,
                    b0 + nb, b0,
                    work.equity, work.targets, work.reasons, work.liq_memo, one,
                    (mkt.block_prices, mkt.block_times),
                )  # fmt: skip
            if in_position_nb(acct):  # a steady run holds its positions: every bar or none
                in_pos += min(end, n - 1) - min(b0 + j, n - 1)
            j = end - b0
            if j >= nb:
                break
            t = b0 + j
            atr_row = work.atrs[j] if prog.atr_col[c] >= 0 else work.empty
            work.equity[t] = fold_step_nb(
                acct, pend, brk, spec, prm, recs, t, mkt.time_ms[t],
                mkt.open[t], mkt.high[t], mkt.low[t], mkt.close[t], mkt.funding[t], work.empty,
                work.dirs[j], work.empty, work.empty, atr_row, work.target, work.reason,
                work.liq_memo,
            )  # fmt: skip
            drain_nb(recs, work, counts)
            if t < n - 1 and in_position_nb(acct):
                in_pos += 1
            j += 1
    if n > 0 and prm.close_at_end:
        close_all_nb(acct, pend, prm, recs, n - 1)
        work.equity[n - 1] = equity_nb(acct)
        drain_nb(recs, work, counts)
    if n > 0 and in_position_nb(acct):
        in_pos += 1
    finish_nb(work, counts, n, acct.n_liquidations[0], in_pos, out)


@kernel
def finish_nb(work, counts, n, liquidations, in_pos, out):  # type: ignore[no-untyped-def]
    """The statistics row of a finished combination (see the ``S_*`` indices)."""
    ok = counts[3] == 0
    ok = ok and counts[0] <= work.fees.shape[0] and counts[1] <= work.pnl.shape[0]
    ok = ok and counts[2] <= work.funding.shape[0]
    eq = work.equity
    for i in range(n):
        if not np.isfinite(eq[i]):
            ok = False
    out[S_OK] = 1.0 if ok else 0.0
    out[S_BARS] = n
    out[S_INITIAL] = eq[0] if n > 0 else 0.0
    out[S_FINAL] = eq[n - 1] if n > 0 else 0.0
    fr, va = work.frames, work.values
    trade_stats_nb(work.pnl, min(counts[1], work.pnl.shape[0]), work.scratch, fr, va, out)
    out[S_INPOS] = in_pos
    nf = min(counts[0], work.fees.shape[0])
    out[S_FEES] = pairwise_sum_nb(work.fees, nf, fr, va)
    nu = min(counts[2], work.funding.shape[0])
    out[S_FUNDING] = -pairwise_sum_nb(work.funding, nu, fr, va)
    equity_stats_nb(eq, n, fr, va, out)  # the returns overwrite the equity
    out[S_LIQ] = liquidations


@kernel
def lane_nb(mkt, spec, prog, combos, taken, st, work, out):  # type: ignore[no-untyped-def]
    """The combinations of ``combos``, each taken as the next number of the counter
    ``taken[0]`` (:func:`engine.kernels.atomics.fetch_add_nb`) until it passes the last,
    one after the other with one thread's state ``st`` and buffers ``work``; ``out[i]``
    gets the statistics row of ``combos[i]``. The entry point: ``engine.sweep.fused`` runs
    one lane per thread on one counter (the kernel releases the GIL), so each thread takes
    the next combination as it finishes one, in one call."""
    m = combos.shape[0]
    while True:
        k = fetch_add_nb(taken, 0, 1)
        if k >= m:
            return
        combo_nb(mkt, spec, prog, combos[k], st, work, out[k])
