"""What ``engine live`` is told: the venue, the keys, the run, how long; where keys come from.

API keys come from the environment or a key file only (a file only its owner can read); they
are never printed or logged (:func:`redact` scrubs them from any text the run writes).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from engine.binance.venue import PROD_REST, PROD_WS, TESTNET_REST, TESTNET_WS
from engine.dashboard.server import check_bind
from engine.errors import UsageError

#: hosts of Binance's production USD-M venue: reaching them needs ``--production``
PRODUCTION_HOSTS = frozenset({urlsplit(PROD_REST).hostname, urlsplit(PROD_WS).hostname})


@dataclass(frozen=True)
class LiveOptions:
    """Where to trade, which run, and how long.

    ``url``/``ws_url``: REST and websocket base URLs; ``testnet`` picks Binance's futures
    testnet, ``production`` Binance's production venue (never a default). ``key``/``secret``
    are never printed or logged. ``max_bars``: stop after this many closed bars (None: until
    stopped). ``since``: open time (UTC ms) of the first warm-up bar, to read more history
    than the minimum (:func:`engine.live.decider.warmup_needed`); an ML strategy's
    walk-forward schedule is anchored there. ``run_id``: resume that run; ``new_run``: never
    resume (by default a run of the same strategy, symbols and venue whose process died is
    resumed). ``flatten_on_exit``: a stop signal also closes every position and cancels
    every order of the run. ``metrics_host``/``metrics_port``: where ``/metrics`` and
    ``/health`` are served (port None: not served; 0: any free port). ``bar_grace_s``: how
    long a bar waits for a late symbol's kline before it is fetched through REST;
    ``stream_timeout_s``: a stream that cannot be (re)connected for this long ends the run.
    ``dashboard_host``/``dashboard_port``/``dashboard_token``: where the dashboard's page and
    ``/ws`` are served (port None: not served; 0: any free port; the same host and port as
    the metrics: one server), the token they require (a non-loopback host needs one; never
    printed).
    """

    url: str | None = None
    ws_url: str | None = None
    testnet: bool = False
    production: bool = False
    key: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    results: str | os.PathLike[str] | None = None
    max_bars: int | None = None
    max_attempts: int = 8
    max_wait_s: float = 60.0
    since: int | None = None
    run_id: str | None = None
    new_run: bool = False
    flatten_on_exit: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    bar_grace_s: float = 2.0
    stream_timeout_s: float = 300.0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None
    dashboard_token: str | None = field(default=None, repr=False)

    def endpoints(self) -> tuple[str, str]:
        """``(REST URL, websocket URL)`` of the venue; a usage error when none (or two) is
        named, or when a URL reaches Binance's production venue without ``production``."""
        if self.dashboard_port is not None:
            check_bind(self.dashboard_host, self.dashboard_token)
        if self.run_id and self.new_run:
            raise UsageError("--run-id and --new-run exclude each other",
                             hint="--run-id resumes a run; --new-run starts a fresh one")
        named = [n for n, on in (("--testnet", self.testnet), ("--production", self.production),
                                 ("--url/--ws-url", bool(self.url or self.ws_url))) if on]
        if len(named) > 1:
            raise UsageError(f"{' and '.join(named)} exclude each other",
                             hint="name one venue: --testnet, --production, or --url and --ws-url")
        if self.testnet:
            return TESTNET_REST, TESTNET_WS
        if self.production:
            return PROD_REST, PROD_WS
        if not self.url or not self.ws_url:
            raise UsageError(
                "live mode needs a venue: --testnet, or --url and --ws-url (--production for "
                "Binance's production venue)",
                hint="e.g. --url http://127.0.0.1:8900 --ws-url ws://127.0.0.1:8900 (engine sim-exchange)",
            )
        for u in (self.url, self.ws_url):
            if urlsplit(u).hostname in PRODUCTION_HOSTS:
                raise UsageError(f"{u} is Binance's production venue: trading there needs --production",
                                 hint="use --production (and no --url/--ws-url), or --testnet")
        return self.url, self.ws_url


@dataclass
class LiveResult:
    """How a live run ended. ``kept``: the protective orders left resting at the exchange
    for positions still held (symbol -> [(leg, trigger price)]); ``resumed``: the run was
    resumed rather than started."""

    run_id: str
    status: str
    bars: int
    orders: int
    equity: float
    resumed: bool = False
    kept: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    positions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunStart:
    """What a start decided: the run, whether it was resumed and why, where the metrics are."""

    run_id: str
    resumed: bool
    reason: str
    metrics_url: str | None = None
    dashboard_url: str | None = None


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret (of 4+ characters) replaced by ``***``.

    >>> redact("key=abcd1234 ok", ("abcd1234",))
    'key=*** ok'
    """
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def _check_private(path: str) -> None:
    """A key file must be readable by its owner only (mode 0600 or stricter)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise UsageError(f"--key-file {path}: cannot read ({err.strerror})") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UsageError(
            f"--key-file {path}: group or others may access it (mode {mode:04o}); "
            "a key file must be readable by its owner only",
            hint=f"chmod 600 {path}")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise UsageError(f"--key-file {path}: owned by another user (uid {st.st_uid})",
                         hint="the key file must belong to the user who runs engine live")


def read_keys(key_file: str | None) -> tuple[str, str]:
    """API key and secret from ``--key-file`` (two lines, or KEY=/SECRET= lines; mode 0600)
    or the BINANCE_API_KEY / BINANCE_API_SECRET environment variables."""
    if key_file:
        _check_private(key_file)
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
