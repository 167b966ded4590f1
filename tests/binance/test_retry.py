"""The one retry policy (tenacity): TEMPORARY retried with backoff or Retry-After, REJECTED
and FATAL typed at once, other errors untouched; sleeps injected, so nothing waits here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ccxt
import pytest

from engine.binance import RequestRejected, RetryPolicy, VenueFatal, VenueUnavailable
from engine.exchange_sim.market import MarketData

from .conftest import Scripted, venue

BUSY = 'binanceusdm {"code":-1001,"msg":"Internal error; unable to process your request."}'


def script(*outcomes: Any) -> Callable[[], Any]:
    """A call that raises/returns the outcomes in turn (and counts its calls)."""
    it = iter(outcomes)

    def fn() -> Any:
        fn.calls += 1  # type: ignore[attr-defined]
        x = next(it)
        if isinstance(x, BaseException):
            raise x
        return x

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def run(policy: RetryPolicy, fn: Callable[[], Any], *, is_async: bool, **kw: Any) -> Any:
    if not is_async:
        return policy.run("thing", fn, **kw)

    async def afn() -> Any:
        return fn()

    return asyncio.run(policy.arun("thing", afn, **kw))


def policy(sleeps: list[float], **kw: Any) -> RetryPolicy:
    async def asleep(s: float) -> None:
        sleeps.append(s)

    return RetryPolicy(sleep=sleeps.append, asleep=asleep, **kw)


@pytest.mark.parametrize("is_async", [False, True])
def test_temporary_is_retried_with_backoff(is_async: bool) -> None:
    sleeps: list[float] = []
    notes: list[tuple[str, str, int, float]] = []
    fn = script(ccxt.OperationFailed(BUSY), ccxt.RequestTimeout("timed out"), "ok")
    got = run(policy(sleeps), fn, is_async=is_async,
              on_retry=lambda w, e, a, s: notes.append((w, type(e).__name__, a, s)))
    assert got == "ok" and fn.calls == 3  # type: ignore[attr-defined]
    assert sleeps == [0.2, 0.4]
    assert notes == [("thing", "OperationFailed", 1, 0.2), ("thing", "RequestTimeout", 2, 0.4)]


@pytest.mark.parametrize("is_async", [False, True])
def test_retry_after_is_obeyed_exactly(is_async: bool) -> None:
    sleeps: list[float] = []
    fn = script(ccxt.DDoSProtection("binanceusdm 429"), "ok")
    got = run(policy(sleeps, max_wait_s=1.0), fn, is_async=is_async,
              headers=lambda: {"retry-after": "7"})
    assert got == "ok" and sleeps == [7.0]  # never shortened to max_wait_s: the ban would grow


@pytest.mark.parametrize("is_async", [False, True])
def test_exhausted_temporary_becomes_unavailable(is_async: bool) -> None:
    sleeps: list[float] = []
    fn = script(*[ccxt.ExchangeNotAvailable(BUSY)] * 3)
    with pytest.raises(VenueUnavailable, match="thing: the exchange did not answer after 3") as info:
        run(policy(sleeps, max_attempts=3), fn, is_async=is_async)
    assert isinstance(info.value.__cause__, ccxt.ExchangeNotAvailable) and info.value.code == -1001
    assert sleeps == [0.2, 0.4] and fn.calls == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("is_async", [False, True])
def test_rejected_and_fatal_are_typed_at_once(is_async: bool) -> None:
    sleeps: list[float] = []
    margin = ccxt.InsufficientFunds('binanceusdm {"code":-2019,"msg":"Margin is insufficient."}')
    fn = script(margin)
    with pytest.raises(RequestRejected, match="Margin is insufficient") as info:
        run(policy(sleeps), fn, is_async=is_async)
    assert info.value.code == -2019 and info.value.__cause__ is margin
    auth = script(ccxt.AuthenticationError('binanceusdm {"code":-2015,"msg":"Invalid API-key"}'))
    with pytest.raises(VenueFatal, match="-2015") as fatal:
        run(policy(sleeps), auth, is_async=is_async)
    assert "API key" in (fatal.value.hint or "")
    assert sleeps == [] and fn.calls == auth.calls == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("is_async", [False, True])
def test_an_error_that_is_not_ccxts_passes_through(is_async: bool) -> None:
    sleeps: list[float] = []
    bug = ValueError("a bug of ours")
    with pytest.raises(ValueError) as info:
        run(policy(sleeps), script(bug), is_async=is_async)
    assert info.value is bug and sleeps == []


async def test_client_waits_out_a_429_burst_as_told(market: MarketData) -> None:
    async with venue(market) as (server, client, events, sleeps):
        server.faults = faults = Scripted()
        faults.burst = 4

        async def burst_ends_while_we_wait(s: float) -> None:
            await sleeps(s)
            faults.burst = None

        client.retry.asleep = burst_ends_while_we_wait
        t = await client.server_time()
        counts = server.faults.snapshot()["counts"]
    assert t == server.clock.now_ms() and sleeps.calls == [4.0]
    assert counts == {"http_429_burst": 1} and client.retries == 1
    assert events.messages() == ["server time: DDoSProtection, retrying"]
    assert events[0][0:2] == ("warning", "broker") and events[0][3]["attempt"] == 1


async def test_client_reads_through_5xx_and_gives_up_typed(market: MarketData) -> None:
    async with venue(market, max_attempts=4) as (server, client, events, sleeps):
        server.faults = faults = Scripted()
        faults.before = 3
        acc = await client.account()
        assert acc.wallet == 10_000.0 and client.retries == 3
        assert sleeps.calls == [0.2, 0.4, 0.8]
        faults.before = 10**6
        with pytest.raises(VenueUnavailable, match="klines BTCUSDT: the exchange did not answer"):
            await client.closed_bars("BTCUSDT", start=0, end=10**13, now=10**13)
    assert client.retries == 6


async def test_client_with_a_bad_key_stops_at_once(market: MarketData) -> None:
    async with venue(market, key="unknownKey" * 6, load=False) as (_, client, events, sleeps):
        await client.load()  # public: fine
        with pytest.raises(VenueFatal, match="account: .*-2015"):
            await client.account()
    assert client.retries == 0 and sleeps.calls == [] and events == []
