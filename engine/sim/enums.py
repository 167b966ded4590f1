"""Integer codes shared by the kernels, the results and the log (numba-friendly NamedTuples).

Numba reads these module-level NamedTuple instances as compile-time constants, so kernels
write ``FillKind.STOP`` instead of a bare number.
"""

from __future__ import annotations

from typing import NamedTuple


class _Side(NamedTuple):
    SELL: int = -1
    BUY: int = 1


class _FillKind(NamedTuple):
    ENTRY: int = 0  # opens or increases a position (decision at the previous close)
    EXIT: int = 1  # reduces or closes a position on a decision (incl. the close leg of a flip)
    STOP: int = 2  # stop-loss triggered by the bar's high/low
    TARGET: int = 3  # take-profit triggered by the bar's high/low
    LIQUIDATION: int = 4  # closed by the exchange at the liquidation price
    END: int = 5  # closed at the last bar's close (config.close_at_end)


class _OrderType(NamedTuple):
    MARKET: int = 0
    LIMIT: int = 1
    STOP_MARKET: int = 2
    TAKE_PROFIT_MARKET: int = 3
    LIQUIDATION: int = 4


class _Reason(NamedTuple):
    """Why the risk manager's target is what it is (one code per bar and symbol)."""

    NONE: int = 0  # the decision passed unchanged (or a position is held as is)
    EDGE: int = 1  # Kelly edge p - (1-p)/b <= 0: no position
    BREAKER: int = 2  # circuit breaker halted new entries
    FILTER: int = 3  # size below the exchange's min qty / min notional: no position
    CAP: int = 4  # size reduced by a cap (position %, leverage, exposure, bracket, margin)
    FLAT: int = 5  # the decision was flat
    NO_DECISION: int = 6  # no decision (NaN direction/probability or no bar): hold


class _MarginMode(NamedTuple):
    ISOLATED: int = 0
    CROSS: int = 1


class _Sizing(NamedTuple):
    FIXED: int = 0  # margin = fixed_fraction * equity
    KELLY: int = 1  # margin = kelly_fraction * (p - (1-p)/b) * equity


class _BreakerEvent(NamedTuple):
    RESET: int = 0
    DAILY_LOSS: int = 1
    DRAWDOWN: int = 2
    LOSS_STREAK: int = 3


class _OrderCheck(NamedTuple):
    """Result of the exchange filter check on an order (maps to Binance error codes)."""

    OK: int = 0
    MIN_QTY: int = 1  # quantity below minQty (-4003 / -1111 on Binance)
    MAX_QTY: int = 2  # quantity above maxQty (-4005)
    MIN_NOTIONAL: int = 3  # notional below MIN_NOTIONAL (-4164)
    STEP: int = 4  # quantity not a multiple of stepSize (-1111)
    TICK: int = 5  # price not a multiple of tickSize (-1111)


Side = _Side()
FillKind = _FillKind()
OrderType = _OrderType()
Reason = _Reason()
MarginMode = _MarginMode()
Sizing = _Sizing()
BreakerEvent = _BreakerEvent()
OrderCheck = _OrderCheck()


def names(enum: NamedTuple) -> dict[int, str]:
    """Code -> lower-case name, for turning result arrays into readable columns."""
    return {value: key.lower() for key, value in enum._asdict().items()}
