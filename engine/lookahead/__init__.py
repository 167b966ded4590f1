"""``engine lookahead``: the whole-graph prefix-invariance check as a user command.

:func:`lookahead_check` runs a strategy graph over its span and over random prefixes of it
and reports every feature, model prediction and decision that differs on the shared bars.
See ``docs/architecture.md`` ("Lookahead check").
"""

from engine.lookahead.check import Cut, LookaheadReport, lookahead_check, pick_cuts, pick_edges
from engine.lookahead.compare import Difference, compare_outputs, differ
from engine.lookahead.outputs import Column, GraphOutputs, edge_bars, run_outputs

__all__ = [
    "Column",
    "Cut",
    "Difference",
    "GraphOutputs",
    "LookaheadReport",
    "compare_outputs",
    "differ",
    "edge_bars",
    "lookahead_check",
    "pick_cuts",
    "pick_edges",
    "run_outputs",
]
