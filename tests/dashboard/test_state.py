"""The dashboard's state and socket without a browser: snapshot then deltas, merged deltas
for a client that falls behind, the metrics server shared with the dashboard, and a page that
never reads its socket delaying neither the loop nor the state's writers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import aiohttp

from engine.dashboard.server import DashServer, check_bind
from engine.dashboard.state import Cursor, DashState
from engine.errors import UsageError


def test_snapshot_then_merged_deltas() -> None:
    st = DashState(cap=5)
    st.add_rows("equity", [{"time": 1, "equity": 10.0}])
    st.set("health", {"status": "ok"})
    a, b = Cursor(), Cursor()
    first = st.delta(a)
    assert first is not None and first["type"] == "snapshot"
    assert first["append"]["equity"] == [[1, 10.0]] and first["set"]["health"] == {"status": "ok"}
    assert st.delta(a) is None  # nothing new
    st.delta(b)
    for t in range(2, 5):  # three changes while b does not read: one merged delta
        st.add_rows("equity", [{"time": t, "equity": float("nan")}])
    st.set("health", {"status": "ok"})  # equal: not a change
    d = st.delta(b)
    assert (
        d is not None
        and d["type"] == "delta"
        and d["append"] == {"equity": [[2, None], [3, None], [4, None]]}
    )
    assert d["set"] == {}
    for t in range(5, 12):  # past the cap: a client behind the dropped items gets all again
        st.add_rows("equity", [{"time": t, "equity": 1.0}])
    d = st.delta(b)
    assert (
        d is not None
        and d["reset"] == ["equity"]
        and [p[0] for p in d["append"]["equity"]]
        == [
            7,
            8,
            9,
            10,
            11,
        ]
    )


def test_bind_rules() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "t0ken")
    try:
        check_bind("0.0.0.0", None)
    except UsageError as err:
        assert "not a loopback address" in err.message
    else:
        raise AssertionError("a non-loopback bind without a token was accepted")


def test_shared_metrics_server_and_a_stalled_page() -> None:
    asyncio.run(_shared())


async def _shared() -> None:
    from engine.live.telemetry import Telemetry, serve

    st = DashState()
    dash = DashServer(st, token="s3cret", send_timeout_s=1.0)
    tel = Telemetry(("BTCUSDT",), 300_000, stale_after_s=900)
    server = await serve(tel, host="127.0.0.1", port=0, dashboard=dash)
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as r:
                assert r.status == 200 and "equity_usdt" in await r.text()
            async with http.get(base + "/?token=bad") as r:
                assert r.status == 403
            async with http.ws_connect(base + "/ws?token=s3cret") as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
                st.add_rows("equity", [{"time": 1, "equity": 2.0}])
                d = await ws.receive_json(timeout=5)
                assert d == {"type": "delta", "append": {"equity": [[1, 2.0]]}, "set": {}}
        # a page that never reads: the writers and the loop go on; it is dropped
        # (closed by the with-block whatever the outcome: a leaked socket would fail a later test)
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            key = base64.b64encode(os.urandom(16)).decode()
            raw.sendall(
                (
                    f"GET /ws?token=s3cret HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            await asyncio.sleep(0.3)
            assert len(dash.clients) == 1
            worst = 0.0
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end:  # a "decision" every 10 ms, each adding 200 KB of rows
                t0 = time.monotonic()
                st.add_rows(
                    "system_events", [{"time": 1, "severity": "warning", "message": "x" * 200_000}]
                )
                await asyncio.sleep(0.01)
                worst = max(worst, time.monotonic() - t0)
            assert worst < 0.1, f"a decision waited {worst:.3f} s"
            assert len(dash.clients) == 0, "the stalled page was not dropped"
    finally:
        await server.close()
