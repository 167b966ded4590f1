"""Prophet on the hourly close: fitted at the cutoff, its forecast stored, prediction a lookup.

At fit time (the fold's cutoff) Prophet is fitted on ``log(close)`` of the hourly closes of
the last ``window`` before the cutoff (MAP fit, ``mcmc_samples=0``, ``uncertainty_samples=0``;
the interval comes from the in-sample residual sigma instead of sampling), and the forecast
``yhat`` is computed once for every horizon-end time the fold's bars can need
(``TrainSet.forecast_times``). It is saved beside the model (``prophet.json`` via
``prophet.serialize.model_to_json``; ``forecast.npz``; ``meta`` holds sigma).

Predicting bar t (close ``c_t``, open time ``o_t``) is a lookup of ``yhat(T)`` at the bar's
label horizon end ``T = o_t + (h + 1) * interval`` and a normal model of the forecast error:
with ``mu = yhat(T) - log(c_t)`` and ``sigma`` the residual std,
``P_up = 1 - Phi((tau - mu) / sigma)``, ``P_down = Phi((-tau - mu) / sigma)`` and
P(up) = ``P_up / (P_up + P_down)`` when flat labels are dropped (``Phi(mu / sigma)``
otherwise), i.e. the probability of the label's class under the forecast, computed in log
space (``scipy.special.log_ndtr``) and clipped to ``[1e-9, 1 - 1e-9]``. The residual sigma
does not widen with the forecast distance, so raw probabilities are overconfident late in
a fold; the out-of-fold calibration corrects that. A bar whose T is
outside the stored forecast abstains (NaN).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import RunError
from engine.ml.models.base import Segment, TrainSet, read_json, write_json


def _quiet_stan() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.ERROR)
        lg.propagate = False
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.addHandler(logging.NullHandler())


#: probabilities are kept inside [P_CLIP, 1 - P_CLIP] (a forecast far from the price)
P_CLIP = 1e-9


def _to_ds(ms: np.ndarray) -> Any:
    import pandas as pd

    return pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms")


class ProphetModel:
    kind = "prophet"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = dict(params)
        self.times: np.ndarray = np.empty(0, dtype=np.int64)
        self.yhat: np.ndarray = np.empty(0)
        self.sigma = float("nan")
        self.tau = 0.0
        self.drop_flat = True
        self.horizon = 1
        self.interval_ms = 300_000
        self._model_json: str | None = None

    def fit(self, train: TrainSet, *, seed: int, threads: int) -> ProphetModel:
        import pandas as pd

        assert train.hourly_time is not None and train.hourly_close is not None
        assert train.forecast_times is not None
        if train.hourly_time.shape[0] < 48:
            raise RunError(
                f"prophet: only {train.hourly_time.shape[0]} hourly closes before the cutoff",
                hint="lengthen the prophet window or training.warmup (at least 2 days of hours)",
            )
        from prophet import Prophet
        from prophet.serialize import model_to_json

        _quiet_stan()
        p = self.params
        m = Prophet(
            growth="linear",
            n_changepoints=p["n_changepoints"],
            changepoint_prior_scale=p["changepoint_prior_scale"],
            daily_seasonality=p["daily_seasonality"],
            weekly_seasonality=p["weekly_seasonality"],
            yearly_seasonality=False,
            seasonality_mode=p["seasonality_mode"],
            mcmc_samples=0,
            uncertainty_samples=0,
        )
        df = pd.DataFrame({"ds": _to_ds(train.hourly_time), "y": np.log(train.hourly_close)})
        m.fit(df, seed=seed)
        fitted = m.predict(df[["ds"]])["yhat"].to_numpy(dtype=np.float64)
        fc = m.predict(pd.DataFrame({"ds": _to_ds(train.forecast_times)}))
        self._model_json = model_to_json(m)
        resid = df["y"].to_numpy(dtype=np.float64) - fitted
        self.sigma = float(max(np.std(resid), 1e-6))
        self.times = np.asarray(train.forecast_times, dtype=np.int64)
        self.yhat = fc["yhat"].to_numpy(dtype=np.float64)
        self.tau = float(train.tau)
        self.drop_flat = bool(train.drop_flat)
        self.horizon = int(train.horizon)
        self.interval_ms = int(train.interval_ms)
        return self

    def predict_proba(self, seg: Segment) -> np.ndarray:
        n = len(seg)
        out = np.full(n, np.nan)
        if n == 0 or self.times.shape[0] == 0:
            return out
        target = seg.open_time.astype(np.int64) + (self.horizon + 1) * self.interval_ms
        idx = np.searchsorted(self.times, target)
        idx_c = np.minimum(idx, self.times.shape[0] - 1)
        hit = (idx < self.times.shape[0]) & (self.times[idx_c] == target) & (seg.close > 0)
        if not hit.any():
            return out
        from scipy.special import expit, log_ndtr

        mu = self.yhat[idx_c[hit]] - np.log(seg.close[hit])
        s = self.sigma
        if self.drop_flat:  # in log space: both tails can underflow far from the forecast
            log_up = log_ndtr((mu - self.tau) / s)
            log_dn = log_ndtr((-self.tau - mu) / s)
            p = expit(log_up - log_dn)
        else:
            p = np.exp(log_ndtr(mu / s))
        out[hit] = np.clip(p, P_CLIP, 1.0 - P_CLIP)
        return out

    def save(self, path: Path) -> None:
        if self._model_json is not None:
            (path / "prophet.json").write_text(self._model_json)
        np.savez(path / "forecast.npz", times=self.times, yhat=self.yhat)
        write_json(
            path / "forecast.json",
            {
                "sigma": self.sigma,
                "tau": self.tau,
                "drop_flat": self.drop_flat,
                "horizon": self.horizon,
                "interval_ms": self.interval_ms,
            },
        )

    @classmethod
    def load(cls, path: Path, params: dict[str, Any], *, threads: int = 1) -> ProphetModel:
        """Load the stored forecast (the Prophet model itself is not needed to predict)."""
        m = cls(params)
        with np.load(path / "forecast.npz") as z:
            m.times = z["times"]
            m.yhat = z["yhat"]
        meta = read_json(path / "forecast.json")
        m.sigma = float(meta["sigma"])
        m.tau = float(meta["tau"])
        m.drop_flat = bool(meta["drop_flat"])
        m.horizon = int(meta["horizon"])
        m.interval_ms = int(meta["interval_ms"])
        return m

    @staticmethod
    def load_prophet(path: Path) -> Any:
        """The fitted Prophet object (``prophet.serialize.model_from_json``)."""
        from prophet.serialize import model_from_json

        return model_from_json((path / "prophet.json").read_text())
