"""Run identity: which run a start continues, and what the log says about it.

``engine live ... --run-id ID`` resumes that run. Without it, the newest live run of the
same strategy (``strategy_hash``), symbols and venue is resumed when its process died (the
run log marks a run whose pid is gone ``failed``: :meth:`engine.runlog.RunLog.reap_abandoned`);
a run that ended ``ok`` or ``stopped`` is not resumed (``--new-run`` never resumes). A
resumed run keeps its ``run_id``, so its client order ids, decisions and trades continue
in the same run; ``runs.status`` is ``running`` again, with this process's pid.

:func:`load_prior` reads what a resumed run needs from the log and its checkpoint
(:mod:`engine.live.checkpoint`): the warm-up span (the features are rebuilt by replaying
the same bars), the last decided bar, and the latest state of every order it logged.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, fields
from typing import Any

from engine.decisions.records import OrderEvent
from engine.errors import RunError, UsageError
from engine.live import checkpoint
from engine.live.checkpoint import Checkpoint
from engine.runlog import RunLog

_ORDER_FIELDS = tuple(f.name for f in fields(OrderEvent))


@dataclass
class Choice:
    """The run a start continues (None: a new run) and why, in words for the output."""

    run_id: str | None
    reason: str


@dataclass
class Prior:
    """What the log holds of a run being resumed."""

    run_id: str
    warmup_start: int | None
    first_live_bar: int | None
    last_decided: int | None
    checkpoint: Checkpoint | None
    orders: dict[str, OrderEvent]  # the latest logged state of each client order id
    resumes: int  # how often it was resumed before


def _same(run: dict[str, Any], digest: str, symbols: tuple[str, ...], venue: str) -> list[str]:
    """What differs between a logged run and this start (empty: the same run)."""
    p = run.get("params") or {}
    out = []
    if run.get("mode") != "live":
        out.append(f"it is a {run.get('mode')} run")
    if run.get("strategy_hash") != digest:
        out.append(f"its strategy differs (hash {run.get('strategy_hash')}, this one {digest})")
    if list(p.get("symbols") or []) != list(symbols):
        out.append(f"its symbols are {','.join(p.get('symbols') or [])}")
    if p.get("venue") != venue:
        out.append(f"it traded on {p.get('venue')}")
    return out


def find_run(log: RunLog, *, run_id: str | None, new_run: bool, digest: str,
             symbols: tuple[str, ...], venue: str) -> Choice:
    """The run this start continues (see the module docstring)."""
    log.reap_abandoned()
    if run_id:
        run = log.get_run(run_id)
        if run is None:
            raise UsageError(f"--run-id {run_id}: no such run in {log.root}",
                             hint="engine query runs lists the runs; drop --run-id for a new run")
        differs = _same(run, digest, symbols, venue)
        if differs:
            raise UsageError(f"--run-id {run_id} cannot be resumed with this command: "
                             + "; ".join(differs),
                             hint="resume it with the same strategy file, --set, --symbols and "
                             "venue, or start a new run with --new-run")
        if run["status"] == "running":
            raise RunError(f"run {run_id} is running (process {run.get('pid')} on {run.get('host')})",
                           hint="stop that process first (SIGTERM), then resume the run")
        return Choice(run_id, f"resuming run {run_id} as asked (it ended {run['status']})")
    if new_run:
        return Choice(None, "a new run (--new-run)")
    for run in log.recent_runs(100_000):
        if run.get("mode") != "live" or _same(run, digest, symbols, venue):
            continue
        if run["status"] == "failed":
            return Choice(run["run_id"], f"resuming run {run['run_id']}: it ended without stopping "
                          f"(process {run.get('pid')} died or failed); --new-run starts afresh")
        break
    return Choice(None, "a new run")


def reopen(log: RunLog, run_id: str) -> None:
    """Mark a finished (or abandoned) run ``running`` again, by this process.

    The run log has no call for this yet, so it is one guarded UPDATE on ``runs``: it
    changes nothing when another process reopened the run first."""
    db = log.store.conn()
    with log.store.lock, db:
        cur = db.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, pid = ?, host = ? "
            "WHERE run_id = ? AND status != 'running'",
            (os.getpid(), socket.gethostname(), run_id))
    if cur.rowcount != 1:
        raise RunError(f"run {run_id} was resumed by another process",
                       hint="one process per run: stop the other one first")


def load_prior(log: RunLog, run_id: str) -> Prior:
    """What a resumed run needs from its log and checkpoint."""
    import polars as pl

    ev = log.read(run_id, "system_events")
    warm = ev.filter(pl.col("message").str.starts_with("warm-up:"))
    # the last warm-up is the one in force (one is logged only while no bar was decided)
    span: dict[str, Any] = json.loads(warm["data"][-1]) if warm.height else {}
    resumes = ev.filter((pl.col("component") == "live")
                        & pl.col("message").str.starts_with("resumed")).height
    dec = log.read(run_id, "ensemble_decisions")
    last = int(dec["open_time"].max()) if dec.height else None  # type: ignore[arg-type]
    latest: dict[str, OrderEvent] = {}
    for row in log.read(run_id, "orders").iter_rows(named=True):
        latest[row["client_order_id"]] = OrderEvent(**{k: row[k] for k in _ORDER_FIELDS})
    return Prior(
        run_id=run_id,
        warmup_start=span.get("warmup_start"), first_live_bar=span.get("first_live_bar"),
        last_decided=last, checkpoint=checkpoint.load(log, run_id),
        orders=latest, resumes=resumes)
