"""Live mode: the strategy graph one closed bar at a time against a Binance USD-M venue.

``engine live [STRATEGY.yaml] --testnet`` (``--production`` for Binance's production venue,
or ``--url/--ws-url`` for any Binance-compatible server such as ``engine sim-exchange``). A
run survives its process: see :mod:`engine.live.resume`, :mod:`engine.live.checkpoint` and
:mod:`engine.live.stops`; :mod:`engine.live.runner` wires the parts.
"""

from engine.live.decider import LiveDecider, check_live_supported, warmup_needed
from engine.live.options import LiveOptions, LiveResult, RunStart, read_keys
from engine.live.runner import run_live

__all__ = [
    "LiveDecider",
    "LiveOptions",
    "LiveResult",
    "RunStart",
    "check_live_supported",
    "read_keys",
    "run_live",
    "warmup_needed",
]
