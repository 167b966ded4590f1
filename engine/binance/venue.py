"""The ccxt factory: an UNMODIFIED ccxt ``binanceusdm`` pointed at any Binance-compatible URL.

Only configuration changes: the ``fapi*`` hosts in ``exchange.urls['api']``,
``options={'fetchCurrencies': False}`` (otherwise ``load_markets`` calls the spot host), and
the error-table lookup. ccxt chooses its error table by URL prefix (``https://fapi.binance.com``
means USD-M); against a local URL it finds none and, for example, -2019 would surface as a
plain ``ExchangeError``. We therefore make this one instance read the USD-M ("linear") table
for our URL, exactly as it does for Binance's, by overriding ``get_exceptions_by_url`` on the
instance (ccxt's source is not touched). ccxt's own throttle is off: the one request budget
(:mod:`engine.binance.budget`) paces every call.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from engine.errors import UsageError

TESTNET_REST = "https://testnet.binancefuture.com"
TESTNET_WS = "wss://fstream.binancefuture.com"
PROD_REST = "https://fapi.binance.com"
PROD_WS = "wss://fstream.binance.com"

FAPI_KEYS = (
    "fapiPublic", "fapiPublicV2", "fapiPublicV3", "fapiPrivate", "fapiPrivateV2", "fapiPrivateV3",
    "fapiData",
)


def make_ccxt(
    url: str, key: str | None = None, secret: str | None = None, *, async_: bool = False,
    **options: Any,
) -> Any:
    """A ``ccxt.binanceusdm`` (or ``ccxt.async_support.binanceusdm``) talking to ``url``.

    Parameters
    ----------
    url:
        Base URL of the server, e.g. ``http://127.0.0.1:8900`` or :data:`PROD_REST`.
    key, secret:
        API credentials (never logged).
    async_:
        Return the asyncio client (close it with ``await ex.close()``).
    options:
        Extra ccxt options merged into ``exchange.options``.

    Example
    -------
    >>> ex = make_ccxt("http://127.0.0.1:8900", "key", "secret")
    >>> ex.urls["api"]["fapiPublic"]
    'http://127.0.0.1:8900/fapi/v1'
    >>> make_ccxt("127.0.0.1:8900")
    Traceback (most recent call last):
    ...
    engine.errors.UsageError: not an http(s) URL: '127.0.0.1:8900'
      hint: for example http://127.0.0.1:8900
    """
    if async_:
        import ccxt.async_support as ccxt_mod
    else:
        import ccxt as ccxt_mod

    base = url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"not an http(s) URL: {url!r}", hint="for example http://127.0.0.1:8900")
    config: dict[str, Any] = {
        "options": {"fetchCurrencies": False, **options}, "enableRateLimit": False,
    }
    if key:
        config["apiKey"] = key
    if secret:
        config["secret"] = secret
    ex = ccxt_mod.binanceusdm(config)
    api = dict(ex.urls["api"])
    for name in FAPI_KEYS:
        old = api.get(name)
        if isinstance(old, str):
            api[name] = base + urlsplit(old).path
    ex.urls["api"] = api
    linear_exceptions = ex.exceptions.get("linear", {})
    original = ex.get_exceptions_by_url

    def get_exceptions_by_url(url: str | None, exact_or_broad: str) -> dict[str, Any]:
        if url is not None and url.startswith(base + "/"):
            return dict(linear_exceptions.get(exact_or_broad, {}))
        return dict(original(url, exact_or_broad))

    ex.get_exceptions_by_url = get_exceptions_by_url
    return ex
