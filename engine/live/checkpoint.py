"""A live run's state between bars, on disk: what a restart needs that the exchange cannot say.

The exchange knows the positions, the wallet and the open orders; it does not know the open
trade's accounting (``tr_*``: entry bar, quantities and values in and out, fees and funding
so far), the loss streak, the breaker, the protective orders this run placed, or how far the
run got inside a bar. Those are checkpointed twice per bar:

* ``decided``: after the decide phase of bar ``t``, BEFORE its decision rows are written:
  the book as the decision left it, plus the decision itself (targets, reasons, the equity,
  wallet and positions it saw, the funding settled at its close, the decision rows). A run
  that dies after this point finishes bar ``t``'s orders on restart, from this state.
* ``done``: after bar ``t``'s equity row, when every order of the bar reached a final state
  or rests as intended.

One JSON file per run, ``<results>/live/<run_id>.json``, replaced atomically (written to a
temporary name, fsynced, renamed, the folder fsynced): a crash leaves the old checkpoint or
the new one. The run log's rows are written by the same bar AFTER the checkpoint that
precedes them, so on restart each row of a bar is either in the log (and not written again:
:class:`engine.live.journal.Journal` skips rows it already holds) or still to be written.
The features and rules are not checkpointed: they are rebuilt by replaying the run's bars
from its first warm-up bar through REST (the same kernels over the same bars give the same
state, as the backtest's parity shows).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.decisions.records import OrderEvent

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
    # its model_predictions and snapshots rows (written after its orders)
    predictions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    snapshots: list[dict[str, Any]] = dataclasses.field(default_factory=list)


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
            "decided": None if self.decided is None else ev(self.decided),
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


def path_for(results_root: Path, run_id: str) -> Path:
    """Where the checkpoint of ``run_id`` is kept."""
    return results_root / FOLDER / f"{run_id}.json"


def save(path: Path, ck: Checkpoint) -> None:
    """Replace the checkpoint at ``path`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(ck.to_json(), separators=(",", ":")).encode()
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``; None when there is none (or it is of another version)."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if doc.get("version") != VERSION:
        return None
    return Checkpoint.from_json(doc)
