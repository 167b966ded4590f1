"""Training labels: forward return over ``horizon`` bars, net of round-trip costs.

For bar t (closes ``c``) and horizon h: ``r_t = log(c[t+h] / c[t])`` (``returns: log``) or
``c[t+h] / c[t] - 1`` (``returns: simple``); NaN for the last h bars. With
``tau = (cost_bps + flat_band_bps) / 1e4`` the class is 1 (up) when ``r_t > tau``, 0 (down)
when ``r_t < -tau``, and otherwise flat: NaN when ``drop_flat`` (the row is not trained on),
else ``1`` if ``r_t > 0`` and ``0`` otherwise.

The label of bar t uses closes t..t+h, so it becomes known at the close of bar t+h, i.e. at
time ``open_time[t] + (h + 1) * interval``: :func:`label_known_at`. Labels are used for
training, calibration and scoring only; they never enter a prediction.
"""

from __future__ import annotations

import numpy as np

from engine.strategy.ml_config import LabelsConfig


def forward_returns(close: np.ndarray, *, horizon: int, kind: str = "log") -> np.ndarray:
    """Gross forward return of each bar over ``horizon`` bars (NaN where unknown).

    Oracle: ``pandas.Series(close).shift(-h) / close`` (log of it for ``kind='log'``).

    >>> forward_returns(np.array([1.0, 2.0, 4.0]), horizon=1, kind="simple").tolist()
    [1.0, 1.0, nan]
    """
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape[0], np.nan)
    if horizon < close.shape[0]:
        ratio = close[horizon:] / close[:-horizon]
        out[:-horizon] = np.log(ratio) if kind == "log" else ratio - 1.0
    return out


def classify(returns: np.ndarray, cfg: LabelsConfig) -> np.ndarray:
    """Classes (1.0 up, 0.0 down, NaN flat-dropped or unknown) from forward returns."""
    r = np.asarray(returns, dtype=np.float64)
    tau = (cfg.cost_bps + cfg.flat_band_bps) / 1e4
    y = np.full(r.shape[0], np.nan)
    y[r > tau] = 1.0
    y[r < -tau] = 0.0
    if not cfg.drop_flat:
        flat = np.isfinite(r) & (np.abs(r) <= tau)
        y[flat] = (r[flat] > 0).astype(np.float64)
    return y


def make_labels(close: np.ndarray, cfg: LabelsConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(forward_returns, classes)`` for a close series, per :class:`LabelsConfig`."""
    r = forward_returns(close, horizon=cfg.horizon, kind=cfg.returns)
    return r, classify(r, cfg)


def label_known_at(open_time: np.ndarray, *, horizon: int, interval_ms: int) -> np.ndarray:
    """Time (ms) at which each bar's label becomes known: the close of bar t+h."""
    return np.asarray(open_time, dtype=np.int64) + (horizon + 1) * interval_ms
