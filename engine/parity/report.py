"""``engine parity``: did live mode do what the backtest would have done?

:func:`parity_report` takes a live run from the run log and, without ``against``, reruns
the backtest over exactly its bars, settings and warm-up (:func:`engine.parity.source.rerun_graph`:
the live run's resolved config from its first warm-up bar to its last decided bar; the
backtest is logged like any other, so it can be queried), or takes the backtest
``against``. It then compares the two over the live bars (``open_time >= first_live_bar``,
up to the last bar both decided) with :mod:`engine.parity.compare`: decisions bar by bar,
then fills. Nothing is printed: the CLI draws the :class:`ParityReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.backtest import run_backtest
from engine.errors import ConfigError, DataError, UsageError
from engine.parity import source
from engine.parity.compare import (
    DEFAULT_DIGITS,
    KINDS,
    RESTING_LEGS,
    FillRules,
    Mismatch,
    compare_decisions,
    compare_fills,
    fills,
)
from engine.progress import Progress
from engine.runlog import RunLog
from engine.sim.specs import load_specs
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import os

#: mismatches of each kind listed in ``first_mismatches`` by default
FIRST = 10


@dataclass(frozen=True)
class ParityReport:
    """The comparison of a live run (``run_id``) with a backtest (``against``; ``rerun``:
    made by this report) over the live bars ``first_live_bar`` .. ``last_bar``.

    ``bars_compared`` counts bar open times, ``decisions_compared`` their (symbol, bar)
    decisions; ``decision_mismatches`` (action differs, or a decision on one side only),
    ``size_mismatches`` (same action, another target position), ``value_mismatches`` (same
    action and target, confidence or probability differs), ``fill_differences`` (fills
    differing or on one side only, of ``fills_compared``); ``warmup_fills``: the backtest's
    fills before the first live bar (live mode trades none there); ``stale_decisions``: live
    bars that closed while live mode was down (decided after a restart, not traded: compared
    by value only, see :mod:`engine.parity.compare`). ``mismatches`` holds
    every difference in bar order. The check passes (:attr:`ok`) when no decision differs.
    """

    run_id: str
    against: str
    rerun: bool
    symbols: tuple[str, ...]
    interval: str
    first_live_bar: int
    last_bar: int
    bars_compared: int
    decisions_compared: int
    decision_mismatches: int
    size_mismatches: int
    value_mismatches: int
    fills_compared: int
    fill_differences: int
    warmup_fills: int
    stale_decisions: int = 0
    mismatches: tuple[Mismatch, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.decision_mismatches == 0

    def first_mismatches(self, per_kind: int = FIRST) -> list[Mismatch]:
        """The first ``per_kind`` differences of each kind, in bar order."""
        seen = dict.fromkeys(KINDS, 0)
        out = []
        for m in self.mismatches:
            if seen[m.kind] < per_kind:
                seen[m.kind] += 1
                out.append(m)
        return out

    def to_dict(self, per_kind: int = FIRST) -> dict[str, Any]:
        """The JSON document of ``engine parity --json``."""
        return {
            "bars_compared": self.bars_compared,
            "decision_mismatches": self.decision_mismatches,
            "size_mismatches": self.size_mismatches,
            "fill_differences": self.fill_differences,
            "first_mismatches": [
                {**m.to_dict(), "time_utc": fmt_ms(m.open_time)}
                for m in self.first_mismatches(per_kind)
            ],
            "value_mismatches": self.value_mismatches,
            "decisions_compared": self.decisions_compared,
            "fills_compared": self.fills_compared,
            "warmup_fills": self.warmup_fills,
            "stale_decisions": self.stale_decisions,
            "run_id": self.run_id,
            "against": self.against,
            "rerun": self.rerun,
            "symbols": list(self.symbols),
            "interval": self.interval,
            "first_live_bar": self.first_live_bar,
            "last_bar": self.last_bar,
            "first_live_bar_utc": fmt_ms(self.first_live_bar),
            "last_bar_utc": fmt_ms(self.last_bar),
            "ok": self.ok,
        }


def parity_report(
    run_id: str,
    *,
    against: str | None = None,
    results: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> ParityReport:
    """Compare the live run ``run_id`` with the backtest ``against``, or (None) with a
    backtest rerun over exactly its bars, settings and warm-up (logged under ``results``,
    read from the data ``store``).

    Raises
    ------
    UsageError
        ``run_id`` is unknown or not a live run (or has decided nothing live yet),
        ``against`` is unknown or not a backtest, or the two runs share no live bar.
        Nothing is written.
    DataError
        The store lacks the live run's bars (the message says how to get them).

    Examples
    --------
    >>> import tempfile
    >>> parity_report("nope", results=tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    engine.errors.UsageError: no run log in ... (runlog.sqlite not found)
      hint: pass the results folder of the live run with --results
    """
    rerun = against is None
    with source.open_log(results) as log:
        span = source.live_span(log, run_id)
        if against is not None:
            source.backtest_run(log, against)
            _require_overlap(log, span, against)
    if against is None:
        graph = source.rerun_graph(span)
        res = run_backtest(graph, store=store, results=results, progress=progress)
        assert res.run_id is not None
        against = res.run_id
    with RunLog(results) as log:
        return _compare(log, span, source.get_run(log, against, option="--against"), rerun=rerun)


def _require_overlap(log: RunLog, span: source.LiveSpan, against: str) -> None:
    bt = source.decisions(log, against, span.first_live_bar, span.last_bar)
    if not bt:
        raise UsageError(
            f"--against: backtest {against!r} has no bar in the live run's "
            f"{fmt_ms(span.first_live_bar)} .. {fmt_ms(span.last_bar)}",
            hint="rerun it over the live bars: leave --against out")


def _compare(log: RunLog, span: source.LiveSpan, bt_run: dict[str, Any], *,
             rerun: bool) -> ParityReport:
    bt_id = str(bt_run["run_id"])
    first = span.first_live_bar
    bt_dec = source.decisions(log, bt_id, first, span.last_bar)
    if not bt_dec:
        raise UsageError(f"backtest {bt_id!r} has no bar in the live run's "
                         f"{fmt_ms(first)} .. {fmt_ms(span.last_bar)}")
    last = min(span.last_bar, max(int(r["open_time"]) for r in bt_dec))
    dec = compare_decisions(source.decisions(log, span.run_id, first, last),
                            [r for r in bt_dec if int(r["open_time"]) <= last])
    live_fills = _window(fills(source.final_orders(log, span.run_id)), first, last)
    all_bt = fills(source.final_orders(log, bt_id))
    symbols = tuple(span.params.get("symbols") or ())
    interval = str(span.params.get("interval") or "")
    rules = FillRules(step_ms=interval_ms(interval), digits=fill_digits(symbols),
                      live_fees=source.fee_rates(span.run), backtest_fees=source.fee_rates(bt_run))
    fil = compare_fills(live_fills, _window(all_bt, first, last), rules)
    mismatches = sorted(dec.mismatches + fil.mismatches, key=Mismatch.sort_key)
    return ParityReport(
        run_id=span.run_id, against=bt_id, rerun=rerun, symbols=symbols, interval=interval,
        first_live_bar=first, last_bar=last,
        bars_compared=len({int(r["open_time"]) for r in bt_dec if int(r["open_time"]) <= last}),
        decisions_compared=dec.compared, decision_mismatches=dec.decision,
        size_mismatches=dec.size, value_mismatches=dec.value, fills_compared=fil.compared,
        fill_differences=fil.fill, warmup_fills=sum(f["open_time"] < first for f in all_bt),
        stale_decisions=dec.stale,
        mismatches=tuple(mismatches))


def _window(rows: list[dict[str, Any]], first: int, last: int) -> list[dict[str, Any]]:
    """Fills of the compared bars: a decision's order up to the bar before ``last`` (the
    last bar's orders fill after it), a stop or target triggered up to ``last``."""
    return [r for r in rows
            if first <= r["open_time"] < last or r["open_time"] == last and r["leg"] in RESTING_LEGS]


def fill_digits(symbols: tuple[str, ...]) -> dict[str, int]:
    """Decimals of the average fill price the venue reports per symbol: its price precision
    (the shipped exchangeInfo) + 3; :data:`DEFAULT_DIGITS` for a symbol it does not list."""
    out = {}
    for s in symbols:
        try:
            out[s] = load_specs([s])[0].price_precision + 3
        except (ConfigError, DataError):
            out[s] = DEFAULT_DIGITS
    return out
