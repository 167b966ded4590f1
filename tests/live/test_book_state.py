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
