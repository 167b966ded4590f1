"""Unmodified ccxt.async_support against the simulator, served in the same event loop."""

from __future__ import annotations

import ccxt
import pytest

from engine.binance.venue import make_ccxt
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.runner import serve

from .conftest import KEY, SECRET, make_config

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
BAR = 300_000


async def test_async_client_full_cycle(market: MarketData) -> None:
    async with serve(make_config(), market=market) as sim:
        ex = make_ccxt(sim.url, KEY, SECRET, async_=True)
        try:
            await ex.load_markets()
            assert await ex.fetch_time() == sim.config.start_ms
            ohlcv = await ex.fetch_ohlcv(ETH, "5m", limit=3)
            assert [r[0] for r in ohlcv] == [sim.config.start_ms + (k - 2) * BAR for k in range(3)]
            await ex.set_leverage(4, ETH)
            with pytest.raises(ccxt.MarginModeAlreadySet):
                await ex.set_margin_mode("cross", ETH)
            sim.clock.advance(BAR)
            o = await ex.create_order(ETH, "market", "sell", 0.5)
            assert o["status"] == "closed" and o["filled"] == 0.5
            tp = await ex.create_order(ETH, "market", "buy", 0.5, params={"takeProfitPrice": round(o["average"] * 0.9, 2), "reduceOnly": True})
            sl = await ex.create_order(ETH, "market", "buy", 0.5, params={"stopLossPrice": round(o["average"] * 1.1, 2), "reduceOnly": True})
            with pytest.raises(ccxt.BadRequest, match="-4016"):  # PERCENT_PRICE: 20 % above the mark
                await ex.create_order(ETH, "limit", "sell", 0.5, round(o["average"] * 1.2, 2))
            lim = await ex.create_order(ETH, "limit", "sell", 0.5, round(o["average"] * 1.04, 2))
            assert (await ex.fetch_order(lim["id"], ETH))["status"] == "open"
            assert {x["id"] for x in await ex.fetch_open_orders(ETH, params={"trigger": True})} == {tp["id"], sl["id"]}
            await ex.cancel_order(tp["id"], ETH, params={"trigger": True})
            await ex.cancel_all_orders(ETH)
            assert await ex.fetch_open_orders(ETH) == []
            (pos,) = await ex.fetch_positions([ETH])
            assert pos["side"] == "short" and pos["contracts"] == 0.5 and pos["marginMode"] == "cross"
            bal = await ex.fetch_balance()
            assert bal["USDT"]["used"] == pytest.approx(0.5 * o["average"] / 4, rel=1e-3)
            fr = await ex.fetch_funding_rate(ETH)
            assert fr["symbol"] == ETH and fr["fundingTimestamp"] == sim.config.start_ms + 8 * 3600_000
            orders = await ex.fetch_orders(ETH)
            assert [x["status"] for x in orders] == ["closed", "canceled"]
            with pytest.raises(ccxt.InsufficientFunds):
                await ex.create_order(BTC, "market", "buy", 100)
            with pytest.raises(ccxt.InvalidOrder):
                await ex.create_order(BTC, "market", "buy", 0.001)
        finally:
            await ex.close()
        bad = make_ccxt(sim.url, "notTheKey", SECRET, async_=True)
        try:
            await bad.load_markets()
            with pytest.raises(ccxt.AuthenticationError):
                await bad.fetch_balance()
        finally:
            await bad.close()
