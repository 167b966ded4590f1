"""The dashboard of a live run against the exchange simulator, in headless Chromium: the page
connects, its equity curve and decision feed grow as bars close, a socket the server drops
reconnects by itself, the console stays clean and the chart has pixels; a non-loopback bind
without a token is refused at start."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.live.conftest import BAR, KEY, SECRET, STRATEGY, advance, simulator, strategy

from .conftest import blank, browser, watch

BARS = 6
#: the live tests' EMA crossover with a stop and a target on every position
EXITS = STRATEGY.replace(
    "  initial_cash: 10000\n",
    "  initial_cash: 10000\n  stop_loss: {{pct: 0.25}}\n  take_profit: {{pct: 0.5}}\n",
)


class LiveThread:
    """``LiveRunner`` in its own thread and loop (as ``run_live``), with the dashboard on a
    free loopback port; the test moves the simulator's clock one bar at a time."""

    def __init__(self, sim: Any, results: Path) -> None:
        from engine.live import LiveOptions

        assert sim.server is not None
        self.opts = LiveOptions(
            url=sim.server.url,
            ws_url=sim.server.ws_url,
            key=KEY,
            secret=SECRET,
            results=results,
            max_bars=BARS,
            max_wait_s=2.0,
            bar_grace_s=0.5,
            dashboard_port=0,
        )
        self.done: queue.Queue[int] = queue.Queue()
        self.ready = threading.Event()
        self.out: dict[str, Any] = {}
        self.url = ""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from engine.live.runner import LiveRunner

        async def main() -> Any:
            self.loop = asyncio.get_running_loop()
            self.runner = LiveRunner(
                strategy("2024-01-01", "2024-01-02", text=EXITS),
                self.opts,
                on_bar=self.done.put,
                on_ready=self.ready.set,
                on_start=lambda s: setattr(self, "url", s.dashboard_url),
            )
            return await self.runner.run()

        try:
            self.out["result"] = asyncio.run(main())
        except BaseException as err:  # noqa: BLE001 - re-raised in the test
            self.out["error"] = err
            self.ready.set()

    def bar(self, sim: Any) -> None:
        advance(sim, BAR)
        self.done.get(timeout=30)

    def drop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.dash_server.drop_clients(), self.loop).result(
            10
        )


def test_live_page_follows_the_run(market: Any, tmp_path: Path) -> None:
    with simulator(market) as sim:
        live = LiveThread(sim, tmp_path / "results")
        assert live.ready.wait(60), "live mode did not get ready"
        assert "error" not in live.out, live.out.get("error")
        assert live.url.startswith("http://127.0.0.1:")
        asyncio.run(_follow(live, sim))
        live.thread.join(30)
    assert live.out["result"].status == "ok", live.out


async def _follow(live: LiveThread, sim: Any) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await browser(pw)
        ctx = await b.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        page = await ctx.new_page()
        errors = watch(page)
        await page.goto(live.url + "/")
        await page.wait_for_function(
            "window.dash && dash.connected && dash.snapshots >= 1", timeout=10_000
        )
        assert await page.inner_text("#conn") == "live"
        for k in range(3):
            await asyncio.to_thread(live.bar, sim)
            await page.wait_for_function(
                f"dash.equityPoints >= {k + 1} && dash.decisionRows >= {2 * (k + 1)}",
                timeout=10_000,
            )
        assert "BTCUSDT" in await page.inner_text("#decisions")
        # held positions and their resting stop and target, and the entry fills marked
        assert "USDT" in await page.inner_text("#positions")
        orders = await page.inner_text("#orders")
        assert "stop" in orders and "target" in orders, orders
        assert await page.evaluate("dash.markers") >= 1  # BTCUSDT's entry fill on its candles
        health = await page.inner_text("#health")
        assert "last bar age" in health and "reconnects" in health and "weight used" in health
        # the server drops the socket: the page says so, reconnects, takes a new snapshot
        await asyncio.to_thread(live.drop)
        await page.wait_for_function("dash.drops >= 1", timeout=5_000)
        await page.wait_for_function("dash.connected && dash.snapshots >= 2", timeout=10_000)
        for k in range(3, BARS - 1):
            await asyncio.to_thread(live.bar, sim)
            await page.wait_for_function(f"dash.equityPoints >= {k + 1}", timeout=10_000)
        assert await page.evaluate("dash.streams.candles.length") >= 2 * (BARS - 1)
        assert not blank(await page.locator("#equity").screenshot())
        assert not blank(await page.locator("#price").screenshot())
        seen = (
            await page.evaluate("JSON.stringify([dash.values, dash.streams])")
            + await page.content()
        )
        assert KEY not in seen and SECRET not in seen and KEY[:12] not in seen
        assert errors == [], errors
        await b.close()
    await asyncio.to_thread(live.bar, sim)  # the last bar: the run ends ok


def test_non_loopback_bind_needs_a_token(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "live",
            "--url",
            "http://127.0.0.1:9",
            "--ws-url",
            "ws://127.0.0.1:9",
            "--dashboard-host",
            "0.0.0.0",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "BINANCE_API_KEY": "k" * 16,
            "BINANCE_API_SECRET": "s" * 16,
            "HOME": str(tmp_path),
        },
    )
    assert out.returncode == 2, out.stderr
    assert "--dashboard-host 0.0.0.0 is not a loopback address" in out.stdout + out.stderr
    assert "--dashboard-token" in out.stdout + out.stderr
    assert not (tmp_path / "runlog.sqlite").exists()
    out = subprocess.run(
        [sys.executable, "-m", "engine", "dashboard", "some-run", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.returncode == 2
        and "--host 0.0.0.0 is not a loopback address" in out.stdout + out.stderr
    )
    assert "--token" in out.stdout + out.stderr
