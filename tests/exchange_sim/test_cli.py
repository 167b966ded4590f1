"""The commands: `engine sim-exchange` as a process, and `engine data download --source rest`
against a running simulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.binance.backfill import fetch_klines
from engine.data import load_candles
from engine.exchange_sim.market import MarketData
from engine.timeutil import parse_time

from .conftest import KEY, SECRET, running, url

ENGINE = [sys.executable, "-m", "engine"]


def test_sim_exchange_process_prints_urls_and_stops_on_sigint(usdm_store: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [*ENGINE, "sim-exchange", "--symbols", "BTCUSDT", "--interval", "5m", "--start", "2024-01-01",
         "--end", "2024-01-02", "--speed", "600", "--port", "0", "--store", str(usdm_store),
         "--faults", "latency=1ms", "--fault-log", str(tmp_path / "f.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.startswith("replay"):
                break
        text = "".join(lines)
        m = re.search(r"REST\s+(http://127\.0\.0\.1:\d+)/fapi/v1", text)
        assert m, text
        base = m.group(1)
        with urllib.request.urlopen(base + "/fapi/v1/time", timeout=10) as r:
            t = json.loads(r.read())["serverTime"]
        assert parse_time("2024-01-01") <= t < parse_time("2024-01-02")
        assert "ws://127.0.0.1:" in text and "BTCUSDT 5m" in text
        assert "/market/stream?streams=" in text and "/private/ws?listenKey=" in text
        assert "/ws/<stream>" not in text  # the legacy paths only with --legacy-ws
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert KEY not in text + out + err and SECRET not in text + out + err
    assert (tmp_path / "f.jsonl").read_text().count('"latency"') == 1


def test_sim_exchange_bad_options_exit_2(tmp_path: Path) -> None:
    r = subprocess.run([*ENGINE, "sim-exchange", "--start", "2024-01-01", "--faults", "drop=1s"],
                       capture_output=True, text=True, env={**os.environ, "BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"})
    assert r.returncode == 2 and "unknown fault" in r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_API")}
    r = subprocess.run([*ENGINE, "sim-exchange", "--start", "2024-01-01"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "BINANCE_API_KEY" in r.stderr
    r = subprocess.run([*ENGINE, "sim-exchange", "--start", "2030-01-01", "--store", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"})
    assert r.returncode == 1 and "engine data" in r.stderr


def test_rest_backfill_pages_within_the_weight_budget(market: MarketData, tmp_path: Path) -> None:
    # a 40-weight budget per 1 s window: at 50 % share, 2 pages of 1500 per window
    with running(market, weight_limit=40, weight_window_s=1.0) as sim:
        pauses: list[float] = []

        def sleep(s: float) -> None:
            pauses.append(s)
            time.sleep(s)

        rows = fetch_klines(url(sim), "ETHUSDT", "5m", start_ms=parse_time("2023-12-10"), window_s=1.0, sleep=sleep)
        faults = json.loads(urllib.request.urlopen(url(sim) + "/sim/faults").read())
    store = tmp_path / "store"
    with running(market) as sim:  # the command paces on Binance's 1-minute windows
        r = subprocess.run(
            [*ENGINE, "data", "download", "--source", "rest", "--rest-url", url(sim), "--symbol", "BTCUSDT",
             "--interval", "5m", "--start", "2023-12-28", "--store", str(store)],
            capture_output=True, text=True,
        )
        assert r.returncode == 0, r.stderr
    start = parse_time("2023-12-10")
    sim_start = parse_time("2024-01-01")
    assert len(rows) == (sim_start - start) // 300_000  # every closed bar, none in progress
    sb = market.bars["ETHUSDT"]
    for row in rows[::97]:
        i = sb.index_of(row[0])
        assert [float(x) for x in row[1:6]] == [sb.o[i], sb.h[i], sb.l[i], sb.c[i], sb.v[i]]
    assert len(pauses) >= 1  # 7 pages of 10 weight could not all fit in one 20-weight share
    assert faults["counts"] == {}
    df = load_candles("BTCUSDT", "5m", store=store)
    assert df.height == (sim_start - parse_time("2023-12-28")) // 300_000
    assert df.columns == ["open_time", "open", "high", "low", "close", "volume"]


def test_rest_backfill_unknown_symbol(sim) -> None:  # type: ignore[no-untyped-def]
    from engine.errors import UsageError

    with pytest.raises(UsageError, match="not listed"):
        fetch_klines(url(sim), "DOGEUSDT", "5m", start_ms=0)
