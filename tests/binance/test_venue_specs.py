"""Venue metadata: BinanceClient.venue_specs reads the venue's exchangeInfo and the account's
leverage brackets into the engine's SymbolSpecs with the shipped snapshot's parser; an
unlisted symbol is an error before anything else reaches the venue."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine.binance.client import check_listed
from engine.errors import ConfigError, DataError, ExchangeError
from engine.exchange_sim.market import MarketData
from engine.exchange_sim.rest import ROUTES
from engine.sim.specs import (
    EXCHANGE_INFO,
    LEVERAGE_BRACKETS,
    SymbolSpec,
    load_specs,
    specs_from_documents,
)

from .conftest import SYMBOLS, venue
from .test_budget_venue import charges


def fields(spec: SymbolSpec) -> dict[str, Any]:
    """Every field of a spec, arrays as lists (SymbolSpec compares by identity)."""
    return {f.name: (v.tolist() if isinstance(v := getattr(spec, f.name), np.ndarray) else v)
            for f in dataclasses.fields(spec)}


@pytest.fixture()
def paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The simulator's endpoints that answered, in order (its route table, counted)."""
    seen: list[str] = []
    for (method, path), route in list(ROUTES.items()):
        def counted(ctx: Any, _h: Any = route.handler, _p: str = f"{method} {path}") -> Any:
            seen.append(_p)
            return _h(ctx)

        monkeypatch.setitem(ROUTES, (method, path), dataclasses.replace(route, handler=counted))
    yield seen


async def test_venue_specs_equal_the_snapshot_and_size_the_budget(
    market: MarketData, paths: list[str],
) -> None:
    async with venue(market, weight_limit=1000, orders_10s=50, orders_1m=200, load=False) as (
            _, client, events, _s):
        specs = await client.venue_specs()
        eth = await client.venue_specs(["ETHUSDT"])
        state = client.budget.state()
    want = load_specs(list(SYMBOLS))
    assert [fields(s) for s in specs] == [fields(s) for s in want]
    assert [fields(s) for s in eth] == [fields(want[1])]
    info, brackets = "GET /fapi/v1/exchangeInfo", "GET /fapi/v1/leverageBracket"
    assert paths == [info, brackets, brackets, info, brackets]  # one per symbol asked
    assert [(b.name, b.limit, b.capacity) for b in state.buckets] == [
        ("weight_1m", 1000, 800), ("orders_1m", 200, 160), ("orders_10s", 50, 40)]
    assert events == []


async def test_an_unlisted_symbol_fails_before_anything_else_is_sent(
    market: MarketData, paths: list[str],
) -> None:
    async with venue(market, load=False) as (server, client, _, _s):
        with charges(server) as seen, pytest.raises(ExchangeError) as info:
            await client.venue_specs(["BTCUSDT", "DOGEUSDT"])
        orders = len(server.exchange.orders) + len(server.exchange.algo)
    message = str(info.value)
    assert f"{client.venue} does not list DOGEUSDT; no order or setting was sent" in message
    assert "it lists BTCUSDT, ETHUSDT" in (info.value.hint or "")
    assert paths == ["GET /fapi/v1/exchangeInfo"] and len(seen) == 1 and orders == 0


def test_specs_from_documents_takes_every_shape_of_the_bracket_answer() -> None:
    info = json.loads(EXCHANGE_INFO.read_text())
    everything = json.loads(LEVERAGE_BRACKETS.read_text())  # asked without symbol: an array
    one_each = [copy.deepcopy(o) for o in everything]  # asked per symbol: one object each
    wrapped = [[o] for o in one_each]  # a venue answering a one-element array per symbol
    want = [fields(s) for s in load_specs(list(SYMBOLS))]
    for answer in (everything, one_each, wrapped):
        assert [fields(s) for s in specs_from_documents(SYMBOLS, info, answer)] == want
    assert [fields(s) for s in specs_from_documents(["ETHUSDT"], info, one_each[1])] == want[1:]
    with pytest.raises(ConfigError, match="'DOGEUSDT' is not in the venue's exchangeInfo"):
        specs_from_documents(["DOGEUSDT"], info, everything)
    with pytest.raises(DataError, match="leverageBracket: no leverage brackets for ETHUSDT"):
        specs_from_documents(SYMBOLS, info, one_each[0])
    broken = copy.deepcopy(info)
    broken["symbols"][0]["filters"] = broken["symbols"][0]["filters"][:1]
    with pytest.raises(DataError, match="exchangeInfo: BTCUSDT: missing filter LOT_SIZE"):
        specs_from_documents(SYMBOLS, broken, everything)


def test_check_listed_names_the_symbol_and_what_the_venue_lists() -> None:
    info = json.loads(EXCHANGE_INFO.read_text())
    check_listed(SYMBOLS, info, "https://venue")
    many = copy.deepcopy(info)
    base = many["symbols"][0]
    many["symbols"] += [{**base, "symbol": f"COIN{i}USDT"} for i in range(30)]
    with pytest.raises(ExchangeError, match="does not list BTCUSD;") as err:
        check_listed(["BTCUSD", "ETHUSDT"], many, "https://venue")
    assert err.value.hint is not None and "it lists 32 symbols, e.g. BTCUSDT" in err.value.hint
    many["symbols"][1]["status"] = "SETTLING"
    with pytest.raises(ExchangeError, match="lists ETHUSDT as PERPETUAL with status SETTLING"):
        check_listed(SYMBOLS, many, "https://venue")
    many["symbols"][1].update(status="TRADING", contractType="CURRENT_QUARTER")
    with pytest.raises(ExchangeError, match="not a trading perpetual"):
        check_listed(["ETHUSDT"], many, "https://venue")
