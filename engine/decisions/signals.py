"""Rules -> the four signals -> the rule state machine: one mapping for both modes.

A strategy's rules are either held states (``long:``/``short:``, entry while true and exit
while false) or events (``long_entry``/``long_exit``/``short_entry``/``short_exit``); the
schema forbids mixing them. :func:`rule_signals` evaluates them over equal-length columns
(a backtest passes a symbol's whole history, live mode the last ``graph.lookback`` rows and
reads the last value: a rule's value at a row depends on its ``lookback`` rows only, see
:mod:`engine.strategy.expr`). The state machine that turns them into a side and a
direction is :mod:`engine.strategy.rules_nb` (``rule_bar_nb`` for one bar, its fold for
many).
"""

from __future__ import annotations

import numpy as np

from engine.strategy.graph import StrategyGraph


def rule_signals(
    graph: StrategyGraph, columns: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(long_entry, long_exit, short_entry, short_exit)`` as bool arrays over ``columns``."""
    n = len(next(iter(columns.values())))
    r = graph.rules
    false = np.zeros(n, dtype=bool)
    if "long" in r:
        le = r["long"].evaluate(columns)
        lx = ~le
    else:
        le = r["long_entry"].evaluate(columns) if "long_entry" in r else false
        lx = r["long_exit"].evaluate(columns) if "long_exit" in r else false
    if "short" in r:
        se = r["short"].evaluate(columns)
        sx = ~se
    else:
        se = r["short_entry"].evaluate(columns) if "short_entry" in r else false
        sx = r["short_exit"].evaluate(columns) if "short_exit" in r else false
    return le, lx, se, sx


def event_rules(graph: StrategyGraph) -> bool:
    """True for entry/exit rules (a decision only where the state changes)."""
    return "long" not in graph.rules and "short" not in graph.rules
