"""Book.state / Book.restore: a checkpoint's book round-trips, undrained records included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.live.book import RECORD_PARTS, Book
from engine.strategy import load_strategy
from engine.strategy.execution import sim_config, symbol_specs

REPO = Path(__file__).resolve().parents[2]


def _book() -> Book:
    graph = load_strategy(REPO / "strategies" / "ema_cross.yaml")
    return Book(tuple(graph.symbols), sim_config(graph), symbol_specs(graph))


def test_state_round_trips_through_json_with_only_the_undrained_records() -> None:
    book = _book()
    book.acct.qty[:] = [0.5, -2.0]
    book.acct.entry_price[:] = [42_000.0, np.nan]
    fills = book.recs.fills
    fills.n[0] = 3  # three undrained fills (buffers hold 64)
    for f in fills._fields[1:]:
        getattr(fills, f)[:3] = np.arange(1, 4, dtype=getattr(fills, f).dtype)
    doc = json.loads(json.dumps(book.state()))  # as a checkpoint stores it (NaN included)
    assert all(len(v) == 3 for k, v in doc["fills"].items() if k != "n")
    assert all(len(v) == 0 for p in RECORD_PARTS[1:] for k, v in doc[p].items() if k != "n")
    other = _book()
    other.restore(doc)
    for name, tup in book._parts().items():
        for f in tup._fields:
            np.testing.assert_array_equal(getattr(other._parts()[name], f), getattr(tup, f),
                                          err_msg=f"{name}.{f}")
    # a checkpoint written before (every record row saved) restores too
    full = {name: {f: getattr(tup, f).tolist() for f in tup._fields}
            for name, tup in book._parts().items()}
    third = _book()
    third.restore(json.loads(json.dumps(full)))
    np.testing.assert_array_equal(third.recs.fills.bar, book.recs.fills.bar)


def test_sync_books_a_position_it_was_not_told_of_as_whole_trades() -> None:
    from engine.live.book import AccountState

    book = _book()
    closes = np.array([50_000.0, 3_000.0])

    def seen(qty: list[float], entry: list[float], t: int) -> list[str]:
        return book.sync(AccountState(10_000.0, np.array(qty), np.array(entry), np.zeros(2)), closes, t)

    assert seen([0.0, 0.0], [0.0, 0.0], 1) == []
    assert seen([0.2, 0.0], [40_000.0, 0.0], 2) == ["BTCUSDT"]  # opened (a manual order)
    assert book.acct.tr_entry_bar[0] == 2 and book.acct.tr_value_in[0] == 0.2 * 40_000.0
    # grown to 0.3 at an average of 41,000: the added 0.1 entered at 43,000
    assert seen([0.3, 0.0], [41_000.0, 0.0], 3) == ["BTCUSDT"]
    assert np.isclose(book.acct.tr_value_in[0], 0.2 * 40_000.0 + 0.1 * 43_000.0)
    # flipped to short 0.1 at 49,000: the long closed whole at the close, a short opened
    assert seen([-0.1, 0.0], [49_000.0, 0.0], 4) == ["BTCUSDT"]
    trades = book.drain()["trades"]
    assert len(trades) == 1
    assert trades["entry_bar"][0] == 2 and trades["exit_bar"][0] == 4
    assert np.isclose(trades["exit_price"][0], 50_000.0) and np.isclose(trades["qty"][0], 0.3)
    assert book.acct.tr_entry_bar[0] == 4 and np.isclose(book.acct.tr_value_in[0], 0.1 * 49_000.0)
    assert book.acct.wallet[0] == 10_000.0 and book.acct.qty[0] == -0.1  # the exchange's
