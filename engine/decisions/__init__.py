"""What a bar decided, and the rows both modes log for it.

The layer between the models and the runners: the backtest, sweeps and live mode all turn
a strategy graph's features into :class:`Decisions` here (rules through
:mod:`engine.decisions.signals`, ML ensembles through :mod:`engine.decisions.ml_slot`), and
build every run-log row (decisions, orders, trades, equity, events) with
:mod:`engine.decisions.records`, over whole arrays in a backtest and one bar at a time live.
"""

from __future__ import annotations

from engine.decisions.codes import ACTION, REASON, client_order_id
from engine.decisions.types import Decisions

__all__ = ["ACTION", "REASON", "Decisions", "client_order_id"]
