"""Simulator state and record buffers: NamedTuples of numpy arrays.

The tuples themselves never change; the kernels update the arrays inside them in place
(scalars live in length-1 arrays). Python callers build them with the ``new_*`` helpers,
pass them to the step kernels of :mod:`engine.sim.steps` and :mod:`engine.sim.loop`, and
read them back as plain numpy.

Record buffers (fills, trades, funding, events) have a fixed capacity; ``n[0]`` counts the
records written. A kernel that finds a buffer full keeps counting but stops writing, so a
caller detects overflow with ``n[0] > len(buffer.bar)`` (:func:`check_capacity`). A long-
running caller (the exchange simulator) drains a buffer and sets ``n[0] = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Account(NamedTuple):
    """A USD-M account with one one-way position per symbol (index = symbol column)."""

    wallet: np.ndarray  # float64[1] wallet balance: cash + realised PnL - fees - funding paid
    qty: np.ndarray  # float64[S] signed position quantity (base units)
    entry_price: np.ndarray  # float64[S] average entry price (0 when flat)
    margin: np.ndarray  # float64[S] isolated margin (isolated) / initial margin (cross)
    stop: np.ndarray  # float64[S] stop-loss trigger price (NaN: none)
    target: np.ndarray  # float64[S] take-profit trigger price (NaN: none)
    last_price: np.ndarray  # float64[S] latest mark: the bar open during a bar, its close after
    loss_streak: np.ndarray  # int64[1] consecutive losing trades (the breaker resets it)
    n_liquidations: np.ndarray  # int64[1]
    # bookkeeping of each symbol's open trade
    tr_entry_bar: np.ndarray  # int64[S]
    tr_qty_in: np.ndarray  # float64[S] total quantity opened
    tr_value_in: np.ndarray  # float64[S] sum of opened qty * price
    tr_qty_out: np.ndarray  # float64[S]
    tr_value_out: np.ndarray  # float64[S]
    tr_realized: np.ndarray  # float64[S] gross realised PnL so far
    tr_fees: np.ndarray  # float64[S]
    tr_funding: np.ndarray  # float64[S] funding paid (negative: received)


class Pending(NamedTuple):
    """The order each symbol's decision at a close leaves for the next open."""

    active: np.ndarray  # bool[S]
    target: np.ndarray  # float64[S] signed target position
    limit_price: np.ndarray  # float64[S] limit price of the opening leg (limit entries)
    atr: np.ndarray  # float64[S] ATR at the decision bar (for ATR stops)
    bar: np.ndarray  # int64[S] decision bar
    planned: np.ndarray  # float64[S] scratch: targets decided so far this bar
    planned_margin: np.ndarray  # float64[S] scratch: their initial margin


class Breaker(NamedTuple):
    """Circuit-breaker state (account-wide)."""

    halted: np.ndarray  # bool[1]
    halt_until: np.ndarray  # int64[1] first bar at which the halt is lifted
    day: np.ndarray  # int64[1] current UTC day number (ms // 86_400_000)
    day_start_equity: np.ndarray  # float64[1]
    peak: np.ndarray  # float64[1] peak equity since the start or the last reset
    prev_equity: np.ndarray  # float64[1] equity at the previous close


class Fills(NamedTuple):
    n: np.ndarray  # int64[1]
    bar: np.ndarray  # int64[C]
    symbol: np.ndarray  # int64[C]
    side: np.ndarray  # int64[C] +1 buy, -1 sell
    qty: np.ndarray  # float64[C] absolute quantity
    price: np.ndarray  # float64[C]
    fee: np.ndarray  # float64[C]
    realized: np.ndarray  # float64[C] gross realised PnL of this fill
    kind: np.ndarray  # int64[C] FillKind
    order_type: np.ndarray  # int64[C] OrderType


class Trades(NamedTuple):
    n: np.ndarray
    symbol: np.ndarray  # int64
    side: np.ndarray  # int64 +1 long, -1 short
    entry_bar: np.ndarray  # int64
    exit_bar: np.ndarray  # int64
    entry_price: np.ndarray  # float64 average entry
    exit_price: np.ndarray  # float64 average exit
    qty: np.ndarray  # float64 total quantity opened
    pnl: np.ndarray  # float64 net: realised - fees - funding
    fees: np.ndarray  # float64
    funding: np.ndarray  # float64 paid (negative: received)
    exit_kind: np.ndarray  # int64 FillKind of the closing fill


class FundingRecords(NamedTuple):
    n: np.ndarray
    bar: np.ndarray  # int64
    symbol: np.ndarray  # int64
    qty: np.ndarray  # float64 signed position
    mark: np.ndarray  # float64
    rate: np.ndarray  # float64
    amount: np.ndarray  # float64 paid by the holder (negative: received)


class Events(NamedTuple):
    n: np.ndarray
    bar: np.ndarray  # int64
    symbol: np.ndarray  # int64 (-1: account-wide)
    code: np.ndarray  # int64 BreakerEvent
    value: np.ndarray  # float64 the measure that tripped (loss %, drawdown %, streak)


class Records(NamedTuple):
    fills: Fills
    trades: Trades
    funding: FundingRecords
    events: Events


def new_account(n_symbols: int, *, cash: float) -> Account:
    """A flat account holding ``cash`` USDT."""
    s = n_symbols
    return Account(
        wallet=np.array([float(cash)]),
        qty=np.zeros(s),
        entry_price=np.zeros(s),
        margin=np.zeros(s),
        stop=np.full(s, np.nan),
        target=np.full(s, np.nan),
        last_price=np.full(s, np.nan),
        loss_streak=np.zeros(1, dtype=np.int64),
        n_liquidations=np.zeros(1, dtype=np.int64),
        tr_entry_bar=np.full(s, -1, dtype=np.int64),
        tr_qty_in=np.zeros(s),
        tr_value_in=np.zeros(s),
        tr_qty_out=np.zeros(s),
        tr_value_out=np.zeros(s),
        tr_realized=np.zeros(s),
        tr_fees=np.zeros(s),
        tr_funding=np.zeros(s),
    )


def new_pending(n_symbols: int) -> Pending:
    s = n_symbols
    return Pending(
        active=np.zeros(s, dtype=np.bool_),
        target=np.zeros(s),
        limit_price=np.full(s, np.nan),
        atr=np.full(s, np.nan),
        bar=np.full(s, -1, dtype=np.int64),
        planned=np.zeros(s),
        planned_margin=np.zeros(s),
    )


def new_breaker(*, equity: float) -> Breaker:
    return Breaker(
        halted=np.zeros(1, dtype=np.bool_),
        halt_until=np.full(1, -1, dtype=np.int64),
        day=np.full(1, np.iinfo(np.int64).min, dtype=np.int64),
        day_start_equity=np.array([float(equity)]),
        peak=np.array([float(equity)]),
        prev_equity=np.array([float(equity)]),
    )


def new_records(*, fills: int, trades: int, funding: int, events: int) -> Records:
    """Empty record buffers with the given capacities."""

    def i(c: int) -> np.ndarray:
        return np.zeros(c, dtype=np.int64)

    def f(c: int) -> np.ndarray:
        return np.zeros(c)

    def n() -> np.ndarray:
        return np.zeros(1, dtype=np.int64)

    return Records(
        fills=Fills(
            n(),
            i(fills),
            i(fills),
            i(fills),
            f(fills),
            f(fills),
            f(fills),
            f(fills),
            i(fills),
            i(fills),
        ),
        trades=Trades(
            n(),
            i(trades),
            i(trades),
            i(trades),
            i(trades),
            f(trades),
            f(trades),
            f(trades),
            f(trades),
            f(trades),
            f(trades),
            i(trades),
        ),
        funding=FundingRecords(
            n(), i(funding), i(funding), f(funding), f(funding), f(funding), f(funding)
        ),
        events=Events(n(), i(events), i(events), i(events), f(events)),
    )


def check_capacity(records: Records) -> None:
    """Raise RuntimeError if a kernel counted more records than a buffer holds."""
    for name, buf in zip(records._fields, records, strict=True):
        count, first = int(buf[0][0]), buf[1]
        if count > len(first):
            raise RuntimeError(f"simulator {name} buffer overflow: {count} > {len(first)}")
