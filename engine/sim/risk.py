"""The risk manager as step kernels: Kelly / fixed-fraction sizing with caps, and the breaker.

Oracles: the Kelly criterion for a bet paying ``b`` to 1 won with probability ``p``,
``f* = p - (1 - p) / b`` (Kelly 1956), and the hand-computed cases and Hypothesis
properties in ``tests/sim/test_risk.py``.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel
from engine.sim.accounting import floor_qty_nb
from engine.sim.enums import BreakerEvent, Reason, Sizing

DAY_MS = 86_400_000
#: an edge this small is numerically zero (0.4 - 0.6 / 1.5 evaluates to 5.6e-17)
EDGE_EPS = 1e-12


@kernel()
def kelly_nb(p: float, b: float) -> float:
    """Full-Kelly fraction ``p - (1 - p) / b``; NaN for an undefined input (p outside
    [0, 1], b <= 0 or NaN)."""
    if np.isnan(p) or np.isnan(b) or b <= 0.0 or p < 0.0 or p > 1.0:
        return np.nan
    return p - (1.0 - p) / b


@kernel(inline=True)
def risk_hold_nb(
    direction: float,
    p: float,
    price: float,
    cur_qty: float,
    halted: bool,
    sizing: int,
    rebalance: bool,
) -> tuple[bool, float, int]:
    """The rules of :func:`risk_target_nb` that settle a target without sizing:
    ``(settled, target, reason)``; ``settled`` False means size a new position (direction
    +1/-1, not held already, the breaker not halted). The batch loop asks this first and
    gathers the caps only for a decision that needs sizing."""
    if np.isnan(direction) or np.isnan(price) or price <= 0.0:
        return True, cur_qty, Reason.NO_DECISION
    d = 1.0 if direction > 0 else (-1.0 if direction < 0 else 0.0)
    if d == 0.0:
        return True, 0.0, Reason.FLAT
    same = cur_qty != 0.0 and (cur_qty > 0) == (d > 0)
    if sizing == Sizing.KELLY and np.isnan(p):
        return True, cur_qty, Reason.NO_DECISION
    if same and not rebalance:
        return True, cur_qty, Reason.NONE
    if halted:
        if same:
            return True, cur_qty, Reason.BREAKER
        return True, 0.0, Reason.BREAKER
    return False, 0.0, Reason.NONE


#: the classes of a bar :func:`hold_classes_nb` tabulates: the direction NaN, negative, zero
#: (either sign) or positive (infinities included) with a valid price (not NaN, above 0),
#: or a price that is not valid
DIR_NAN, DIR_NEG, DIR_ZERO, DIR_POS, BAD_PRICE = 0, 1, 2, 3, 4


@kernel(inline=True)
def bar_class_nb(direction, price):  # type: ignore[no-untyped-def]
    """The class of a bar that :func:`hold_classes_nb` tabulates (``DIR_*``, ``BAD_PRICE``)."""
    if not price > 0.0:
        return BAD_PRICE
    if np.isnan(direction):
        return DIR_NAN
    if direction < 0.0:
        return DIR_NEG
    if direction > 0.0:
        return DIR_POS
    return DIR_ZERO


@kernel(inline=True)
def hold_classes_nb(cur_qty, sizing, rebalance):  # type: ignore[no-untyped-def]
    """:func:`risk_hold_nb` of a position of ``cur_qty`` that is not halted, tabulated by the
    bar's class (``DIR_*``, ``BAD_PRICE``): ``((steady,) * 5, (reason,) * 5)``, ``steady[k]``
    whether a bar of class ``k`` settles at ``cur_qty`` itself and ``reason[k]`` its reason,
    each computed by ``risk_hold_nb`` for one bar of the class. Only without a probability
    (``p`` NaN), or with a sizing other than Kelly, which does not read it.

    The table is ``risk_hold_nb`` itself because the rule reads the direction only through
    its class, the price only through whether it is valid, and ``p`` only under Kelly sizing
    (``tests/sim/test_risk.py`` checks it on random inputs). A one-symbol steady run
    (:mod:`engine.sim.fold`) asks it once and then tests each bar's class, not the rule."""
    s0, r0 = _hold_case_nb(np.nan, 1.0, cur_qty, sizing, rebalance)
    s1, r1 = _hold_case_nb(-1.0, 1.0, cur_qty, sizing, rebalance)
    s2, r2 = _hold_case_nb(0.0, 1.0, cur_qty, sizing, rebalance)
    s3, r3 = _hold_case_nb(1.0, 1.0, cur_qty, sizing, rebalance)
    s4, r4 = _hold_case_nb(1.0, np.nan, cur_qty, sizing, rebalance)
    return (s0, s1, s2, s3, s4), (r0, r1, r2, r3, r4)


@kernel(inline=True)
def _hold_case_nb(direction, price, cur_qty, sizing, rebalance):  # type: ignore[no-untyped-def]
    """:func:`hold_classes_nb`'s entry for one bar: (settles at ``cur_qty``, reason)."""
    done, held, why = risk_hold_nb(direction, np.nan, price, cur_qty, False, sizing, rebalance)
    return done and held == cur_qty, why


@kernel()
def risk_target_nb(
    direction: float,
    p: float,
    b: float,
    price: float,
    equity: float,
    cur_qty: float,
    other_notional: float,
    other_margin: float,
    halted: bool,
    sizing: int,
    fixed_fraction: float,
    kelly_fraction: float,
    leverage: float,
    taker_fee: float,
    max_position_pct: float,
    max_leverage: float,
    max_exposure_pct: float,
    rebalance: bool,
    step: float,
    min_qty: float,
    max_qty: float,
    min_notional: float,
    bracket_max_notional: float,
) -> tuple[float, int]:
    """One symbol's target position at a close, and the :data:`Reason` for it.

    Parameters
    ----------
    direction : -1, 0, +1, or NaN for "no decision" (hold the current position).
    p : probability that a position in ``direction`` is profitable (Kelly sizing only).
    b : payoff ratio (average win / average loss) for Kelly.
    price : the decision bar's close (valuation price for sizing).
    equity : account equity at that close.
    cur_qty : the symbol's current signed position.
    other_notional, other_margin : |notional| and initial margin of the account's other
        symbols (after their own decisions this bar), for the exposure and margin caps.
    halted : the circuit breaker is on: no new entry or increase; exits are allowed.

    Rules, in order: NaN direction (or NaN p under Kelly) holds; direction 0 goes flat; an
    existing position in the desired direction is held unless ``rebalance``; a halted
    breaker turns any entry, increase or flip into a close; Kelly edge <= 0 (within
    ``EDGE_EPS``) means flat;
    size = margin fraction * equity * leverage, capped by each cap (reason CAP); a size
    under minQty / MIN_NOTIONAL is flat (reason FILTER). Quantities floor to ``step``.
    """
    done, target, reason = risk_hold_nb(direction, p, price, cur_qty, halted, sizing, rebalance)
    if done:
        return target, reason
    d = 1.0 if direction > 0 else -1.0
    same = cur_qty != 0.0 and (cur_qty > 0) == (d > 0)
    if sizing == Sizing.KELLY:
        edge = kelly_nb(p, b)
        if np.isnan(edge) or edge <= EDGE_EPS:
            return 0.0, Reason.EDGE
        frac = kelly_fraction * edge
    else:
        frac = fixed_fraction
    if equity <= 0.0:
        return 0.0, Reason.FILTER
    notional = frac * equity * leverage
    cap = np.inf
    if not np.isnan(max_position_pct):
        cap = min(cap, max_position_pct * 0.01 * equity)
    if not np.isnan(max_leverage):
        cap = min(cap, max_leverage * equity)
    if not np.isnan(max_exposure_pct):
        cap = min(cap, max(max_exposure_pct * 0.01 * equity - other_notional, 0.0))
    cap = min(cap, bracket_max_notional)
    cap = min(cap, max_qty * price)
    # initial margin plus the taker fee of the entry must fit in the free margin
    free = max(equity - other_margin, 0.0)
    cap = min(cap, free / (1.0 / leverage + max(taker_fee, 0.0)))
    capped = False
    if notional > cap:
        notional = cap
        capped = True
    qty = floor_qty_nb(notional / price, step)
    if qty <= 0.0 or qty < min_qty or qty * price < min_notional:
        return 0.0, Reason.FILTER
    if same and rebalance and qty == abs(cur_qty):
        return cur_qty, Reason.CAP if capped else Reason.NONE
    return d * qty, Reason.CAP if capped else Reason.NONE


@kernel()
def _event(events, bar: int, code: int, value: float) -> None:  # type: ignore[no-untyped-def]
    k = events.n[0]
    if k < events.bar.shape[0]:
        events.bar[k] = bar
        events.symbol[k] = -1
        events.code[k] = code
        events.value[k] = value
    events.n[0] = k + 1


@kernel(inline=True)
def breaker_marks_nb(day, start, peak, prev, time_ms, equity):  # type: ignore[no-untyped-def]
    """The breaker's references after a closed bar of ``equity``: ``(day, day-start equity,
    peak)`` (the previous equity becomes ``equity``). A new UTC day (``time_ms`` the bar's
    open, -1: unknown) starts from the previous bar's equity."""
    if time_ms >= 0:
        d = time_ms // DAY_MS
        if d != day:
            day = d
            start = prev
    if equity > peak:
        peak = equity
    return day, start, peak


@kernel(inline=True)
def breaker_trip_nb(  # type: ignore[no-untyped-def]
    start, peak, streak, time_ms, equity, daily_loss_pct, max_drawdown_pct, max_loss_streak
):
    """Which rule trips the breaker at this bar, if any: ``(code, measure)``, code -1 for
    none (else a :data:`BreakerEvent`, the daily loss checked first, then the drawdown,
    then the loss streak)."""
    code = -1
    value = 0.0
    if time_ms >= 0 and not np.isnan(daily_loss_pct) and start > 0.0:
        loss = (start - equity) / start * 100.0
        if loss > daily_loss_pct:
            code = BreakerEvent.DAILY_LOSS
            value = loss
    if code < 0 and not np.isnan(max_drawdown_pct) and peak > 0.0:
        dd = (peak - equity) / peak * 100.0
        if dd > max_drawdown_pct:
            code = BreakerEvent.DRAWDOWN
            value = dd
    if code < 0 and max_loss_streak > 0 and streak >= max_loss_streak:
        code = BreakerEvent.LOSS_STREAK
        value = float(streak)
    return code, value


@kernel(inline=True)
def breaker_may_trip_nb(streak, daily_loss_pct, max_drawdown_pct, max_loss_streak):  # type: ignore[no-untyped-def]
    """Whether :func:`breaker_trip_nb` can name a rule for this loss ``streak``, whatever the
    bar's equity, time and references: False when both loss limits are off (NaN) and the
    loss-streak rule is off or not reached. Oracle: :func:`breaker_trip_nb`
    (``tests/sim/test_risk.py``)."""
    if not np.isnan(daily_loss_pct) or not np.isnan(max_drawdown_pct):
        return True
    return max_loss_streak > 0 and streak >= max_loss_streak


@kernel(inline=True)
def breaker_step_nb(
    brk,  # type: ignore[no-untyped-def]
    events,
    loss_streak: np.ndarray,
    bar: int,
    time_ms: int,
    equity: float,
    daily_loss_pct: float,
    max_drawdown_pct: float,
    max_loss_streak: int,
    cooldown_bars: int,
) -> bool:
    """Advance the circuit breaker by one closed bar; return whether entries are halted.

    Called after the bar is marked to market, before the bar's decisions. Trips (when not
    already halted) on: the loss since the UTC day's first open above ``daily_loss_pct``
    (``time_ms`` is the bar's open time; pass -1 to skip the daily rule), the drawdown
    from the peak equity above ``max_drawdown_pct``, or ``max_loss_streak`` consecutive
    losing trades. A trip at bar t halts the decisions of bars t .. t+cooldown-1, so the
    first new entry can fill at the open of bar t+cooldown+1. At bar t+cooldown the halt is
    lifted and the references restart: peak and day-start equity become the current
    equity and the loss streak is zeroed. Every trip and every reset is written to
    ``events`` (symbol -1, code :data:`BreakerEvent`, value = the measure).
    """
    day, start, peak = breaker_marks_nb(
        brk.day[0], brk.day_start_equity[0], brk.peak[0], brk.prev_equity[0], time_ms, equity
    )
    brk.day[0] = day
    brk.day_start_equity[0] = start
    brk.peak[0] = peak
    brk.prev_equity[0] = equity
    if brk.halted[0]:
        if bar >= brk.halt_until[0]:
            brk.halted[0] = False
            brk.peak[0] = equity
            brk.day_start_equity[0] = equity
            loss_streak[0] = 0
            _event(events, bar, BreakerEvent.RESET, equity)
        else:
            return True
    code, value = breaker_trip_nb(
        brk.day_start_equity[0], brk.peak[0], loss_streak[0], time_ms, equity, daily_loss_pct,
        max_drawdown_pct, max_loss_streak,
    )  # fmt: skip
    if code >= 0:
        brk.halted[0] = True
        brk.halt_until[0] = bar + cooldown_bars
        _event(events, bar, code, value)
        return True
    return False
