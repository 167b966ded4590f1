"""``engine report RUN_ID``: a self-contained HTML tearsheet of one run (plotly, no network).

Sections: run header, metrics, equity and drawdown, price with entries and exits (candles
from the data store named in the run's params, else the decision prices), monthly returns,
trades, models (walk-forward metrics, calibration curve, contributions) when the run logged
predictions, and warnings/errors from ``system_events``.

Public API: ``build_report(run_id, *, results_dir=None, out=None, store=None) -> Path``.
"""

from engine.report.page import build_report

__all__ = ["build_report"]
