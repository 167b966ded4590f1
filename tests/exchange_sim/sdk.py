"""The official SDK (``binance-sdk-derivatives-trading-usds-futures`` 18.1.0) as a test client:
built from its configuration objects only, never patched."""

from __future__ import annotations

import logging
from typing import Any

from binance_common.configuration import ConfigurationRestAPI, ConfigurationWebSocketStreams
from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
    DerivativesTradingUsdsFutures,
)

from engine.exchange_sim.runner import ServerThread

from .conftest import KEY, SECRET, url

# Binance's leverage brackets carry decimal ``cum`` values (the engine's snapshot of the
# venue's answer: 0.0, 50.0, 1300.0 ...) where the SDK's single-symbol model declares an
# integer; the SDK relaxes that model and parses it. The venue's answer is kept as it is.
BRACKET_QUIRK = "NotionalAndLeverageBracketsResponse"
COMPLAINTS = ("did not match", "Failed to parse", "Unknown user data event", "Error in callback",
              "failed to connect", "Error received from server")


def model_complaints(records: list[logging.LogRecord]) -> list[str]:
    """The SDK's log lines saying an answer or an event did not fit its models (or a stream
    connection failed), but the known bracket quirk."""
    out = []
    for r in records:
        msg = r.getMessage()
        if not any(c in msg for c in COMPLAINTS):
            continue
        if BRACKET_QUIRK in msg and "cum" in msg:
            continue
        out.append(msg)
    return out


def rest_api(sim: ServerThread) -> Any:
    """The SDK's REST client; its base path is the only thing pointed at the simulator."""
    cfg = ConfigurationRestAPI(api_key=KEY, api_secret=SECRET, base_path=url(sim), timeout=10_000,
                               retries=0)
    return DerivativesTradingUsdsFutures(config_rest_api=cfg).rest_api


def stream_client(sim: ServerThread) -> Any:
    """The SDK's websocket-streams client on the simulator's websocket host (it opens
    ``/market/stream``, ``/public/stream`` and ``/private/stream`` there)."""
    assert sim.server is not None
    cfg = ConfigurationWebSocketStreams(stream_url=sim.server.ws_url, reconnect_delay=500)
    return DerivativesTradingUsdsFutures(config_ws_streams=cfg).websocket_streams
