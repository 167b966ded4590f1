"""The one Binance USD-M REST client package (layer 3: may import engine.data and engine.sim).

=====================  =========================================================================
``venue``              ``make_ccxt(url, key, secret, async_=)``: ccxt ``binanceusdm`` at any URL;
                       the production and testnet hosts
``errors``             ``classify(err)``: TEMPORARY / REJECTED / FATAL, and the typed errors
                       (``VenueUnavailable``, ``RequestRejected``, ``OrderRejected``, ``VenueFatal``)
``retry``              ``RetryPolicy``: tenacity retries of TEMPORARY errors, Retry-After obeyed,
                       injectable sleeps
``budget``             ``RequestBudget``: weight and order buckets at 80 % of the venue's limits,
                       corrected from every answer's headers; a 429/418 halts every caller;
                       orders before reads; ``Stopped`` when the stop event ends a wait
``records``            ``Bar``, ``AccountView``, ``OrderResult``, ``OrderRequest``: decoded answers
``klines``             ``KlinePager``: closed-kline paging shared by the client and the backfill
``client``             ``BinanceClient`` (alias ``Broker``): async market data, account, the
                       one idempotent ``send`` for every order kind, ``venue_specs``
``backfill``           ``fetch_klines``/``backfill_klines``: klines from REST into the store
=====================  =========================================================================

ccxt is imported inside the functions that need it, so importing this package is cheap.
"""

from __future__ import annotations

from engine.binance.budget import (
    BucketState,
    BudgetState,
    Limit,
    RequestBudget,
    Stopped,
    limits_from_rate_limits,
    order_scope,
)
from engine.binance.client import BinanceClient, Broker, EventFn
from engine.binance.errors import (
    Kind,
    OrderRejected,
    RequestRejected,
    VenueError,
    VenueFatal,
    VenueUnavailable,
    Verdict,
    classify,
)
from engine.binance.records import AccountView, Bar, OrderRequest, OrderResult
from engine.binance.retry import RetryPolicy
from engine.binance.venue import PROD_REST, PROD_WS, TESTNET_REST, TESTNET_WS, make_ccxt

__all__ = [
    "PROD_REST", "PROD_WS", "TESTNET_REST", "TESTNET_WS", "AccountView", "Bar", "BinanceClient",
    "Broker", "BucketState", "BudgetState", "EventFn", "Kind", "Limit", "OrderRejected",
    "OrderRequest", "OrderResult", "RequestBudget", "RequestRejected", "RetryPolicy", "Stopped",
    "VenueError", "VenueFatal", "VenueUnavailable", "Verdict", "classify", "limits_from_rate_limits",
    "make_ccxt", "order_scope",
]
