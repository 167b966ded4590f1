"""What ``engine live`` is told: the venue, the keys, how long; and where keys come from.

API keys come from the environment or a key file only; they are never printed or logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine.binance.venue import TESTNET_REST, TESTNET_WS
from engine.errors import UsageError


@dataclass(frozen=True)
class LiveOptions:
    """Where to trade and how long.

    ``url``/``ws_url``: REST and websocket base URLs (``testnet`` picks Binance's futures
    testnet). ``key``/``secret`` are never printed or logged. ``max_bars``: stop after this
    many live closed bars (None: until stopped). ``since``: open time (UTC ms) of the first
    warm-up bar, to read more history than the minimum (:func:`warmup_needed`); an ML
    strategy's walk-forward schedule is anchored there, so ``since`` = a backtest's first bar
    continues that backtest's folds (and reuses its models from ``<results>/models``).
    ``metrics_host``/``metrics_port``: where ``/metrics`` and ``/health`` are served (port
    None: not served; 0: any free port). ``bar_grace_s``: how long a bar waits for a late
    symbol's kline before it is fetched through REST; ``stream_timeout_s``: a stream that
    cannot be (re)connected for this long ends the run (exit 1).
    """

    url: str | None = None
    ws_url: str | None = None
    testnet: bool = False
    key: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    results: str | os.PathLike[str] | None = None
    max_bars: int | None = None
    max_attempts: int = 8
    max_wait_s: float = 60.0
    since: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    bar_grace_s: float = 2.0
    stream_timeout_s: float = 300.0

    def endpoints(self) -> tuple[str, str]:
        if self.testnet and (self.url or self.ws_url):
            raise UsageError("--testnet and --url/--ws-url exclude each other",
                             hint="use --testnet alone, or point --url and --ws-url at a server")
        if self.testnet:
            return TESTNET_REST, TESTNET_WS
        if not self.url or not self.ws_url:
            raise UsageError(
                "live mode needs a venue: --testnet, or --url and --ws-url",
                hint="e.g. --url http://127.0.0.1:8900 --ws-url ws://127.0.0.1:8900 (engine sim-exchange)",
            )
        return self.url, self.ws_url


@dataclass
class LiveResult:
    run_id: str
    status: str
    bars: int
    orders: int
    equity: float


def read_keys(key_file: str | None) -> tuple[str, str]:
    """API key and secret from ``--key-file`` (two lines, or KEY=/SECRET= lines) or the
    BINANCE_API_KEY / BINANCE_API_SECRET environment variables."""
    if key_file:
        try:
            text = open(key_file, encoding="utf-8").read()  # noqa: SIM115
        except OSError as err:
            raise UsageError(f"--key-file {key_file}: cannot read ({err.strerror})") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        kv = dict(ln.split("=", 1) for ln in lines if "=" in ln)
        key = kv.get("BINANCE_API_KEY") or (lines[0] if len(lines) >= 2 and "=" not in lines[0] else "")
        secret = kv.get("BINANCE_API_SECRET") or (lines[1] if len(lines) >= 2 and "=" not in lines[1] else "")
        if not key or not secret:
            raise UsageError(f"--key-file {key_file}: expected the API key and secret",
                             hint="two lines (key, then secret) or BINANCE_API_KEY=... / BINANCE_API_SECRET=...")
        return key.strip(), secret.strip()
    key, secret = os.environ.get("BINANCE_API_KEY", ""), os.environ.get("BINANCE_API_SECRET", "")
    if not key or not secret:
        raise UsageError("no API key: set BINANCE_API_KEY and BINANCE_API_SECRET, or pass --key-file",
                         hint="keys are read from the environment or the file only, never from the command line")
    return key, secret
