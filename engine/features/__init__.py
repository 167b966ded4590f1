"""Features: 29+ indicators as numba step kernels, one code path for batch and streaming.

Public API:

- :func:`compute` (batch over a candles frame),
- :class:`FeatureStream` (one closed bar at a time; same values),
- :func:`default_names`, :func:`check_names`, :func:`warmup_bars`.

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
from engine.features.stream import FeatureStream

__all__ = [
    "BASE_CATALOGUE",
    "FeatureSpec",
    "FeatureStream",
    "check_names",
    "compute",
    "default_names",
    "higher_timeframes",
    "parse_name",
    "warmup_bars",
]
