"""The ML stage's inputs: a symbol's candles and features checked, aligned and turned into
arrays (per-model feature matrices, labels, hourly closes).

:func:`prepare_symbol` is the batch door (polars frames); :func:`symbol_data` builds the same
:class:`SymbolData` from arrays, which live mode uses as its history grows.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ConfigError, DataError
from engine.kernels import writable
from engine.ml.labels import make_labels
from engine.ml.models.base import Segment
from engine.strategy.ml_config import MLSections
from engine.timeutil import fmt_ms

HOUR_MS = 3_600_000
#: the key of the stacked meta-learner's regime features in the per-model feature lists
REGIME = "__regime__"


def as_sections(config: Any) -> MLSections:
    """The ML sections of a strategy config (or an :class:`MLSections` as is)."""
    if isinstance(config, MLSections):
        return config
    models = getattr(config, "models", None)
    if not models:
        raise ConfigError(
            "the strategy has no 'models:' section, so there is no ML stage to run",
            hint="add models (see strategies/ensemble.yaml) or remove the ML sections",
        )
    kw: dict[str, Any] = {"models": list(models)}
    for key in ("labels", "training", "ensemble"):
        val = getattr(config, key, None)
        if val is not None:
            kw[key] = val
    return MLSections(**kw)


@dataclass
class SymbolData:
    """One symbol's aligned inputs: bars, per-model feature matrices, labels, hourly closes."""

    symbol: str
    interval_ms: int
    open_time: np.ndarray
    close: np.ndarray
    X: dict[str, np.ndarray]
    fwd: np.ndarray
    y: np.ndarray
    hourly_time: np.ndarray
    hourly_close: np.ndarray

    def segment(self, name: str, sl: slice | np.ndarray) -> Segment:
        return Segment(self.open_time[sl], self.close[sl], self.X[name][sl])


def resolve_features(ml: MLSections, available: list[str]) -> dict[str, list[str]]:
    """Feature list of each model (its ``features:`` or every feature column)."""
    out: dict[str, list[str]] = {}
    for i, node in enumerate(ml.models):
        if node.kind == "prophet":
            out[node.name] = []
            continue
        names = list(node.features) if node.features is not None else list(available)
        _require_computed(names, available, f"models[{i}].features")
        out[node.name] = names
    regime = list(ml.ensemble.regime_features)
    _require_computed(regime, available, "ensemble.regime_features")
    out[REGIME] = regime
    return out


def _require_computed(names: list[str], available: list[str], where: str) -> None:
    """ConfigError (``where``: the config key) for the first name that is not a computed
    feature, with the closest one."""
    for n in names:
        if n not in available:
            close = difflib.get_close_matches(n, available, n=1)
            tip = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where}: {n!r} is not a computed feature{tip}",
                hint="list features the strategy's features section computes",
            )


def prepare_symbol(
    symbol: str, frame: Any, features: Any, ml: MLSections, *, interval_ms: int | None = None
) -> tuple[SymbolData, dict[str, list[str]]]:
    """Check and align a symbol's candles and features; compute labels and hourly closes."""
    # writable: polars' zero-copy arrays are read-only, and the kernels would compile again
    ot = writable(np.asarray(frame["open_time"].to_numpy(), dtype=np.int64))
    close = writable(np.asarray(frame["close"].to_numpy(), dtype=np.float64))
    if ot.shape[0] < 2:
        raise DataError(f"{symbol}: need at least 2 bars for the ML stage, got {ot.shape[0]}")
    d = np.diff(ot)
    step = int(interval_ms) if interval_ms else int(d.min())
    bad = np.flatnonzero(d != step)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{symbol}: the ML stage needs a regular bar grid; bars jump from {fmt_ms(int(ot[i]))} "
            f"to {fmt_ms(int(ot[i + 1]))} ({int(d[i]) // 60_000} min, expected {step // 60_000})",
            hint="fill the gap (engine data download/import) or run `engine data check` to see all gaps",
        )
    fot = np.asarray(features["open_time"].to_numpy(), dtype=np.int64)
    if fot.shape != ot.shape or not np.array_equal(fot, ot):
        raise DataError(
            f"{symbol}: features and candles are not aligned ({fot.shape[0]} vs {ot.shape[0]} rows)",
            hint="compute features from the same candle frame (engine.features.compute)",
        )
    available = [c for c in features.columns if c != "open_time"]
    feats = resolve_features(ml, available)
    Xall = (
        np.ascontiguousarray(features.select(available).to_numpy().astype(np.float64, copy=False))
        if available
        else np.empty((ot.shape[0], 0))
    )
    return symbol_data(symbol, step, ot, close, Xall, available, feats, ml), feats


def symbol_data(
    symbol: str,
    step: int,
    ot: np.ndarray,
    close: np.ndarray,
    Xall: np.ndarray,
    available: list[str],
    feats: dict[str, list[str]],
    ml: MLSections,
) -> SymbolData:
    """Build :class:`SymbolData` from arrays (batch and live share this)."""
    col = {n: i for i, n in enumerate(available)}
    X: dict[str, np.ndarray] = {}
    cache: dict[tuple[str, ...], np.ndarray] = {}
    for name, cols in feats.items():
        key = tuple(cols)
        if key not in cache:
            if cols == available:
                cache[key] = Xall
            elif cols:
                cache[key] = np.ascontiguousarray(Xall[:, [col[c] for c in cols]])
            else:
                cache[key] = np.empty((ot.shape[0], 0))
        X[name] = cache[key]
    fwd, y = make_labels(close, ml.labels)
    hourly = (ot + step) % HOUR_MS == 0
    return SymbolData(symbol, step, ot, close, X, fwd, y, ot[hourly] + step, close[hourly])
