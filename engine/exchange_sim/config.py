"""Settings of one exchange-simulator instance (frozen; built by the CLI or by tests).

Named apart from :class:`engine.sim.SimConfig` (the portfolio simulator's settings, which a
strategy's execution and risk sections are): this one says how the local exchange serves
(market replay, network, keys, rate limits, faults), not how a strategy trades.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.exchange_sim.faults import FaultSpec


@dataclass(frozen=True)
class ExchangeSimSettings:
    """Everything ``engine sim-exchange`` takes.

    ``start_ms``/``end_ms`` bound the market clock; ``speed`` is market seconds per real
    second (0 freezes the clock: it then moves only through ``POST /sim/advance``).
    ``weight_window_s`` and ``ban_s`` default to Binance's minute window and two-minute first
    ban; tests shorten them. ``api_secret`` is never logged or echoed. ``legacy_ws`` also
    serves the websocket paths Binance retired on 2026-04-23 (``/ws``, ``/stream``); by
    default they answer 404, as they no longer serve klines or user data on the venue.
    """

    symbols: tuple[str, ...]
    interval: str
    start_ms: int
    end_ms: int | None = None
    speed: float = 300.0
    host: str = "127.0.0.1"
    port: int = 8900
    api_key: str = field(default="", repr=False)
    api_secret: str = field(default="", repr=False)
    balance: float = 10_000.0
    faults: FaultSpec = field(default_factory=FaultSpec)
    seed: int = 0
    store: str | None = None
    substeps: int = 4
    slippage_bps: float = 0.0
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    default_leverage: int = 20
    weight_limit: int = 2400
    weight_window_s: float = 60.0
    orders_10s: int = 300
    orders_1m: int = 1200
    ban_after: int = 2
    ban_s: float = 120.0
    fault_log: Path | None = None
    ping_interval_s: float = 180.0
    queue_limit: int = 100_000
    legacy_ws: bool = False

