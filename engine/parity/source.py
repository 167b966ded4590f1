"""The runs a parity report reads: the live run (its span and strategy), the backtest to
compare it with, and their rows, all from the run log (:class:`engine.runlog.RunLog`).

A live run's span comes from its first ``warm-up`` event (``system_events``, written
before its first decision; a resumed run keeps the first one, the anchor of its
walk-forward schedule): ``data.warmup_start`` is the first warm-up bar and
``data.first_live_bar`` the first bar decided live. Its last decided bar is the newest
``open_time`` of its decisions. (An event whose data live mode redacted, because a secret
matched its text, keeps that text under ``data.redacted``: it is read from there.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.runlog import RunLog
from engine.runlog.store import SQLITE_NAME
from engine.strategy.graph import StrategyGraph
from engine.strategy.load import load_strategy_text
from engine.timeutil import fmt_ms

if TYPE_CHECKING:
    import os

#: keys :meth:`StrategyGraph.resolved` adds to the config (not part of the schema)
RESOLVED_EXTRAS = ("features_resolved", "signals_resolved", "source", "overrides")
#: an order's states, last to first when two share a time (the ``orders`` view's rule)
STATUS_RANK = {"new": 0, "partially_filled": 1}
RUNS_HINT = "list the runs with: engine query \"SELECT run_id, mode, strategy, status FROM runs\""


@dataclass(frozen=True)
class LiveSpan:
    """A live run and the bars it decided: ``warmup_start`` .. ``last_bar`` (open times,
    UTC ms), live from ``first_live_bar``."""

    run_id: str
    run: dict[str, Any]
    warmup_start: int
    first_live_bar: int
    last_bar: int

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.run.get("params") or {})


def open_log(results: str | os.PathLike[str] | None) -> RunLog:
    """The run log under ``results``; a folder without one is a usage error (nothing is
    created)."""
    log = RunLog(results)
    if not (log.root / SQLITE_NAME).exists():
        raise UsageError(f"no run log in {log.root} ({SQLITE_NAME} not found)",
                         hint="pass the results folder of the live run with --results")
    return log


def get_run(log: RunLog, run_id: str, *, option: str = "RUN_ID") -> dict[str, Any]:
    run = log.get_run(run_id)
    if run is None:
        raise UsageError(f"{option}: unknown run id {run_id!r} in {log.root}", hint=RUNS_HINT)
    return run


def live_span(log: RunLog, run_id: str) -> LiveSpan:
    """The live run ``run_id`` and its span; UsageError when it is not a live run, never
    warmed up or has decided no live bar."""
    run = get_run(log, run_id)
    if run["mode"] != "live":
        raise UsageError(
            f"RUN_ID: run {run_id!r} is a {run['mode']} run, not a live run",
            hint="engine parity takes a live run's id (a backtest goes in --against)")
    if not isinstance((run.get("params") or {}).get("config"), dict):
        raise UsageError(f"RUN_ID: live run {run_id!r} has no resolved config in runs.params",
                         hint="it was written by an older engine; compare it with --against")
    warm = warmup_event(log, run_id)
    decided = [int(t) for t in log.read(run_id, "ensemble_decisions")["open_time"].to_list()]
    first_live = int(warm["first_live_bar"])
    live = [t for t in decided if t >= first_live]
    if not live:
        raise UsageError(f"RUN_ID: live run {run_id!r} has decided no live bar yet "
                         f"(its first would be {fmt_ms(first_live)})",
                         hint="let it decide at least one closed bar")
    return LiveSpan(run_id, run, int(warm["warmup_start"]), first_live, max(live))


def warmup_event(log: RunLog, run_id: str) -> dict[str, Any]:
    """``data`` of the run's first ``warm-up`` event."""
    ev = log.read(run_id, "system_events").sort("time", maintain_order=True)
    for row in ev.iter_rows(named=True):
        if str(row["message"]).startswith("warm-up") and row["data"]:
            data = json.loads(row["data"])
            if isinstance(data.get("redacted"), str):  # live mode masked a secret in it
                data = json.loads(data["redacted"])
            if "warmup_start" in data and "first_live_bar" in data:
                return dict(data)
    raise UsageError(f"RUN_ID: live run {run_id!r} has no warm-up event: it never started deciding",
                     hint="a live run logs 'warm-up: ...' in system_events before its first decision")


def backtest_run(log: RunLog, run_id: str) -> dict[str, Any]:
    """The ``--against`` run: it must be a backtest."""
    run = get_run(log, run_id, option="--against")
    if run["mode"] != "backtest":
        raise UsageError(f"--against: run {run_id!r} is a {run['mode']} run, not a backtest",
                         hint="pass a backtest's run id, or leave --against out to rerun one")
    return run


def rerun_graph(span: LiveSpan) -> StrategyGraph:
    """The live run's strategy (its resolved config, params and ``--set`` overrides
    applied) over exactly its bars: from its first warm-up bar to its last decided bar."""
    cfg = dict(span.params["config"])
    source = str(cfg.get("source") or "<live run>")
    overrides = [str(o) for o in cfg.get("overrides") or span.params.get("overrides") or []]
    doc = {k: v for k, v in cfg.items() if k not in RESOLVED_EXTRAS}
    return load_strategy_text(json.dumps(doc), file=source, overrides=overrides,
                              start=span.warmup_start, end=span.last_bar)


def decisions(log: RunLog, run_id: str, first: int, last: int) -> list[dict[str, Any]]:
    """The run's ``ensemble_decisions`` rows of bars ``first`` .. ``last``."""
    rows = log.read(run_id, "ensemble_decisions").to_dicts()
    return [r for r in rows if first <= int(r["open_time"]) <= last]


def final_orders(log: RunLog, run_id: str) -> list[dict[str, Any]]:
    """Each order's final state (the ``orders`` view of ``engine query``): its row with the
    latest ``updated_at`` (else ``created_at``), a final status winning a tie with ``new``,
    a later row any other tie."""
    best: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
    for i, r in enumerate(log.read(run_id, "orders").iter_rows(named=True)):
        when = r["updated_at"] if r["updated_at"] is not None else r["created_at"]
        key = (int(when), STATUS_RANK.get(str(r["status"]), 2), i)
        cid = str(r["client_order_id"])
        if cid not in best or key > best[cid][0]:
            best[cid] = (key, r)
    return [r for _, r in sorted(best.values(), key=lambda kv: kv[0])]


def fee_rates(run: dict[str, Any]) -> tuple[float, float]:
    """``(taker, maker)`` fee rates of a run's resolved config (0 when absent)."""
    ex = ((run.get("params") or {}).get("config") or {}).get("execution") or {}
    return float(ex.get("taker_fee") or 0.0), float(ex.get("maker_fee") or 0.0)
