"""Features: 29+ indicators as numba step kernels, one code path for batch and streaming.

Public API:

- :func:`compute` (batch over a candles frame),
- :class:`FeatureStream` (one closed bar at a time; same values),
- :func:`default_names`, :func:`check_names`, :func:`warmup_bars`,
- :data:`FUNDING_PERIOD_MS` (funding every 8 h, at 00, 08 and 16 UTC).

Modules: ``catalogue`` (names, plans), ``batch`` (:func:`compute`), ``stream``
(:class:`FeatureStream`); the numba kernels by kind: ``kinds`` (codes, warm-ups),
``indicators_nb`` (step kernels), ``indicators_batch_nb`` (their batch folds), ``htf_nb``
(higher-timeframe bars), ``plan_nb`` (the plan's step and fold).

See ``docs/architecture.md`` ("Features") for the semantics: warm-up, NaN bars, higher
timeframes, funding.
"""

from __future__ import annotations

from engine.features.batch import compute
from engine.features.catalogue import (
    BASE_CATALOGUE,
    FeatureSpec,
    check_names,
    default_names,
    higher_timeframes,
    parse_name,
    warmup_bars,
)
from engine.features.kinds import FUNDING_PERIOD_MS
from engine.features.stream import FeatureStream

__all__ = [
    "BASE_CATALOGUE",
    "FUNDING_PERIOD_MS",
    "FeatureSpec",
    "FeatureStream",
    "check_names",
    "compute",
    "default_names",
    "higher_timeframes",
    "parse_name",
    "warmup_bars",
]
