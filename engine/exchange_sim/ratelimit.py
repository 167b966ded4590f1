"""Request-weight and order-count budgets, with Binance's 429 then 418 escalation.

Windows are fixed wall-clock windows (Binance counts per calendar minute), per client IP for
weight and per API key for orders. Going over the weight budget answers 429 with
``Retry-After`` (seconds to the end of the window) and a -1003 body. A client that keeps
sending during that back-off more than ``ban_after`` times is banned: 418 with a
``Retry-After`` of ``ban_s`` seconds, doubling with each ban up to three days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.exchange_sim import errors as E

MAX_BAN_S = 3 * 24 * 3600


@dataclass
class _IpState:
    window: int = -1
    used: int = 0
    backoff_until: float = 0.0
    strikes: int = 0
    banned_until: float = 0.0
    bans: int = 0


@dataclass
class _OrderState:
    w10: int = -1
    c10: int = 0
    w60: int = -1
    c60: int = 0


@dataclass
class RateLimiter:
    """Weight per IP and order counts per key over fixed windows of wall time.

    Parameters
    ----------
    weight_limit:
        REQUEST_WEIGHT budget per window (Binance: 2400 per minute).
    window_s:
        Length of the weight window in seconds (60 as on Binance; tests may shorten it).
    orders_10s, orders_1m:
        ORDERS budgets (Binance: 300 per 10 s, 1200 per minute).
    ban_after:
        Requests tolerated inside a 429 back-off before the IP is banned (418).
    ban_s:
        Length of the first ban; each further ban doubles it.
    """

    weight_limit: int = 2400
    window_s: float = 60.0
    orders_10s: int = 300
    orders_1m: int = 1200
    ban_after: int = 2
    ban_s: float = 120.0
    _ips: dict[str, _IpState] = field(default_factory=dict)
    _orders: dict[str, _OrderState] = field(default_factory=dict)

    def used_weight(self, ip: str, now: float) -> int:
        st = self._ips.get(ip)
        if st is None or st.window != int(now // self.window_s):
            return 0
        return st.used

    def charge(self, ip: str, weight: int, now: float) -> int:
        """Add ``weight`` for ``ip`` at wall time ``now`` (s); return the window's total.

        Raises BinanceError 429 or 418 as Binance would.
        """
        st = self._ips.setdefault(ip, _IpState())
        if now < st.banned_until:
            raise E.too_many_requests(self.weight_limit, math.ceil(st.banned_until - now), status=418)
        if now < st.backoff_until:
            st.strikes += 1
            if st.strikes > self.ban_after:
                ban = min(self.ban_s * (2**st.bans), MAX_BAN_S)
                st.bans += 1
                st.strikes = 0
                st.banned_until = now + ban
                st.backoff_until = 0.0
                raise E.too_many_requests(self.weight_limit, math.ceil(ban), status=418)
            raise E.too_many_requests(self.weight_limit, max(1, math.ceil(st.backoff_until - now)))
        window = int(now // self.window_s)
        if st.window != window:
            st.window = window
            st.used = 0
        st.used += weight
        if st.used > self.weight_limit:
            st.backoff_until = (window + 1) * self.window_s
            st.strikes = 0
            raise E.too_many_requests(self.weight_limit, max(1, math.ceil(st.backoff_until - now)))
        return st.used

    def count_order(self, key: str, now: float) -> tuple[int, int]:
        """Count one new order for ``key``; return (count in 10 s, count in 1 min).

        Raises -1015 with HTTP 429 when either ORDERS budget is exceeded.
        """
        st = self._orders.setdefault(key, _OrderState())
        w10, w60 = int(now // 10), int(now // 60)
        if st.w10 != w10:
            st.w10, st.c10 = w10, 0
        if st.w60 != w60:
            st.w60, st.c60 = w60, 0
        st.c10 += 1
        st.c60 += 1
        if st.c10 > self.orders_10s:
            raise E.BinanceError(
                -1015,
                f"Too many new orders; current limit is {self.orders_10s} orders per TEN_SECONDS.",
                status=429,
                headers={"Retry-After": str(max(1, math.ceil((w10 + 1) * 10 - now)))},
            )
        if st.c60 > self.orders_1m:
            raise E.BinanceError(
                -1015,
                f"Too many new orders; current limit is {self.orders_1m} orders per MINUTE.",
                status=429,
                headers={"Retry-After": str(max(1, math.ceil((w60 + 1) * 60 - now)))},
            )
        return st.c10, st.c60

    def order_counts(self, key: str, now: float) -> tuple[int, int]:
        st = self._orders.get(key)
        if st is None:
            return 0, 0
        c10 = st.c10 if st.w10 == int(now // 10) else 0
        c60 = st.c60 if st.w60 == int(now // 60) else 0
        return c10, c60
