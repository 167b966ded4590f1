"""Live mode: the strategy graph one closed bar at a time against a Binance USD-M venue.

``engine live STRATEGY.yaml --testnet`` (or ``--url/--ws-url`` for any Binance-compatible
server such as ``engine sim-exchange``). See :mod:`engine.live.runner` for the parts.
"""

from engine.live.decider import LiveDecider, check_live_supported, warmup_needed
from engine.live.options import LiveOptions, LiveResult, read_keys
from engine.live.runner import run_live

__all__ = [
    "LiveDecider",
    "LiveOptions",
    "LiveResult",
    "check_live_supported",
    "read_keys",
    "run_live",
    "warmup_needed",
]
