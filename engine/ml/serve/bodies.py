"""Request bodies of ``engine serve-model``, checked at the door, and the errors it answers.

The bodies are pydantic models in strict mode (a number must be a JSON number: ``"1.5"``,
``true`` and ``1.0`` for an integer are refused) that forbid unknown fields. A body that
does not fit becomes a :class:`RequestError` whose ``details`` name each bad field by its
path in the body (``rows.3.1``, ``candles.0.high``, ``labels``) and say what was wrong; the
server answers it as JSON with its status (422 for a bad body, 404 for an unknown version,
413 for an oversized body, 409 for a retrain the model cannot do).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: a feature value: a JSON number; null, NaN or Infinity mean missing (the row abstains)
Value = float | None
Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a metric ``kind`` and the bad fields.

    ``details`` is a list of ``{"field": "rows.0", "message": "..."}``; the answer's
    ``error`` is the first of them as ``"<field>: <message>"``.
    """

    def __init__(self, status: int, kind: str, details: list[dict[str, str]]) -> None:
        super().__init__(details[0]["message"] if details else kind)
        self.status = status
        self.kind = kind
        self.details = details

    @classmethod
    def field(
        cls, field: str, message: str, *, status: int = 422, kind: str = "invalid_body"
    ) -> RequestError:
        """One bad field."""
        return cls(status, kind, [{"field": field, "message": message}])

    def answer(self) -> dict[str, Any]:
        """The JSON body of the error answer."""
        first = self.details[0] if self.details else {"field": "body", "message": self.kind}
        return {"error": f"{first['field']}: {first['message']}", "detail": self.details}


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def invalid_body(exc: ValidationError) -> RequestError:
    """A pydantic ValidationError as a 422 naming each field (at most 20 of them)."""
    details = [
        {
            "field": _where(e["loc"]),
            "message": e["msg"].removeprefix("Value error, "),
            "type": e["type"],
        }
        for e in exc.errors(include_url=False)[:20]
    ]
    return RequestError(422, "invalid_body", details)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Candle(_Strict):
    """A closed bar: open time (ms UTC) and OHLCV; prices > 0, volume >= 0, all finite."""

    open_time: Annotated[int, Field(ge=0)]
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Annotated[float, Field(ge=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _range(self) -> Candle:
        if self.high < max(self.open, self.close, self.low):
            raise ValueError(
                f"high {self.high} is below open {self.open}, close {self.close} or low {self.low}"
            )
        if self.low > min(self.open, self.close):
            raise ValueError(f"low {self.low} is above open {self.open} or close {self.close}")
        return self


class Funding(_Strict):
    """A funding event: its time (ms UTC, on the funding hour) and rate."""

    funding_time: Annotated[int, Field(ge=0)]
    funding_rate: Annotated[float, Field(allow_inf_nan=False)]


class Inputs(_Strict):
    """What a prediction or a retrain is computed from: feature rows or raw candles."""

    rows: list[list[Value]] | None = None
    features: list[str] | None = None
    open_time: list[Annotated[int, Field(ge=0)]] | None = None
    close: list[Value] | None = None
    candles: list[Candle] | None = None
    funding: list[Funding] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Inputs:
        if self.candles is not None:
            extra = [
                k
                for k in ("rows", "features", "open_time", "close")
                if getattr(self, k) is not None
            ]
            if extra:
                raise ValueError(f"send either 'candles' or feature rows, not both (got {extra})")
        elif self.funding is not None:
            raise ValueError("'funding' goes with 'candles' (features are computed from them)")
        elif self.rows is None and self.open_time is None:
            raise ValueError("send 'rows' (feature rows) or 'candles' (raw bars)")
        return self


class PredictBody(Inputs):
    """``POST /predict``: ``rows`` (features in the model's order, or in the order of
    ``features``) with optional ``open_time``/``close`` per row (Prophet needs them), or
    ``candles`` (+ ``funding``); ``version`` picks a version other than the current one."""

    version: str | None = None


class RetrainBody(Inputs):
    """``POST /retrain``: the same inputs plus ``labels`` (1 up, 0 down, null unknown: the row
    is left out), one per row or candle; Prophet takes ``candles`` and ``forecast_bars``."""

    labels: list[Annotated[int, Field(ge=0, le=1)] | None] | None = None
    forecast_bars: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
