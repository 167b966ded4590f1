"""One retry classification: every ccxt error grouped by what the caller must do.

As freqtrade groups its exceptions, an error from the venue is one of three kinds:

``TEMPORARY``: retry, after ``Retry-After`` when the server sent one, else with backoff.
    Network errors and timeouts, 5xx (-1000/-1001/-1006/-1008), -1007 and 503 "execution
    status unknown", 429/418 (``DDoSProtection``, ``RateLimitExceeded``: -1003, -1015),
    -1021 (``InvalidNonce``: a clock step), malformed answers (``BadResponse``).
``REJECTED``: the venue refused this request; the same request would be refused again.
    Record it and continue: ``InvalidOrder`` (-2021, -2022, -4116, -4164, -5021/-5022),
    ``InsufficientFunds`` (-2018/-2019), the filters (``BadRequest``: -1111, -4003, -4004,
    -4005, -4014, -4023, ...), unknown orders (``OrderNotFound``: -2011/-2013), "no need to
    change" (``NoChange``: -4046/-4059), and any other exchange error ccxt does not name.
``FATAL``: stop and fix the set-up: ``AuthenticationError``/``PermissionDenied`` (-1022,
    -2014, -2015), ``NotSupported``, ``RestrictedLocation``, an unknown symbol (``BadSymbol``:
    -1121), invalid leverage (-4028), an account in hedge mode (-4061), a margin type that
    cannot change (-4047/-4048), an order type the endpoint no longer takes (-4120), and any
    error that is not ccxt's (a bug: never retried, never recorded as a rejection).

The class decides, except for the Binance codes in :data:`CODES`, which ccxt files under a
class of another kind. :func:`classify` is the ONE table; the client
(:mod:`engine.binance.retry`, :mod:`engine.binance.client`) and the REST backfill act on it.

>>> import ccxt
>>> classify(ccxt.InsufficientFunds('binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'))
Verdict(kind=<Kind.REJECTED: 'rejected'>, code=-2019, unknown_status=False, reason='InsufficientFunds')
>>> classify(ccxt.BadRequest('binanceusdm {"code":-4028,"msg":"Leverage is not valid."}')).kind
<Kind.FATAL: 'fatal'>
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from engine.errors import ExchangeError


class Kind(enum.Enum):
    """What the caller must do with an error."""

    TEMPORARY = "temporary"  # retry (Retry-After or backoff)
    REJECTED = "rejected"  # record and continue
    FATAL = "fatal"  # stop: fix keys, permissions or config


@dataclass(frozen=True)
class Verdict:
    """The classification of one error.

    ``code``: the Binance error code found in the answer (None: none, e.g. a timeout).
    ``unknown_status``: a request that changes state may have been executed (5xx, -1007,
    timeout, dropped connection): look it up before sending it again. A 429/418 is refused
    before it is processed, so it is temporary with a known status.
    ``reason``: the ccxt class name (for logs).
    """

    kind: Kind
    code: int | None
    unknown_status: bool
    reason: str


# Binance codes whose kind is not their ccxt class's: ccxt 4.5's USD-M table files the FATAL
# ones under BadRequest/OperationRejected; the TEMPORARY ones are listed so that an answer
# ccxt did not map (a plain ExchangeError) carrying them is still retried.
CODES: dict[int, Kind] = {
    -4028: Kind.FATAL,  # BadRequest: leverage not valid for the symbol (config)
    -4047: Kind.FATAL,  # OperationRejected: margin type cannot change with open orders
    -4048: Kind.FATAL,  # OperationRejected: margin type cannot change with a position
    -4061: Kind.FATAL,  # OperationRejected: position side mismatch (the account is in hedge mode)
    -4120: Kind.FATAL,  # ExchangeError: order type not supported on this endpoint (client outdated)
    -1000: Kind.TEMPORARY,  # unknown error while processing: status unknown
    -1001: Kind.TEMPORARY,  # internal error, unable to process: status unknown
    -1006: Kind.TEMPORARY,  # unexpected response from the message bus: status unknown
    -1007: Kind.TEMPORARY,  # timeout waiting for the backend: status unknown
    -1008: Kind.TEMPORARY,  # server overloaded: status unknown
    -1003: Kind.TEMPORARY,  # too many requests (refused before processing)
    -1015: Kind.TEMPORARY,  # too many new orders (refused before processing)
}
_REFUSED_BEFORE_PROCESSING = (-1003, -1015)

_CODE_RE = re.compile(r'"code"\s*:\s*(-?\d+)')


def binance_code(err: BaseException) -> int | None:
    """The Binance error code in a ccxt error's text (``binanceusdm {"code":-2019,...}``)."""
    m = _CODE_RE.search(str(err))
    return int(m.group(1)) if m else None


def _class_kind(err: BaseException) -> tuple[Kind, bool]:
    """(kind, unknown_status) from the ccxt class alone (most specific class first)."""
    import ccxt

    if isinstance(err, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return Kind.TEMPORARY, False
    if isinstance(err, ccxt.OperationFailed):  # NetworkError, RequestTimeout, BadResponse, ...
        return Kind.TEMPORARY, True
    fatal = (ccxt.AuthenticationError, ccxt.NotSupported, ccxt.BadSymbol, ccxt.ArgumentsRequired,
             ccxt.ExchangeClosedByUser, ccxt.InvalidProxySettings, ccxt.RestrictedLocation,
             ccxt.ManualInteractionNeeded)
    if isinstance(err, fatal):
        return Kind.FATAL, False
    return Kind.REJECTED, False


def classify(err: BaseException) -> Verdict:
    """Classify one error raised by a ccxt call (see the module docstring).

    Anything that is not a ccxt error (a bug of ours, a cancelled task) is FATAL: it is
    never retried and never recorded as a rejection.
    """
    import ccxt

    reason = type(err).__name__
    if not isinstance(err, ccxt.BaseError):
        return Verdict(Kind.FATAL, None, False, reason)
    code = binance_code(err)
    kind, unknown = _class_kind(err)
    if code in CODES and kind is not Kind.TEMPORARY:
        kind = CODES[code]
        unknown = kind is Kind.TEMPORARY and code not in _REFUSED_BEFORE_PROCESSING
    return Verdict(kind, code, unknown, reason)


def short(err: BaseException, limit: int = 300) -> str:
    """An error's text cut to ``limit`` characters, for logs and messages."""
    text = str(err)
    return text if len(text) <= limit else text[:limit] + "..."


class VenueError(ExchangeError):
    """An error from the venue, classified (``verdict``); ``__cause__`` is the ccxt error."""

    def __init__(self, message: str, *, verdict: Verdict, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.verdict = verdict

    @property
    def code(self) -> int | None:
        """The Binance error code, when the answer carried one."""
        return self.verdict.code


class VenueUnavailable(VenueError):
    """TEMPORARY trouble that outlasted the retry budget."""


class RequestRejected(VenueError):
    """REJECTED: the venue refused the request (the caller records it and continues)."""

    @property
    def not_found(self) -> bool:
        """The order asked about does not exist (-2011 on cancel, -2013 on query)."""
        return self.verdict.reason == "OrderNotFound" or self.code in (-2011, -2013)

    @property
    def no_change(self) -> bool:
        """Nothing to change (-4046 margin type, -4059 position side): counts as done."""
        return self.verdict.reason in ("MarginModeAlreadySet", "NoChange") or self.code in (
            -4046, -4059,
        )


class OrderRejected(RequestRejected):
    """The exchange refused an order (filters, margin, would trigger now): record it and
    continue. ``str(err)`` is the venue's answer; ``client_order_id`` the order's id."""

    def __init__(self, message: str, *, verdict: Verdict, client_order_id: str) -> None:
        super().__init__(message, verdict=verdict)
        self.client_order_id = client_order_id


class VenueFatal(VenueError):
    """FATAL: keys, permissions or configuration are wrong; the run must stop."""


FATAL_HINT = (
    "check the API key and secret (and their permissions), the symbols, leverage and margin "
    "mode against the venue; then run again"
)
