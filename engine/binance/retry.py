"""One retry policy for every Binance REST call (tenacity), sync and async alike.

A call is retried while :func:`engine.binance.errors.classify` says TEMPORARY, at most
``max_attempts`` times. The wait before a retry is the server's ``Retry-After`` when the
answer carried one (429/418: obeyed exactly, never shortened, or the ban only grows), else
``base_s * 2**(attempt-1)`` capped at ``max_wait_s``. Sleeping goes through the injected
``sleep``/``asleep``, so tests run without waiting. When the call still fails, the ccxt
error becomes a typed :class:`engine.binance.errors.VenueError`:

* TEMPORARY after the last attempt -> :class:`VenueUnavailable`;
* REJECTED -> :class:`RequestRejected` (at once, never retried);
* FATAL -> :class:`VenueFatal` (at once).

Errors that are not ccxt's (a bug, a cancelled task, a typed error from a nested call) pass
through untouched.

>>> policy = RetryPolicy()
>>> policy.wait_s(attempt=3, headers={"Retry-After": "7"})
7.0
>>> policy.wait_s(attempt=3, headers={})
0.8
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.binance.errors import (
    FATAL_HINT,
    Kind,
    RequestRejected,
    VenueError,
    VenueFatal,
    VenueUnavailable,
    classify,
    short,
)

T = TypeVar("T")
Headers = Callable[[], Mapping[str, Any] | None]
# on_retry(what, error, attempt, wait_s): called before each wait (a system event, a counter)
OnRetry = Callable[[str, BaseException, int, float], None]


def retry_after_s(headers: Mapping[str, Any] | None) -> float | None:
    """The ``Retry-After`` header in seconds (any case), or None."""
    for k, v in (headers or {}).items():
        if k.lower() == "retry-after":
            try:
                return max(float(v), 0.0)
            except (TypeError, ValueError):
                return None
    return None


def is_temporary(err: BaseException) -> bool:
    """True for a ccxt error classified TEMPORARY (what tenacity retries)."""
    import ccxt

    return isinstance(err, ccxt.BaseError) and classify(err).kind is Kind.TEMPORARY


def typed(what: str, err: BaseException, *, attempts: int) -> VenueError:
    """The typed error a failed ccxt call ends in (see the module docstring)."""
    verdict = classify(err)
    if verdict.kind is Kind.TEMPORARY:
        return VenueUnavailable(
            f"{what}: the exchange did not answer after {attempts} attempts ({short(err)})",
            verdict=verdict,
            hint="check the venue's URL and the network, then run again",
        )
    if verdict.kind is Kind.REJECTED:
        return RequestRejected(f"{what}: {short(err)}", verdict=verdict)
    return VenueFatal(f"{what}: {short(err)}", verdict=verdict, hint=FATAL_HINT)


def _no_headers() -> Mapping[str, Any] | None:
    return None


def _no_retry_note(what: str, err: BaseException, attempt: int, wait: float) -> None:
    return None


@dataclass
class RetryPolicy:
    """Retry budget and sleeping (see the module docstring).

    Parameters
    ----------
    max_attempts : attempts per call, the first included.
    base_s, max_wait_s : exponential backoff start and cap (seconds).
    sleep, asleep : the sync and async sleep (inject fakes in tests).
    """

    max_attempts: int = 8
    base_s: float = 0.2
    max_wait_s: float = 60.0
    sleep: Callable[[float], Any] = field(default=time.sleep, repr=False)
    asleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep, repr=False)

    def wait_s(self, *, attempt: int, headers: Mapping[str, Any] | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        told = retry_after_s(headers)
        if told is not None:
            return told
        return float(min(self.base_s * 2 ** (attempt - 1), self.max_wait_s))

    def _options(self, what: str, headers: Headers, on_retry: OnRetry) -> dict[str, Any]:
        from tenacity import retry_if_exception, stop_after_attempt

        def wait(state: Any) -> float:
            return self.wait_s(attempt=state.attempt_number, headers=headers())

        def before_sleep(state: Any) -> None:
            err = state.outcome.exception()
            on_retry(what, err, state.attempt_number, state.next_action.sleep)

        return {
            "retry": retry_if_exception(is_temporary),
            "wait": wait,
            "stop": stop_after_attempt(self.max_attempts),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    def run(
        self, what: str, fn: Callable[[], T], *, headers: Headers = _no_headers,
        on_retry: OnRetry = _no_retry_note,
    ) -> T:
        """Call ``fn()`` (sync ccxt) under the policy; ``what`` names it in messages."""
        import ccxt
        from tenacity import Retrying

        try:
            for attempt in Retrying(sleep=self.sleep, **self._options(what, headers, on_retry)):
                with attempt:
                    return fn()
        except ccxt.BaseError as err:
            raise typed(what, err, attempts=self.max_attempts) from err
        raise AssertionError("unreachable")  # pragma: no cover

    async def arun(
        self, what: str, fn: Callable[[], Awaitable[T]], *, headers: Headers = _no_headers,
        on_retry: OnRetry = _no_retry_note,
    ) -> T:
        """Await ``fn()`` (async ccxt) under the policy; ``what`` names it in messages."""
        import ccxt
        from tenacity import AsyncRetrying

        try:
            async for attempt in AsyncRetrying(
                sleep=self.asleep, **self._options(what, headers, on_retry)
            ):
                with attempt:
                    return await fn()
        except ccxt.BaseError as err:
            raise typed(what, err, attempts=self.max_attempts) from err
        raise AssertionError("unreachable")  # pragma: no cover
