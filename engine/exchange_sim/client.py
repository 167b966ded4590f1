"""Moved: the ccxt factory is :func:`engine.binance.venue.make_ccxt` (``engine.binance``).

This re-export only keeps ``engine/live/runner.py`` importing until live mode switches to
``engine.binance``; delete this file then (``engine/exchange_sim`` holds only the simulator).
"""

from __future__ import annotations

from engine.binance.venue import FAPI_KEYS, make_ccxt

__all__ = ["FAPI_KEYS", "make_ccxt"]
