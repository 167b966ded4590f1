"""The REST kline backfill on the shared pieces: progress through engine.progress (nothing
drawn), retries through the one policy, the store import at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.binance.backfill import backfill_klines, fetch_klines
from engine.binance.errors import VenueUnavailable
from engine.data import load_candles
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import ServerThread

from .conftest import Scripted, config, ms

BAR = 300_000


@pytest.fixture()
def sim(market: MarketData) -> Iterator[ServerThread]:
    t = ServerThread(config(), market=market)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def test_backfill_reports_progress_and_imports(
    sim: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim.server is not None
    seen: list[tuple[str, int, int | None]] = []
    report = backfill_klines(["BTCUSDT", "ETHUSDT"], ["5m"], start="2023-12-30", end=None,
                             url=sim.server.url, store=tmp_path,
                             progress=lambda task, done, total: seen.append((task, done, total)))
    out = capsys.readouterr()
    n = (ms("2024-01-01") - ms("2023-12-30")) // BAR
    assert out.out == "" and out.err == ""  # a library call draws nothing
    for sym in ("BTCUSDT", "ETHUSDT"):
        mine = [(d, t) for task, d, t in seen if task == f"klines {sym} 5m"]
        assert mine[0] == (0, n) and mine[-1] == (n, n)
        assert [d for d, _ in mine] == sorted(d for d, _ in mine)
        assert load_candles(sym, "5m", store=tmp_path).height == n
    assert {ds.symbol for ds in report.series} == {"BTCUSDT", "ETHUSDT"}


def test_backfill_retries_through_5xx_and_gives_up_typed(sim: ServerThread) -> None:
    assert sim.server is not None
    sim.server.faults = faults = Scripted()
    faults.before = 3
    slept: list[float] = []
    rows = fetch_klines(sim.server.url, "BTCUSDT", "5m", start_ms=ms("2023-12-31"),
                        sleep=slept.append)
    assert len(rows) == 288 and slept == [0.5, 1.0, 2.0]
    faults.before = 10**6
    with pytest.raises(VenueUnavailable, match="did not answer after 9 attempts"):
        fetch_klines(sim.server.url, "BTCUSDT", "5m", start_ms=0, sleep=slept.append)
    assert slept[3:] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
