"""Parity reports: a live run against the backtest over the same bars (``engine parity``).

Public API::

    parity_report(run_id, *, against=None, results=None, store=None, progress=None)
        -> ParityReport         (rerun the backtest over the live run's bars, or take `against`)
    compare_decisions(live_rows, backtest_rows) -> Tally
    compare_fills(live_fills, backtest_fills, FillRules) -> Tally
    fills(final_order_rows) -> fill rows; price_tolerance, in_bar, fill_fee, same

The comparison rules (what a decision, size, value and fill difference is, and the
venue-precision tolerance of fill prices) are in :mod:`engine.parity.compare`.
"""

from engine.parity.compare import (
    FillRules,
    Mismatch,
    Tally,
    compare_decisions,
    compare_fills,
    fill_fee,
    fills,
    in_bar,
    price_tolerance,
    same,
)
from engine.parity.report import ParityReport, parity_report

__all__ = [
    "FillRules",
    "Mismatch",
    "ParityReport",
    "Tally",
    "compare_decisions",
    "compare_fills",
    "fill_fee",
    "fills",
    "in_bar",
    "parity_report",
    "price_tolerance",
    "same",
]
