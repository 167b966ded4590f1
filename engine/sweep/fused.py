"""The fused sweep path: every combination of a rule strategy in one parallel numba kernel.

:func:`plan` checks that the grid can be fused (rule graphs: no ML models, no Kelly sizing,
one data section and one set of exchange rules per group, the leverage within the brackets)
and builds its inputs once: the market arrays, every column any rule reads (each distinct
feature computed once, as the per-combination path does), each combination's rules compiled
into postfix programs (:func:`compile_rule`) and its simulator settings as a row of numbers.
:func:`run_chunk` runs a chunk of combinations through :func:`engine.sweep.fused_nb.sweep_nb`
(parallel over combinations on numba's threads; the executor seam ships chunks to Ray) and
:func:`metrics_of` turns a statistics row into the dict :func:`engine.metrics.compute_metrics`
returns, through the same :func:`engine.metrics.summary_metrics`.

Anything the kernel cannot do goes the per-combination way (:func:`engine.sweep.combos.run_combo`),
transparently: :func:`plan` returns None for the whole grid, and a combination whose kernel
run overflowed a buffer or produced a non-finite equity is re-run there one by one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.decisions.signals import event_rules
from engine.kernels import writable_fields
from engine.metrics import YEAR_MS, sharpe_from, sortino_from, summary_metrics, trade_ratios
from engine.sim.bars import bar_blocks, next_funding_bars
from engine.sim.loop import new_liq_memo
from engine.sim.specs import SpecArrays, spec_arrays
from engine.sim.state import new_account, new_breaker, new_pending, new_records
from engine.strategy.execution import sim_config, symbol_specs
from engine.strategy.expr import Node
from engine.sweep import fused_nb as K
from engine.sweep import program_nb as P
from engine.timeutil import interval_ms

if TYPE_CHECKING:
    from engine.decisions.market import Market
    from engine.strategy.graph import StrategyGraph

#: rule slots of a program table (hold rules use slots 0 and 2 with the exits implied)
SLOTS = ("long_entry", "long_exit", "short_entry", "short_exit")
_UNARY = {"neg": P.OP_NEG, "not": P.OP_NOT, "abs": P.OP_ABS}
_BINARY = {
    "+": P.OP_ADD, "-": P.OP_SUB, "*": P.OP_MUL, "/": P.OP_DIV, "min": P.OP_MIN, "max": P.OP_MAX,
}  # fmt: skip
_CMP = {"<": P.OP_LT, "<=": P.OP_LE, ">": P.OP_GT, ">=": P.OP_GE, "==": P.OP_EQ, "!=": P.OP_NE}
_CROSS = {"cross_above": P.OP_CROSS_ABOVE, "cross_below": P.OP_CROSS_BELOW}

Op = tuple[int, int, int, float]  # (op code, column, rows back, constant)


def compile_rule(root: Node, column: Callable[[str], int]) -> tuple[list[Op], int]:
    """A compiled rule tree as a postfix program and its stack depth.

    ``shift(x, n)`` is pushed down to the leaves (a leaf reads ``n`` rows further back; a
    row before the first is NaN, and every operator propagates NaN, so this equals shifting
    the subtree's values); ``cross_above(a, b)`` reads ``a``, ``b`` now and one row back;
    a chained comparison is the NaN-propagating minimum of its pairs, and ``and``/``or``
    fold ``min``/``max`` left to right, as :meth:`engine.strategy.expr.Node.eval` does.
    """
    out: list[Op] = []
    sp = depth = 0

    def emit(op: int, col: int = 0, off: int = 0, val: float = 0.0) -> None:
        nonlocal sp, depth
        out.append((op, col, off, val))
        sp += 1 if op in (P.OP_COL, P.OP_CONST) else -_pops(op)
        depth = max(depth, sp)

    def walk(node: Node, off: int) -> None:
        op, a = node.op, node.args
        if op == "col":
            emit(P.OP_COL, column(a[0]), off)
        elif op == "const":
            emit(P.OP_CONST, 0, off, float(a[0]))
        elif op == "shift":
            walk(a[0], off + int(a[1]))
        elif op == "cmp":
            for i, sym in enumerate(a[0]):
                walk(a[1 + i], off)
                walk(a[2 + i], off)
                emit(_CMP[sym])
                if i:
                    emit(P.OP_MIN)
        elif op in _UNARY:
            walk(a[0], off)
            emit(_UNARY[op])
        elif op in ("and", "or"):
            walk(a[0], off)
            for x in a[1:]:
                walk(x, off)
                emit(P.OP_MIN if op == "and" else P.OP_MAX)
        elif op in _BINARY:
            walk(a[0], off)
            walk(a[1], off)
            emit(_BINARY[op])
        elif op in _CROSS:
            for o in (off, off + 1):
                walk(a[0], o)
                walk(a[1], o)
            emit(_CROSS[op])
        else:  # pragma: no cover - the rule compiler builds only the above
            raise AssertionError(f"unknown rule node {op}")

    walk(root, 0)
    return out, depth


def _pops(op: int) -> int:
    """How much an operator shrinks the stack."""
    if op <= P.OP_ABS:
        return 0
    if op <= P.OP_NE:
        return 1
    return 3


def fusable(graph: StrategyGraph, memo: dict[tuple[Any, ...], Any] | None = None) -> bool:
    """Whether the fused kernel runs this graph exactly as a backtest does: rules (no ML
    models, so no Kelly sizing) and a leverage every symbol's brackets allow (otherwise the
    per-combination path raises the simulator's own error). ``memo``: see :func:`_once`."""
    if graph.config.models is not None or graph.config.risk.sizing == "kelly":
        return False
    if not graph.rules:
        return False
    return bool(_once(memo, "leverage", graph, _leverage_allowed))


def _leverage_allowed(graph: StrategyGraph) -> bool:
    lev = graph.config.execution.leverage
    return all(lev <= float(sp.bracket_leverage.max()) for sp in symbol_specs(graph))


def _once(
    memo: dict[tuple[Any, ...], Any] | None,
    what: str,
    graph: StrategyGraph,
    fn: Callable[[StrategyGraph], Any],
) -> Any:
    """``fn(graph)`` for a function of the graph's execution, risk and data sections alone,
    computed once per distinct sections in ``memo`` (one :func:`plan`; its graphs hold the
    sections, so their ids stay theirs): the combinations of a params grid share those
    objects (``engine.strategy.load.GraphVariants``), so a grid of thousands asks once."""
    if memo is None:
        return fn(graph)
    c = graph.config
    key = (what, id(c.execution), id(c.risk), id(c.data))
    if key not in memo:
        memo[key] = fn(graph)
    return memo[key]


def _atr_name(graph: StrategyGraph) -> str | None:
    e = graph.config.execution
    stop = next(
        (s for s in (e.stop_loss, e.take_profit) if s is not None and s.atr is not None), None
    )
    return None if stop is None else f"atr_{stop.atr_period}"


@dataclass(frozen=True, eq=False)
class Columns:
    """Every column the rules of one data key may read, for all its symbols in one block:
    ``values[s, k, i]`` is column ``index[name] == k`` at symbol ``s``'s own row ``i`` (NaN
    past the symbol's last row; rows no name maps to are scratch). The kernel reads the
    block as it is, and the features frames a sweep shares are views of it, so the values
    are held once (:func:`engine.sweep.runner.shared_features` builds both)."""

    values: np.ndarray  # float64[S, K, n_own]
    index: dict[str, int]


@dataclass(frozen=True, eq=False)
class FusedGroup:
    """The kernel inputs of combinations that share one market and one set of exchange rules."""

    market: K.FusedMarket
    spec: SpecArrays
    programs: K.Programs
    caps: np.ndarray  # int64[4]: fees, trades, funding, stack depth
    indices: np.ndarray  # int64[C]: the grid index of each program row
    span_ms: int
    bar_ms: int


@dataclass(frozen=True, eq=False)
class FusedPlan:
    """Every group of a fusable grid (normally one)."""

    groups: tuple[FusedGroup, ...]


def plan(
    graphs: Sequence[StrategyGraph],
    markets: Mapping[tuple[Any, ...], Market],
    columns: Mapping[tuple[Any, ...], Columns],
    data_key: Callable[[StrategyGraph], tuple[Any, ...]],
) -> FusedPlan | None:
    """The fused inputs of the whole grid, or None when any graph is not :func:`fusable`.
    ``columns``: per data key, every feature and price column the graphs' rules read."""
    memo: dict[tuple[Any, ...], Any] = {}
    if not graphs or not all(fusable(g, memo) for g in graphs):
        return None
    keys: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(graphs):
        keys.setdefault((data_key(g), g.config.execution.exchange_filters), []).append(i)
    groups = []
    for (dkey, _filters), idx in keys.items():
        gs = [graphs[i] for i in idx]
        groups.append(_group(gs, np.array(idx, dtype=np.int64), markets[dkey], columns[dkey], memo))
    return FusedPlan(groups=tuple(groups))


def _group(
    graphs: list[StrategyGraph],
    indices: np.ndarray,
    market: Market,
    columns: Columns,
    memo: dict[tuple[Any, ...], Any],
) -> FusedGroup:
    programs, depth = _programs(graphs, columns.index, memo)
    fmk = _market(market, columns, funding=graphs[0].config.data.funding)
    n, n_sym = market.n_bars, len(market.symbols)
    cap_fees = 3 * n * n_sym + 2 * n_sym + 16
    funding_bars = int((~np.isnan(fmk.funding)).sum())
    caps = np.array([cap_fees, cap_fees // 2 + n_sym + 1, funding_bars + 1, max(depth, 1)])
    t = market.open_time
    return FusedGroup(
        market=fmk,
        spec=spec_arrays(symbol_specs(graphs[0])),
        programs=programs,
        caps=caps.astype(np.int64),
        indices=indices,
        span_ms=int(t[-1]) - int(t[0]) if n > 1 else 0,
        bar_ms=interval_ms(market.interval),
    )


def _market(market: Market, columns: Columns, *, funding: bool) -> K.FusedMarket:
    """Grid prices, funding, times, each grid bar's own row per symbol, and the columns."""
    n, n_sym = market.n_bars, len(market.symbols)
    own = np.full((n, n_sym), -1, dtype=np.int64)
    for j, sym in enumerate(market.symbols):
        rows = market.rows[sym]
        own[rows, j] = np.arange(len(rows), dtype=np.int64)
    # a market loaded without funding has no rates: its own all-NaN array serves
    rates = market.funding_rate
    if not funding and not np.isnan(rates).all():
        rates = np.full((n, n_sym), np.nan)
    time_ms = np.asarray(market.open_time, dtype=np.int64)
    block_prices, block_times = bar_blocks(
        market.open, market.high, market.low, market.close, time_ms
    )
    return K.FusedMarket(
        open=market.open,
        high=market.high,
        low=market.low,
        close=market.close,
        funding=rates,
        next_funding=next_funding_bars(rates),
        time_ms=time_ms,
        block_prices=block_prices,
        block_times=block_times,
        own=own,
        cols=columns.values,
    )


def _programs(
    graphs: list[StrategyGraph], slot: dict[str, int], memo: dict[tuple[Any, ...], Any]
) -> tuple[K.Programs, int]:
    """Every combination's four rule slots as padded program tables, its rule style flags,
    its ATR column and its simulator settings row."""
    compiled: list[list[list[Op]]] = []
    depth = 1
    for g in graphs:
        rules = g.rules
        hold = "long" in rules or "short" in rules
        keys = ("long", None, "short", None) if hold else SLOTS
        progs: list[list[Op]] = []
        for key in keys:
            expr = rules.get(key) if key is not None else None
            if expr is None:
                progs.append([])
                continue
            prog, d = compile_rule(expr.root, slot.__getitem__)
            depth = max(depth, d)
            progs.append(prog)
        compiled.append(progs)
    width = max(1, max(len(p) for progs in compiled for p in progs))
    pad = [(0, 0, 0, 0.0)] * width
    # every program padded to the width as one [combination, slot, op, field] array (item by
    # item into four arrays cost ~2 ms a sweep of 190); op codes, columns and offsets are
    # small ints, exact as floats
    table = np.array(
        [[prog + pad[len(prog) :] for prog in progs] for progs in compiled], dtype=np.float64
    ).reshape(len(graphs), 4, width, 4)
    ops, args, offs = (np.ascontiguousarray(table[..., f], dtype=np.int64) for f in range(3))
    vals = np.ascontiguousarray(table[..., 3])
    lens = np.array([[len(p) for p in progs] for progs in compiled], dtype=np.int64)
    lens = lens.reshape(len(graphs), 4)
    flags = np.array(
        [[event_rules(g), "long" in g.rules, "short" in g.rules] for g in graphs], dtype=np.int64
    )
    atr = np.array([slot.get(_atr_name(g) or "", -1) for g in graphs], dtype=np.int64)
    params = np.array([_once(memo, "params", g, params_row) for g in graphs], dtype=np.float64)
    return K.Programs(ops, args, offs, vals, lens, flags, atr, params), depth


def params_row(graph: StrategyGraph) -> list[float]:
    """The graph's :class:`~engine.sim.config.SimParams` as floats, in field order
    (:func:`engine.sweep.fused_nb.params_nb` rebuilds the tuple)."""
    return [float(v) for v in sim_config(graph).to_params()]


def _take(programs: K.Programs, rows: np.ndarray) -> K.Programs:
    return K.Programs(*(a[rows] for a in programs))


def lane_state(group: FusedGroup) -> tuple[tuple[Any, ...], K.Work]:
    """One thread's simulator state (``engine.sim.state``'s layouts; record buffers of
    :data:`engine.sweep.fused_nb.PER_BAR` slots, drained every bar) and buffers."""
    n, s = group.market.open.shape
    cap = K.PER_BAR * s + 16
    st = (
        new_account(s, cash=0.0),
        new_pending(s),
        new_breaker(equity=0.0),
        new_records(fills=cap, trades=cap, funding=cap, events=cap),
    )
    fees, trades, funding, depth = (int(x) for x in group.caps)
    work = K.Work(
        stack=np.empty((depth, K.BLOCK)),
        rules=np.zeros((s, 4, K.BLOCK)),
        state=np.zeros(s, dtype=np.int64),
        target=np.zeros(s),
        reason=np.zeros(s, dtype=np.int64),
        equity=np.empty(n),
        fees=np.empty(fees),
        pnl=np.empty(trades),
        scratch=np.empty(trades),
        funding=np.empty(funding),
        counts=np.zeros(4, dtype=np.int64),
        frames=np.zeros((64, 3), dtype=np.int64),
        values=np.zeros(64),
        empty=np.empty(0),
        liq_memo=new_liq_memo(s),
        dirs=np.full((K.BLOCK, s), np.nan),
        table=np.zeros((3, 16), dtype=np.int64),
        atrs=np.full((K.BLOCK, s), np.nan),
        targets=np.zeros((K.BLOCK, s)),
        reasons=np.zeros((K.BLOCK, s), dtype=np.int64),
        no_prob=np.empty((0, s)),
    )
    return st, work


class Lanes:
    """The lanes' states and buffers of a sweep run in this process, made on first use
    and kept for its next chunks (fresh buffers cost each chunk their first-touch page
    faults, ~4.6 MB a lane: chunks of 16 measured ~13 ms a chunk slower than chunks of 64).
    Allocated by the calling thread, not in the lanes: glibc gives
    each new thread an arena of its own, and what a lane thread freed stayed resident there
    (+40 MB peak over three sweeps).

    The lanes' threads are kept too (:meth:`run`): a pool started and joined per chunk cost
    ~2 ms of wall time a chunk, a third of the kernel's time in a sweep of 4,950
    combinations over a month of 5m bars (78 chunks). Close it when the run ends
    (``with Lanes() as lanes:``)."""

    def __init__(self) -> None:
        self._states: dict[int, list[tuple[tuple[Any, ...], K.Work]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0

    def get(self, g: int, group: FusedGroup, n: int) -> list[tuple[tuple[Any, ...], K.Work]]:
        """At least ``n`` lane states of group ``g``."""
        have = self._states.setdefault(g, [])
        have.extend(lane_state(group) for _ in range(n - len(have)))
        return have

    def run(self, lane: Callable[[int], None], n: int) -> None:
        """``lane(0) .. lane(n - 1)``, each in a thread of the kept pool; returns when all
        have (an exception in a lane is raised here)."""
        if self._pool is None or self._workers < n:
            self.close()
            self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sweep-lane")
            self._workers = n
        list(self._pool.map(lane, range(n)))

    def close(self) -> None:
        """Stop the kept threads (the states stay usable; a later :meth:`run` starts new
        ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_chunk(
    fused: FusedPlan, task: tuple[int, np.ndarray], lanes: Lanes | None = None
) -> np.ndarray:
    """Statistics rows (``[len(rows), N_STATS]``) of program rows ``rows`` of group ``g``
    (``task = (g, rows)``, the executor's task function): one lane per thread, each with its
    own state (memory: one set of bars-long buffers per thread, whatever the number of
    combinations), each taking the chunk's next combination when it finishes one.
    ``lanes``: states kept across a run's chunks (in this process; a Ray task makes its
    own)."""
    if lanes is None:  # a Ray task: states and threads of its own, for this chunk
        with Lanes() as own:
            return run_chunk(fused, task, own)
    g, rows = task
    grp = fused.groups[g]
    # Ray's object store hands a task read-only views (engine.kernels.arrays)
    market, spec = writable_fields(grp.market), writable_fields(grp.spec)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = rows.size
    out = np.zeros((m, K.N_STATS))
    progs = _take(grp.programs, rows)
    combos = np.arange(m, dtype=np.int64)
    n = max(1, min(threads(), m))
    states = lanes.get(g, grp, n)
    taken = np.zeros(1, dtype=np.int64)  # the lanes' counter: the next combination

    def lane(i: int) -> None:
        # one call a thread: the lanes take the next combination from the counter as each
        # finishes one (combinations differ in cost by their trades: fixed shares left one
        # thread idle for up to a fifth of a chunk; a call per combination cost ~40 us of
        # unboxing under the GIL)
        st, work = states[i]
        K.lane_nb(market, spec, progs, combos, taken, st, work, out)

    if n == 1:
        lane(0)
    else:
        lanes.run(lane, n)
    return out


#: the progress task while the kernel's machine code is being loaded from numba's on-disk
#: cache, or compiled when the cache does not hold it (the first sweep on a machine, or after
#: an edit of the engine's kernels: about a minute)
KERNEL_TASK = "sweep kernel (loaded, or compiled on first use: about a minute)"


def kernel_loaded() -> bool:
    """Whether this process already holds the fused kernel's machine code (a sweep ran)."""
    return bool(getattr(K.lane_nb, "signatures", ()))  # a numba dispatcher's compiled signatures


def threads() -> int:
    """Threads a fused chunk runs on: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def chunks(fused: FusedPlan, *, size: int) -> list[tuple[int, np.ndarray]]:
    """The plan's program rows in tasks of at most ``size`` (per group, in grid order)."""
    out: list[tuple[int, np.ndarray]] = []
    for g, grp in enumerate(fused.groups):
        n = grp.indices.size
        out.extend((g, np.arange(i, min(i + size, n))) for i in range(0, n, size))
    return out


def metrics_of(stats: np.ndarray, group: FusedGroup) -> dict[str, float | int] | None:
    """The metrics dict of one statistics row (None when the kernel could not finish it
    exactly: a buffer overflowed or the equity is not finite)."""
    if stats[K.S_OK] != 1.0:
        return None
    n = int(stats[K.S_BARS])
    periods = YEAR_MS / group.bar_ms
    mean = float(stats[K.S_MEAN])
    sharpe = sharpe_from(mean, float(stats[K.S_SD]), periods_per_year=periods) if n > 2 else 0.0
    down = float(stats[K.S_DOWN])
    sortino = sortino_from(mean, down, periods_per_year=periods) if n > 1 else 0.0
    trades, win_rate, pf = trade_ratios(
        int(stats[K.S_TRADES]), int(stats[K.S_WINS]), float(stats[K.S_PROFIT]),
        float(stats[K.S_LOSS]),
    )  # fmt: skip
    return summary_metrics(
        span_ms=group.span_ms,
        bars=n,
        initial=float(stats[K.S_INITIAL]),
        final=float(stats[K.S_FINAL]),
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=float(stats[K.S_MAXDD]),
        trades=trades,
        win_rate=win_rate,
        profit_factor=pf,
        exposure=int(stats[K.S_INPOS]) / n if n else 0.0,
        fees=float(stats[K.S_FEES]),
        funding=float(stats[K.S_FUNDING]),
        liquidations=int(stats[K.S_LIQ]),
    )
