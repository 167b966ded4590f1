"""One order of the simulated venue: a plain order (``/fapi/v1/order``) or an algo order
(``/fapi/v1/algoOrder``, Binance's conditional orders since 2025-12-09), and the order types
and time-in-force values the simulator supports."""

from __future__ import annotations

from dataclasses import dataclass

NAN = float("nan")
# what the simulator trades; exchangeInfo advertises exactly these
PLAIN_TYPES = ("LIMIT", "MARKET")
CONDITIONAL = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
ORDER_TYPES = (*PLAIN_TYPES, *CONDITIONAL)
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTX")
# Binance's conditional types, refused on /fapi/v1/order since 2025-12-09 (-4120)
ALGO_ONLY = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
# algo statuses (Binance's "Event: Algo Order Update" page): NEW until the trigger,
# TRIGGERING (condition met), TRIGGERED (its order placed), FINISHED (that order final),
# CANCELED (by the user), REJECTED (its order refused, e.g. reduce-only with no position),
# EXPIRED (by the system)
ALGO_OPEN = ("NEW",)


@dataclass
class Order:
    """A plain order, or an algo order when ``algo_id`` is set (then ``algo_status`` is its
    status and ``actual_order_id`` the MARKET order its trigger created, whose
    ``parent_algo`` points back)."""

    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    position_side: str
    type: str
    tif: str
    qty: float  # NaN for a closePosition algo order
    price: float  # NaN for market types
    stop_price: float  # NaN when none
    reduce_only: bool
    close_position: bool
    working_type: str
    time: int
    update_time: int
    status: str = "NEW"
    executed: float = 0.0
    cum_quote: float = 0.0
    algo_id: int | None = None
    algo_status: str = "NEW"
    actual_order_id: int | None = None
    trigger_time: int = 0
    parent_algo: int | None = None
    price_protect: bool = False
    good_till: int = 0
    last_fill_qty: float = 0.0
    last_fill_price: float = 0.0
    last_fee: float = 0.0
    last_realized: float = 0.0
    last_trade_id: int = 0
    maker: bool = False

    @property
    def sgn(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def avg_price(self) -> float:
        return self.cum_quote / self.executed if self.executed > 0 else 0.0

    @property
    def is_algo(self) -> bool:
        return self.algo_id is not None

    @property
    def is_open(self) -> bool:
        if self.algo_id is not None:
            return self.algo_status in ALGO_OPEN
        return self.status in OPEN_STATUSES
