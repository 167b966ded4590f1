"""The rule-signal state machine as a numba step kernel and its fold.

State is the side the rules want: +1 long, -1 short, 0 flat. One step per closed bar::

    flat : long_entry and not short_entry -> long;  short_entry and not long_entry -> short
    long : short_entry and not long_entry -> short (flip);  long_exit -> flat;  else long
    short: long_entry and not short_entry -> long (flip);   short_exit -> flat; else short

A bar the symbol does not have (a gap on the shared time grid) leaves the state unchanged.
``long: RULE`` is ``long_entry: RULE`` with ``long_exit: not RULE`` (and the same for short).

The decision handed to the simulator (``direction``) depends on the rule style:

* ``hold`` (``long:``/``short:``): the state on every bar, so a position closed by a stop is
  re-opened at the next close while the rule still holds;
* ``events`` (``*_entry``/``*_exit``): the new state on the bars where it changes and NaN
  ("no decision: keep what you have") elsewhere, so after a stop the strategy waits for its
  next entry signal.

Oracle: :func:`rule_fold_py`, the same machine in plain Python (tests compare them).
"""

from __future__ import annotations

import numpy as np

from engine.kernels import kernel


@kernel(inline=True)
def rule_step_nb(state: int, le: bool, lx: bool, se: bool, sx: bool) -> int:
    """One bar of the state machine: the new side (+1, 0, -1) from the old one and the signals."""
    if state == 0:
        if le and not se:
            return 1
        if se and not le:
            return -1
        return 0
    if state > 0:
        if se and not le:
            return -1
        if lx:
            return 0
        return 1
    if le and not se:
        return 1
    if sx:
        return 0
    return -1


@kernel(inline=True)
def rule_bar_nb(
    state: int, le: bool, lx: bool, se: bool, sx: bool, events: bool
) -> tuple[int, float]:
    """One closed bar: ``(new state, direction)``; the step :func:`rule_fold_nb` folds and
    live mode calls once per bar. ``direction`` is the new state, or NaN for event rules
    whose state did not change (see the module docstring)."""
    new = rule_step_nb(state, le, lx, se, sx)
    if not events or new != state:
        return new, float(new)
    return new, np.nan


@kernel(allocates=True)
def rule_fold_nb(
    le: np.ndarray,
    lx: np.ndarray,
    se: np.ndarray,
    sx: np.ndarray,
    has_bar: np.ndarray,
    events: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold :func:`rule_step_nb` over one symbol's bars.

    Returns ``(state int8[n], direction float64[n])``; see the module docstring for
    ``direction``. ``has_bar[i]`` is False where the symbol has no bar (state kept, direction NaN).
    """
    n = le.shape[0]
    state = np.zeros(n, dtype=np.int8)
    direction = np.full(n, np.nan)
    s = 0
    for i in range(n):
        if not has_bar[i]:
            state[i] = s
            continue
        new, d = rule_bar_nb(s, le[i], lx[i], se[i], sx[i], events)
        state[i] = new
        direction[i] = d
        s = new
    return state, direction


def rule_fold_py(le, lx, se, sx, has_bar, events):  # type: ignore[no-untyped-def]
    """Plain-Python oracle of :func:`rule_fold_nb`."""
    s = 0
    states, dirs = [], []
    for a, b, c, d, h in zip(le, lx, se, sx, has_bar, strict=True):
        if not h:
            states.append(s)
            dirs.append(float("nan"))
            continue
        if s == 0:
            new = 1 if (a and not c) else (-1 if (c and not a) else 0)
        elif s > 0:
            new = -1 if (c and not a) else (0 if b else 1)
        else:
            new = 1 if (a and not c) else (0 if d else -1)
        states.append(new)
        dirs.append(float(new) if (not events or new != s) else float("nan"))
        s = new
    return np.array(states, dtype=np.int8), np.array(dirs)
