"""HMAC-SHA256 request signing, checked the way Binance checks it.

``totalParams`` is the raw query string concatenated with the raw form body, in the order
sent, with the ``signature`` parameter removed; the signature is the lower-case hex
HMAC-SHA256 of it under the API secret. ``timestamp``/``recvWindow`` are checked with
Binance's rule against each clock the client may have taken its time from (the wall clock,
the market clock, or a clock synced to a ``serverTime`` the server handed out: see
:mod:`engine.exchange_sim.clock`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from urllib.parse import parse_qsl

from engine.exchange_sim import errors as E

_SIG_RE = re.compile(r"(^|&)signature=([^&]*)")
_KEY_RE = re.compile(r"^[A-Za-z0-9]{1,128}$")


def sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` under ``secret`` (Binance's ``signature``).

    >>> sign("2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9",
    ...      "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    ...      "&recvWindow=5000&timestamp=1591702613943")
    '3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9'
    """
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def split_signature(query: str, body: str) -> tuple[str, str | None]:
    """Return (totalParams without the signature, the signature or None)."""
    signature: str | None = None
    parts = []
    for raw in (query, body):
        m = _SIG_RE.search(raw)
        if m is not None:
            signature = m.group(2)
            raw = raw[: m.start()] + raw[m.end():]
            if raw.startswith("&"):
                raw = raw[1:]
        parts.append(raw)
    return "".join(parts), signature


def parse_params(query: str, body: str) -> dict[str, str]:
    """Query and form-body parameters as one dict (body wins on a repeated name)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    if body:
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


def check_timestamp(ts: int, recv: int, now_ms: int | Sequence[int] | None) -> None:
    """-1021 unless ``now - recv <= ts < now + 1000`` for one of the clocks ``now_ms``."""
    if now_ms is None:
        clocks: Sequence[int] = (int(time.time() * 1000),)
    elif isinstance(now_ms, int):
        clocks = (now_ms,)
    else:
        clocks = now_ms
    if any(ts < now + 1000 and now - ts <= recv for now in clocks):
        return
    if all(ts >= now + 1000 for now in clocks):
        raise E.timestamp_ahead()
    raise E.timestamp_outside()


def check_api_key(key: str | None, expected: str) -> None:
    """-2014 for a missing or malformed key, -2015 for a wrong one."""
    if not key or not _KEY_RE.match(key):
        raise E.bad_api_key_format()
    if not hmac.compare_digest(key, expected):
        raise E.bad_api_key()


def check_signed(
    *, query: str, body: str, params: dict[str, str], secret: str,
    now_ms: int | Sequence[int] | None = None,
) -> None:
    """Verify ``timestamp``, ``recvWindow`` and ``signature`` as Binance does.

    Raises -1102 for a missing timestamp or signature, -1021 outside the window (checked
    against each clock of ``now_ms``: one fitting is enough), -1022 on a mismatch.
    ``now_ms`` defaults to the real wall clock.
    """
    ts_raw = params.get("timestamp")
    if not ts_raw:
        raise E.mandatory("timestamp")
    try:
        ts = int(ts_raw)
    except ValueError:
        raise E.illegal("timestamp") from None
    recv_raw = params.get("recvWindow", "5000")
    try:
        recv = int(recv_raw)
    except ValueError:
        raise E.illegal("recvWindow") from None
    if recv <= 0 or recv > 60_000:
        raise E.BinanceError(-1131, "recvWindow must be less than 60000")
    check_timestamp(ts, recv, now_ms)
    payload, signature = split_signature(query, body)
    if not signature:
        raise E.mandatory("signature")
    if not hmac.compare_digest(sign(secret, payload), signature.lower()):
        raise E.bad_signature()
