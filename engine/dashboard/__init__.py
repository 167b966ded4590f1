"""The dashboard: one page and a WebSocket of state deltas, for a live run or a finished one.

Live mode (``engine live --dashboard-port``) and ``engine dashboard RUN_ID`` serve the same page.
See ``docs/architecture.md`` ("Dashboard").
"""
