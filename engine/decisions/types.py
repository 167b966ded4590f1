"""The graph's output per bar and symbol: :class:`Decisions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True, eq=False)
class Decisions:
    """The graph's output per bar and symbol, on the market grid ([n_bars, n_symbols]).

    Attributes
    ----------
    state : int8, the side the strategy wants (+1 long, -1 short, 0 flat): the log's action.
    direction : float64, what the simulator receives (+1/0/-1; NaN: no decision, hold).
    probability : float64, P(the position is profitable) for Kelly sizing (NaN for rules).
    confidence : float64, logged confidence (1 for rules).
    extra : more ``ensemble_decisions`` columns by name, each [n, S] (ML ensembles).
    predictions : ``model_predictions`` rows (ML ensembles), or None.
    ml : the ML stage's :class:`engine.ml.EnsembleResult` (fold metrics, calibration curve,
        contributions, events) for the run log and the summary, or None for rule strategies.
    """

    state: np.ndarray
    direction: np.ndarray
    probability: np.ndarray
    confidence: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: pl.DataFrame | None = None
    ml: Any = None
