"""What hostile websocket frames get, and what the run shows while it runs.

A websocket server written here sits between live mode and the exchange simulator: it
relays the simulator's ``/market/stream`` frames and, before each closed kline, sends
hostile ones (not JSON, ``"k": []``, wrong types, NaN / zero / negative prices, high below
low, negative volume, an open time off the grid, a bar already decided, a bar ten intervals
in the future, an unsubscribed symbol, an oversized frame). None may crash, stall or move a
decision: the run's decisions, orders, trades and equity equal the backtest's (and so a run
without the frames), every hostile frame is counted in ``/metrics`` by reason, and
``/health`` is degraded while the stream is down and ok again after."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.exchange_sim.market import MarketData

from .conftest import admin, drive, simulator, strategy
from .parity import q
from .test_parity import assert_parity

BAR = 300_000
N_BARS = 60


def _kline(sym: str, t: int, o: Any, h: Any, low: Any, c: Any, v: Any, **k: Any) -> dict[str, Any]:
    body = {"t": t, "T": t + BAR - 1, "s": sym, "i": "5m", "o": o, "h": h, "l": low, "c": c,
            "v": v, "x": True, **k}
    return {"stream": f"{sym.lower()}@kline_5m", "data": {"e": "kline", "E": t + BAR, "s": sym, "k": body}}


def hostile(frame: dict[str, Any]) -> list[tuple[str, str]]:
    """(reason live mode must give, raw frame) for one real closed kline frame."""
    k = frame["data"]["k"]
    s, t = k["s"], k["t"]
    o, h, low, c, v = k["o"], k["h"], k["l"], k["c"], k["v"]
    bad = [
        ("not_json", '{"stream": "btcusdt@kline_5m", "data": {'),
        ("shape", json.dumps({"data": {"e": "kline", "k": []}})),
        ("shape", json.dumps({"data": {"e": "kline", "k": None}})),
        ("shape", json.dumps({"data": {"e": "kline", "k": {**k, "x": "yes"}}})),
        ("shape", json.dumps({"data": {"e": "kline", "k": {**k, "t": "soon"}}})),
        ("shape", json.dumps(_kline(s, t, o, h, low, None, v))),
        ("price", json.dumps(_kline(s, t, "-1", h, low, c, v))),
        ("price", json.dumps(_kline(s, t, "0", h, low, c, v))),
        ("price", json.dumps(_kline(s, t, "NaN", h, low, c, v))),
        ("range", json.dumps(_kline(s, t, o, str(float(low) - 1), low, c, v))),
        ("volume", json.dumps(_kline(s, t, o, h, low, c, "-5"))),
        ("grid", json.dumps(_kline(s, t + 1, o, h, low, c, v))),
        ("stale", json.dumps(_kline(s, t - BAR, o, h, low, c, v))),
        ("not_closed", json.dumps(_kline(s, t + 10 * BAR, o, h, low, c, v))),
        ("symbol", json.dumps(_kline("DOGEUSDT", t, o, h, low, c, v))),
        ("oversized", json.dumps({**_kline(s, t, o, h, low, c, v), "pad": "x" * 70_000})),
    ]
    return bad


class Proxy:
    """A websocket server on 127.0.0.1 relaying the simulator's stream with hostile frames
    before each closed kline; ``down`` makes it refuse connections (and drop the live one).
    A client's handshake completes only once the proxy's own subscription upstream is made
    (:meth:`_upstream`): a kline the simulator sent between the two handshakes would reach
    no one, and under load the first bar, or the bar after a reconnect, never reached live
    mode (the test waited 60 s for it)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.sent: dict[str, int] = {}
        self.down = threading.Event()
        self.swallow: set[int] = set()  # open times of closed klines not relayed (lost)
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._conns: set[Any] = set()

    def __enter__(self) -> Proxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        import websockets

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with websockets.serve(
            self._relay, "127.0.0.1", 0, max_size=2**22, process_request=self._upstream
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _upstream(self, connection: Any, request: Any) -> None:
        """Before the client's handshake: connect to the simulator with the client's path."""
        import websockets

        if not self.down.is_set():
            connection.upstream = await websockets.connect(
                self.upstream + request.path, max_size=2**22
            )

    async def _relay(self, ws: Any) -> None:
        up = getattr(ws, "upstream", None)
        if self.down.is_set() or up is None:
            if up is not None:
                await up.close()
            await ws.close(code=1013, reason="try again later")
            return
        self._conns.add(ws)
        async with up:
            async for raw in up:
                if self.down.is_set():
                    await ws.close(code=1013, reason="going down")
                    return
                msg = json.loads(raw)
                k = msg.get("data", {}).get("k", {})
                if k.get("x") is True and k.get("t") in self.swallow:
                    continue
                if k.get("x") is True:
                    for reason, bad in hostile(msg):
                        await ws.send(bad)
                        self.sent[reason] = self.sent.get(reason, 0) + 1
                await ws.send(raw)

    def take_down(self) -> None:
        """Refuse new connections and drop the open ones."""
        self.down.set()
        assert self._loop is not None

        async def drop() -> None:
            for ws in list(self._conns):
                await ws.close(code=1013, reason="going down")

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(5)


def _ws(sim: Any) -> str:
    assert sim.server is not None
    return str(sim.server.ws_url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def total(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in metrics.items()
               if n == name and all(dict(lab).get(k) == w for k, w in labels.items()))


@pytest.mark.slow
def test_hostile_frames_are_counted_and_change_nothing(market: MarketData, usdm_store: Path,
                                                       tmp_path: Path) -> None:
    port = _free_port()
    seen: dict[str, Any] = {}
    with simulator(market) as sim, Proxy(_ws(sim)) as proxy:
        def between(k: int) -> None:
            if k == N_BARS - 2:  # the last bar still to come: the run is serving
                seen["metrics"] = scrape(port)
                seen["sent"] = dict(proxy.sent)
                seen["health"] = health(port)

        res = drive(sim, strategy(), tmp_path, bars=N_BARS, between=between,
                    ws_url=f"ws://127.0.0.1:{proxy.port}", metrics_port=port)
    assert res.status == "ok" and res.bars == N_BARS
    n_dec, n_fills = assert_parity(res.run_id, tmp_path, usdm_store)
    assert n_dec == 2 * N_BARS and n_fills > 0
    sent, m = seen["sent"], seen["metrics"]
    assert sum(sent.values()) >= 16 * 2 * (N_BARS - 2)  # every kind before every real kline
    for reason, n in sent.items():
        assert total(m, "frames_rejected_total", reason=reason) == n, reason
    # the metrics agree with the run log
    dec = q(f"SELECT count(*) AS n FROM decisions WHERE run_id = '{res.run_id}'", tmp_path)[0]["n"]
    assert total(m, "trading_decisions_total") == dec - 2 * 1  # scraped before the last bar
    assert seen["health"] == (200, {"status": "ok", "reasons": []})


@pytest.mark.slow
def test_health_degrades_while_the_stream_is_down(market: MarketData, tmp_path: Path) -> None:
    port = _free_port()
    seen: list[tuple[int, dict[str, Any]]] = []
    with simulator(market) as sim, Proxy(_ws(sim)) as proxy:
        def between(k: int) -> None:
            import time

            if k == 5:
                proxy.take_down()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    got = health(port)
                    if got[0] == 503:
                        seen.append(got)
                        break
                    time.sleep(0.1)
                proxy.down.clear()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    got = health(port)
                    if got[0] == 200:
                        seen.append(got)
                        break
                    time.sleep(0.1)

        res = drive(sim, strategy(), tmp_path, bars=10, between=between,
                    ws_url=f"ws://127.0.0.1:{proxy.port}", metrics_port=port)
    assert res.status == "ok" and res.bars == 10
    assert len(seen) == 2, seen
    assert seen[0][0] == 503 and seen[0][1]["status"] == "degraded"
    assert any("stream down" in r for r in seen[0][1]["reasons"])
    assert seen[1] == (200, {"status": "ok", "reasons": []})
    reconnects = q(f"SELECT count(*) AS n FROM events WHERE run_id = '{res.run_id}' "
                   f"AND message = 'websocket reconnected'", tmp_path)[0]["n"]
    assert reconnects >= 1


@pytest.mark.slow
def test_a_lost_closed_kline_is_fetched_once_the_next_bar_opens(
    market: MarketData, tmp_path: Path
) -> None:
    """The stream loses bar 6's closed kline (the proxy swallows it) and the clock moves on
    half a bar: the simulator's klines of bar 7, still open (``"x": false``, as Binance
    sends them several times a second), prove bar 6 closed, and live mode fetches it
    through REST after its grace period instead of waiting for bar 7 to close (before,
    bar 6 waited for the next closed kline: this test timed out)."""
    lost: list[int] = []
    with simulator(market) as sim, Proxy(_ws(sim)) as proxy:
        def advance_ms(k: int) -> int:
            if k == 6:
                now = int(admin(sim, "/sim/state")["marketTime"])
                lost.append(now // BAR * BAR)
                proxy.swallow.add(lost[0])
                return BAR + BAR // 2
            return BAR

        res = drive(sim, strategy(), tmp_path, bars=N_BARS, advance_ms=advance_ms,
                    ws_url=f"ws://127.0.0.1:{proxy.port}")
    assert res.status == "ok" and res.bars == N_BARS
    rows = q(f"SELECT data FROM events WHERE run_id = '{res.run_id}' "
             f"AND message LIKE 'bar %late kline(s) fetched through REST'", tmp_path)
    assert [json.loads(r["data"])["open_time"] for r in rows] == lost
    # bar 6 decided for both symbols, once, like every other bar (its orders fill half a bar
    # late, at the clock of that moment, so the run is not compared with a backtest)
    per_bar = q(f"SELECT open_time, count(*) AS n FROM decisions WHERE run_id = '{res.run_id}' "
                "GROUP BY open_time ORDER BY open_time", tmp_path)
    assert lost[0] in [r["open_time"] for r in per_bar]
    assert len(per_bar) >= N_BARS and all(r["n"] == 2 for r in per_bar)


def test_hostile_kinds_cover_every_reason() -> None:
    frame = _kline("BTCUSDT", 1_704_067_200_000, "10", "12", "9", "11", "3")
    kinds = {r for r, _ in hostile(frame)}
    assert kinds == {"not_json", "shape", "price", "range", "volume", "grid", "stale", "not_closed",
                     "symbol", "oversized"}
    assert len(list(itertools.chain(hostile(frame)))) == 16
