"""Typed configuration of the ML stage: labels, walk-forward training, model nodes, ensemble.

The backtest engineer imports these models into ``engine/strategy/config.py`` as the optional
top-level sections ``labels`` (:class:`LabelsConfig`), ``training`` (:class:`TrainingConfig`),
``models`` (:data:`ModelList`, a list of :class:`ModelNode`) and ``ensemble``
(:class:`EnsembleConfig`) of a strategy YAML. All models are pydantic v2, frozen, and reject
unknown keys (``extra="forbid"``); per-kind model parameters are validated against the kind's
own parameter model, so ``num_leafs`` under a ``lightgbm`` node is an error that names the
closest valid key.

Spans (``train_window``, ``retrain_every``, ``embargo``, ``warmup``) are either an integer
number of base-interval bars or a duration string ``<n><unit>`` with unit ``m`` (minutes),
``h``, ``d`` or ``w`` (``"30d"``). They become milliseconds once the base interval is known
(:func:`span_ms`); a duration must be a whole number of bars.

Example YAML::

    labels: {horizon: 12, cost_bps: 8, flat_band_bps: 0}
    training: {train_window: 60d, retrain_every: 30d, embargo: 1h, seed: 7, threads: 1}
    models:
      - {kind: lightgbm, name: lgb, params: {n_estimators: 200, num_leaves: 15}}
      - {kind: prophet, name: prophet, params: {window: 60d}}
    ensemble:
      calibration: isotonic
      fusion: bayesian
      gate: {max_uncertainty: 0.999, min_agreement: 0.5, min_edge: 0.0}
"""

from __future__ import annotations

import difflib
import re
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_SPAN_RE = re.compile(r"^(\d+)([mhdw])$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _check_span(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of bars or a duration like '30d', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be >= 0 bars, got {value}")
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if not _SPAN_RE.match(text):
        raise ValueError(
            f"expected a number of bars or a duration <n><m|h|d|w> such as '30d' or '12h', got {value!r}"
        )
    return text


Span = Annotated[int | str, AfterValidator(_check_span)]
"""A number of base-interval bars (int) or a duration string such as ``"30d"``."""


def span_ms(span: int | str, interval_ms: int, *, where: str = "span") -> int:
    """Convert a :data:`Span` into milliseconds for bars of ``interval_ms``.

    >>> span_ms("1h", 300_000), span_ms(12, 300_000)
    (3600000, 3600000)
    """
    from engine.errors import ConfigError

    if isinstance(span, int):
        return span * interval_ms
    m = _SPAN_RE.match(span)
    assert m is not None
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms % interval_ms:
        raise ConfigError(
            f"{where}: {span!r} is not a whole number of {interval_ms // 60_000}m bars",
            hint="use a duration that is a multiple of the base interval, or a number of bars",
        )
    return ms


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelsConfig(_Frozen):
    """Training labels: the forward return of bar t over ``horizon`` bars, net of costs.

    ``r_t = log(close[t+h] / close[t])`` (or the simple return). With
    ``tau = (cost_bps + flat_band_bps) / 1e4``: class 1 (up) when ``r_t > tau``, class 0 (down)
    when ``r_t < -tau``; otherwise the bar is flat and is dropped from training when
    ``drop_flat`` (else labelled by the sign of ``r_t``). The label of bar t uses closes
    t..t+h, so it is known only at the close of bar t+h.
    """

    horizon: int = Field(12, ge=1, le=10_000, description="bars ahead")
    cost_bps: float = Field(8.0, ge=0.0, le=1_000.0, description="round-trip cost in bps")
    flat_band_bps: float = Field(0.0, ge=0.0, le=10_000.0, description="extra dead band in bps")
    drop_flat: bool = True
    returns: Literal["log", "simple"] = "log"


class TrainingConfig(_Frozen):
    """Walk-forward schedule, anchored to the run's start.

    Fold k has ``cutoff_k = start + warmup + k * retrain_every`` (``warmup`` defaults to
    ``train_window``). See :mod:`engine.ml.walkforward` for the exact row rules.
    """

    train_window: Span = "60d"
    retrain_every: Span = "30d"
    embargo: Span = 0
    warmup: Span | None = None
    min_train_rows: int = Field(500, ge=10)
    row_stride: int = Field(1, ge=1, le=1_000, description="train on every n-th eligible row")
    seed: int = Field(7, ge=0, le=2**31 - 1)
    threads: int = Field(1, ge=1, le=64, description="threads per model fit")
    workers: int = Field(
        1, ge=1, le=64,
        description="fold fits run in parallel (processes); symbols predicted at once (threads)")
    executor: Literal["local", "ray"] = Field(
        "local", description="where fold fits run: local (workers processes) or ray (RAY_ADDRESS)"
    )

    @field_validator("retrain_every")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if v == 0 or (isinstance(v, str) and int(_SPAN_RE.match(v).group(1)) == 0):  # type: ignore[union-attr]
            raise ValueError("must be > 0")
        return v


# ---------------------------------------------------------------- per-kind model parameters


class LightGBMParams(_Frozen):
    n_estimators: int = Field(200, ge=1, le=20_000)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    num_leaves: int = Field(15, ge=2, le=4096)
    max_depth: int = Field(-1, ge=-1, le=64)
    min_data_in_leaf: int = Field(100, ge=1)
    feature_fraction: float = Field(0.8, gt=0.0, le=1.0)
    bagging_fraction: float = Field(0.8, gt=0.0, le=1.0)
    bagging_freq: int = Field(1, ge=0)
    lambda_l1: float = Field(0.0, ge=0.0)
    lambda_l2: float = Field(1.0, ge=0.0)


class XGBoostParams(_Frozen):
    n_estimators: int = Field(200, ge=1, le=20_000)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    max_depth: int = Field(4, ge=1, le=32)
    min_child_weight: float = Field(5.0, ge=0.0)
    subsample: float = Field(0.8, gt=0.0, le=1.0)
    colsample_bytree: float = Field(0.8, gt=0.0, le=1.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    reg_alpha: float = Field(0.0, ge=0.0)
    max_bin: int = Field(128, ge=2, le=4096)


class ProphetParams(_Frozen):
    window: Span = Field("60d", description="hourly closes used per fit")
    changepoint_prior_scale: float = Field(0.05, gt=0.0)
    n_changepoints: int = Field(10, ge=0, le=200)
    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"


class MLPParams(_Frozen):
    hidden_layer_sizes: tuple[int, ...] = (32, 16)
    alpha: float = Field(1e-3, ge=0.0)
    learning_rate_init: float = Field(1e-3, gt=0.0)
    max_iter: int = Field(60, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1)
    tol: float = Field(1e-4, gt=0.0)

    @field_validator("hidden_layer_sizes")
    @classmethod
    def _layers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(n < 1 or n > 4096 for n in v):
            raise ValueError(f"expected 1 to n layers of 1..4096 units, got {list(v)}")
        return v


class NoParams(_Frozen):
    pass


ModelKind = Literal["lightgbm", "xgboost", "prophet", "mlp", "onnx", "remote"]
PARAMS_BY_KIND: dict[str, type[_Frozen]] = {
    "lightgbm": LightGBMParams,
    "xgboost": XGBoostParams,
    "prophet": ProphetParams,
    "mlp": MLPParams,
    "onnx": NoParams,
    "remote": NoParams,
}


def _params_error(kind: str, err: ValidationError) -> ValueError:
    cls = PARAMS_BY_KIND[kind]
    valid = list(cls.model_fields)
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][0]), valid, n=1)
            tip = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(
                f"unknown {kind} parameter {key!r}{tip} (valid: {', '.join(valid) or 'none'})"
            )
        else:
            lines.append(f"{key}: {e['msg']}, got {e.get('input')!r}")
    return ValueError("; ".join(lines))


def public_url(url: str) -> str:
    """``url`` as it may be shown and logged: scheme, host, port and path, without the
    credentials (``user:secret@``), query or fragment a user may have put in it.

    >>> public_url("http://bot:s3cret@10.0.0.5:8765/models/?token=x")
    'http://10.0.0.5:8765/models'
    """
    p = urllib.parse.urlsplit(url.strip())
    host = p.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host if p.port is None else f"{host}:{p.port}"
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path.rstrip("/"), "", ""))


class ModelNode(_Frozen):
    """One model of the ensemble; it yields P(up) per bar (NaN = abstain).

    ``kind``: ``lightgbm`` / ``xgboost`` / ``mlp`` (trained walk-forward on the feature
    matrix), ``prophet`` (trained walk-forward on the hourly close), ``onnx`` (a user's
    pre-trained classifier at ``path``, inputs = ``features`` in that order) or ``remote``
    (HTTP ``POST {url}/predict`` with ``timeout_s``, the whole request's deadline, retries
    included; abstains on failure). Credentials in the url (``http://user:secret@host``) are
    sent as HTTP Basic authorization and never logged (:func:`public_url`).
    """

    kind: ModelKind
    name: str = Field("", pattern=r"^$|^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
    params: dict[str, Any] = Field(default_factory=dict)
    features: list[str] | None = None
    path: str | None = None
    url: str | None = None
    timeout_s: float = Field(1.0, gt=0.0, le=300.0)

    @model_validator(mode="after")
    def _check(self) -> ModelNode:
        cls = PARAMS_BY_KIND[self.kind]
        try:
            typed = cls.model_validate(self.params)
        except ValidationError as err:
            raise _params_error(self.kind, err) from None
        object.__setattr__(self, "params", typed.model_dump(mode="json"))
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        if self.kind == "onnx" and not self.path:
            raise ValueError("an onnx model needs 'path' (the .onnx file of your classifier)")
        if self.kind == "remote" and not self.url:
            raise ValueError("a remote model needs 'url' (e.g. http://127.0.0.1:8765)")
        if self.kind not in ("onnx",) and self.path is not None:
            raise ValueError(f"'path' is only for onnx models, not {self.kind}")
        if self.kind != "remote" and self.url is not None:
            raise ValueError(f"'url' is only for remote models, not {self.kind}")
        if self.kind == "prophet" and self.features is not None:
            raise ValueError("prophet uses the hourly close only; remove 'features'")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("'features' lists a name twice")
        return self

    def typed_params(self) -> Any:
        """The params as the kind's typed model (e.g. :class:`LightGBMParams`)."""
        return PARAMS_BY_KIND[self.kind].model_validate(self.params)

    @property
    def trained(self) -> bool:
        """True for kinds trained walk-forward by the engine (not onnx/remote)."""
        return self.kind in ("lightgbm", "xgboost", "prophet", "mlp")


def _unique_names(models: list[ModelNode]) -> list[ModelNode]:
    names = [m.name for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"model names must be unique; {dup[0]!r} appears twice (set 'name:')")
    return models


ModelList = Annotated[list[ModelNode], AfterValidator(_unique_names)]
"""The ``models:`` section: model nodes with unique names."""


class GateConfig(_Frozen):
    """When the ensemble goes flat: see :mod:`engine.ml.ensemble` for the exact quantities."""

    max_uncertainty: float = Field(1.0, ge=0.0, le=1.0)
    min_agreement: float = Field(0.0, ge=0.0, le=1.0)
    min_edge: float = Field(0.0, ge=-1.0, le=100.0, description="min expected value p*b-(1-p)")
    min_edge_bps: float = Field(
        0.0,
        ge=-10_000.0,
        le=10_000.0,
        description="min expected net return of the round trip in bps, after fees and slippage",
    )


class MetaConfig(_Frozen):
    """The ``stacked_lgbm`` meta-learner: a small LightGBM on the members' out-of-fold
    calibrated probabilities and the strategy's regime features, refitted at each cutoff."""

    n_estimators: int = Field(200, ge=1, le=5_000, description="upper bound; early-stopped")
    learning_rate: float = Field(0.03, gt=0.0, le=1.0)
    num_leaves: int = Field(4, ge=2, le=256)
    min_data_in_leaf: int = Field(2000, ge=1)
    lambda_l2: float = Field(10.0, ge=0.0)
    holdout: float = Field(0.25, gt=0.0, lt=1.0, description="newest share for early stopping")


class EnsembleConfig(_Frozen):
    """Calibration, fusion, the uncertainty gate and the payoff estimate.

    ``regime_features``: feature columns the ``stacked_lgbm`` meta-learner reads beside the
    members' probabilities (volatility, trend strength, funding). ``trade_cost_bps``: the
    round trip's fees and slippage the net-edge gate subtracts; ``None`` takes them from the
    strategy's ``execution`` section (2 x taker fee + 2 x slippage). ``pool_map_min_rows``:
    out-of-fold bars (every symbol's together, where the pool forecast something other than the
    base rate) before the bayesian pool's map (slope and saturation,
    :func:`engine.ml.ensemble.fit_pool_map`) is fitted at a cutoff; ``None`` keeps the identity.
    """

    calibration: Literal["isotonic", "platt", "none"] = "isotonic"
    fusion: Literal["bayesian", "weighted", "stacked", "stacked_lgbm"] = "bayesian"
    regime_features: list[str] = Field(default_factory=list)
    meta: MetaConfig = MetaConfig()
    trade_cost_bps: float | None = Field(None, ge=0.0, le=10_000.0)
    min_skill_labels: int = Field(
        288, ge=1, description="matured labels a member's skill needs before it gets a weight"
    )
    weights: dict[str, float] | None = None
    gate: GateConfig = GateConfig()
    payoff_lookback: int = Field(2016, ge=10, le=1_000_000, description="matured labels for b")
    min_calibration_rows: int = Field(500, ge=20)
    reliability_prior: tuple[float, float] = (2.0, 2.0)
    reliability_halflife: int | None = Field(None, ge=1, description="matured labels")
    pool_map_min_rows: int | None = Field(
        20_000,
        ge=20,
        description="out-of-fold bars (every symbol's together) the bayesian pool's map needs "
        "before it is fitted (null: never; the pool is then the members' skill-weighted "
        "log-odds as they are)",
    )

    @model_validator(mode="after")
    def _check(self) -> EnsembleConfig:
        if self.fusion == "weighted" and not self.weights:
            raise ValueError("fusion 'weighted' needs 'weights' ({model name: weight})")
        if self.weights is not None:
            bad = {k: v for k, v in self.weights.items() if not v >= 0}
            if bad:
                k = next(iter(bad))
                raise ValueError(f"weights.{k}: must be >= 0, got {bad[k]}")
            if not sum(self.weights.values()) > 0:
                raise ValueError("weights: at least one weight must be > 0")
        a, b = self.reliability_prior
        if not (a > 0 and b > 0):
            raise ValueError(f"reliability_prior: both must be > 0, got {[a, b]}")
        return self


class MLSections(_Frozen):
    """The four ML sections together (what :func:`engine.ml.run_ensemble` reads)."""

    labels: LabelsConfig = LabelsConfig()
    training: TrainingConfig = TrainingConfig()
    models: ModelList
    ensemble: EnsembleConfig = EnsembleConfig()

    @model_validator(mode="after")
    def _check(self) -> MLSections:
        if not self.models:
            raise ValueError("models: at least one model is needed")
        if self.ensemble.weights is not None:
            names = [m.name for m in self.models]
            for k in self.ensemble.weights:
                if k not in names:
                    close = difflib.get_close_matches(k, names, n=1)
                    tip = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"ensemble.weights.{k}: no model named {k!r}{tip}")
        return self
