"""A live run's state between bars, durable: what a restart needs that the exchange cannot say.

The exchange knows the positions, the wallet and the open orders; it does not know the open
trade's accounting (``tr_*``: entry bar, quantities and values in and out, fees and funding
so far), the loss streak, the breaker, the protective orders this run placed, or how far the
run got inside a bar. Those are checkpointed twice per bar:

* ``decided``: after the decide phase of bar ``t``, with its decision rows:
  the book as the decision left it, plus the decision itself (targets, reasons, the equity,
  wallet and positions it saw, the funding settled at its close, the decision rows). A run
  that dies after this point finishes bar ``t``'s orders on restart, from this state.
* ``done``: after bar ``t``'s equity row, when every order of the bar reached a final state
  or rests as intended.

One JSON document per run, in the run log's SQLite file (``run_state``, name ``checkpoint``:
:meth:`engine.runlog.RunLog.save_state`), replaced in the same transaction as the rows it goes
with: the ``decided`` checkpoint with the bar's decision rows, the ``done`` checkpoint with its
closed trades, equity row, predictions and snapshots (those two are made after the orders,
from the bar's features and ensemble result in memory; a run that dies before writing them
writes them when it replays the bar on restart). So a crash leaves both or neither (and
one sync a phase, not three), and on restart each row of a bar is either in the log with the
checkpoint that follows it, or still to be written (:class:`engine.live.journal.Journal`
also skips rows it already holds). A results folder written before this kept the checkpoint
in ``<results>/live/<run_id>.json``; it is still read when the run log holds none.
The features and rules are not checkpointed: they are rebuilt by replaying the run's bars
from its first warm-up bar through REST (the same kernels over the same bars give the same
state, as the backtest's parity shows).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.decisions.records import OrderEvent
from engine.runlog import RunLog

VERSION = 1
FOLDER = "live"


@dataclass
class Decided:
    """What the decide phase of one bar concluded (per symbol, graph order)."""

    target: list[float]
    reason: list[int]
    equity: float
    wallet: float
    position: list[float]
    has_bar: list[bool]
    atr: list[float]
    settled: list[tuple[str, float, float]]  # funding settled at the close: (symbol, rate, mark)
    stale: bool
    rows: list[dict[str, Any]]  # the bar's ensemble_decisions rows


@dataclass
class Checkpoint:
    """The state of a run after bar ``bar`` reached ``phase`` (``decided`` or ``done``)."""

    bar: int
    phase: str
    bar_index: int
    book: dict[str, dict[str, list[Any]]]
    protect: dict[str, list[OrderEvent]]
    resting: dict[str, OrderEvent]
    totals: dict[str, float]
    decided: Decided | None = None

    def to_json(self) -> dict[str, Any]:
        ev = dataclasses.asdict
        return {
            "version": VERSION, "bar": self.bar, "phase": self.phase, "bar_index": self.bar_index,
            "book": self.book, "totals": self.totals,
            "protect": {s: [ev(e) for e in evs] for s, evs in self.protect.items()},
            "resting": {s: ev(e) for s, e in self.resting.items()},
            # shallow: its rows are plain dicts already (asdict would deep-copy them, ~0.5 ms
            # on the path from a closed kline to its order)
            "decided": None if self.decided is None else dict(vars(self.decided)),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Checkpoint:
        d = doc.get("decided")
        decided = None
        if d is not None:
            d = {**d, "settled": [tuple(x) for x in d["settled"]]}
            decided = Decided(**d)
        return cls(
            bar=int(doc["bar"]), phase=str(doc["phase"]), bar_index=int(doc["bar_index"]),
            book=doc["book"], totals=doc["totals"],
            protect={s: [OrderEvent(**e) for e in evs] for s, evs in doc["protect"].items()},
            resting={s: OrderEvent(**e) for s, e in doc["resting"].items()},
            decided=decided,
        )


NAME = "checkpoint"


def path_for(results_root: Path, run_id: str) -> Path:
    """Where a results folder written before checkpoints moved into the run log kept one."""
    return results_root / FOLDER / f"{run_id}.json"


def save(log: RunLog, run_id: str, ck: Checkpoint) -> None:
    """Replace the checkpoint of ``run_id`` (durably, or with the log's open transaction)."""
    log.save_state(run_id, NAME, json.dumps(ck.to_json(), separators=(",", ":"),
                                            check_circular=False))


def load(log: RunLog, run_id: str) -> Checkpoint | None:
    """The checkpoint of ``run_id``; None when there is none (or it is of another version)."""
    text = log.load_state(run_id, NAME)
    if text is None:
        try:
            text = path_for(log.root, run_id).read_text()
        except FileNotFoundError:
            return None
    doc = json.loads(text)
    if doc.get("version") != VERSION:
        return None
    return Checkpoint.from_json(doc)
