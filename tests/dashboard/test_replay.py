"""``engine dashboard RUN_ID`` over a finished ensemble backtest, in headless Chromium: the
page draws its equity and candles, the decision feed shows each model's probability, the time
slider steps back through the run, and the token guards page and socket."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import blank, browser, watch

TOKEN = "dash-token-0123456789"


def serve(results: Path, rid: str, store: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "dashboard",
            rid,
            "--port",
            "0",
            "--results",
            str(results),
            "--store",
            str(store),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
    p.kill()
    p.communicate(timeout=10)
    raise AssertionError(
        f"engine dashboard did not start: {p.stderr.read()[-2000:] if p.stderr else ''}"
    )


def test_replay_of_an_ensemble_backtest(ensemble_run: tuple[Path, str, Path]) -> None:
    results, rid, store = ensemble_run
    proc, url = serve(results, rid, store, "--token", TOKEN)
    try:
        asyncio.run(_replay(url, rid))
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # its pipes closed


async def _replay(url: str, rid: str) -> None:
    import aiohttp
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await browser(pw)
        # bypass_csp: the page's CSP forbids eval, which Playwright's string predicates use
        ctx = await b.new_context(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        page = await ctx.new_page()
        errors = watch(page)
        # a wrong or missing token: 403 before any state
        for bad in ("", "?token=wrong"):
            resp = await page.goto(url + bad)
            assert resp is not None and resp.status == 403
            assert rid not in await page.content()
        async with aiohttp.ClientSession() as http:
            for bad in ("ws", "ws?token=nope"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                    await http.ws_connect(url + bad)
                assert exc.value.status == 403
            async with http.ws_connect(f"{url}ws?token={TOKEN}", max_msg_size=0) as ws:
                first = await ws.receive_json(timeout=10)
                assert first["type"] == "snapshot" and first["set"]["run"]["run_id"] == rid
        errors.clear()  # the 403 pages' own console lines
        await page.goto(f"{url}?token={TOKEN}")
        await page.wait_for_function(
            "window.dash && dash.snapshots >= 1 && dash.equityPoints > 100", timeout=20_000
        )
        total = await page.evaluate("dash.equityPoints")
        feed = await page.inner_text("#decisions")
        assert re.search(r"lightgbm 0\.\d{3} w\d", feed) and re.search(r"xgboost 0\.\d{3}", feed), (
            feed
        )
        assert rid in await page.inner_text("#run")
        assert await page.evaluate("dash.markers") >= 2  # entry and exit fills on the candles
        assert not blank(await page.locator("#equity").screenshot())
        assert not blank(await page.locator("#price").screenshot())
        # the slider steps back: fewer equity points, an earlier decision feed
        await page.evaluate(
            "s => { s.value = String(Math.floor(s.max / 2)); s.dispatchEvent(new Event('input')); }",
            await page.query_selector("#slider"),
        )
        await page.wait_for_function(f"dash.equityPoints < {total}", timeout=5_000)
        half = await page.evaluate("dash.equityPoints")
        assert total / 2 - 2 <= half <= total / 2 + 2
        assert await page.inner_text("#decisions") != feed
        assert errors == [], errors
        await b.close()


def test_replay_window(ensemble_run: tuple[Path, str, Path]) -> None:
    """A long run is cut to its last bars (with a note); --start/--end pick a span."""
    from engine.dashboard.replay import run_state
    from engine.timeutil import parse_end, parse_time

    results, rid, store = ensemble_run
    st = run_state(rid, results=results, store=store, max_bars=100)
    eq = [p[0] for p in st.items["equity"]]
    assert len(eq) == 100 and "showing the last 100 of" in st.values["run"]["notes"][0]
    assert min(d["open_time"] for d in st.items["decisions"]) >= eq[0]
    assert {c[0] for c in st.items["candles"]} == {"BTCUSDT", "ETHUSDT"}
    assert min(c[1] for c in st.items["candles"]) >= eq[0]
    day = run_state(
        rid,
        results=results,
        store=store,
        start=parse_time("2023-03-20"),
        end=parse_end("2023-03-20"),
    )
    times = [p[0] for p in day.items["equity"]]
    assert len(times) == 288 and times[0] == parse_time("2023-03-20")
    assert {p["model"] for p in day.items["predictions"]} == {"lightgbm", "xgboost"}
