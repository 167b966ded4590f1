"""Binance's error bodies, as the simulator answers them.

A handler raises :class:`BinanceError`; the server turns it into the HTTP status and the
``{"code": ..., "msg": ...}`` body that Binance sends. Messages are Binance's own wording
(ccxt matches on some of them), see ``../shared/reference/binance-usdm-api.md`` section 7.
"""

from __future__ import annotations


class BinanceError(Exception):
    """A Binance API error: HTTP status, negative error code and message."""

    def __init__(self, code: int, msg: str, *, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"code": self.code, "msg": self.msg}


def unknown(msg: str = "An unknown error occured while processing the request.") -> BinanceError:
    return BinanceError(-1000, msg)


def too_many_requests(limit: int, retry_after: int, *, status: int = 429) -> BinanceError:
    msg = (
        f"Too many requests; current limit is {limit} requests per minute. Please use the websocket "
        "for live updates to avoid polling the API."
    )
    if status == 418:
        msg = f"Way too many requests; IP banned until further notice. Retry after {retry_after} seconds."
    return BinanceError(-1003, msg, status=status, headers={"Retry-After": str(retry_after)})


def timestamp_outside() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")


def bad_precision() -> BinanceError:
    return BinanceError(-1111, "Precision is over the maximum defined for this asset.")


def bad_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def bad_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


def bad_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def bad_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def bad_tif() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def not_required(name: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{name}' sent when not required.")


def cancel_rejected() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def no_such_order() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def bad_api_key_format() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", status=401)


def bad_api_key() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)


def margin_insufficient() -> BinanceError:
    return BinanceError(-2019, "Margin is insufficient.")


def would_trigger() -> BinanceError:
    return BinanceError(-2021, "Order would immediately trigger.")


def reduce_only_rejected() -> BinanceError:
    return BinanceError(-2022, "ReduceOnly Order is rejected.")


def qty_le_zero() -> BinanceError:
    return BinanceError(-4003, "Quantity less than or equal to zero.")


def qty_below_min() -> BinanceError:
    return BinanceError(-4004, "Quantity less than min quantity.")


def qty_above_max() -> BinanceError:
    return BinanceError(-4005, "Quantity greater than max quantity.")


def price_le_zero() -> BinanceError:
    return BinanceError(-4001, "Price less than 0.")


def price_not_tick() -> BinanceError:
    return BinanceError(-4014, "Price not increased by tick size.")


def qty_not_step() -> BinanceError:
    return BinanceError(-4023, "Qty not increased by step size.")


def bad_leverage() -> BinanceError:
    return BinanceError(-4028, "Leverage is not valid.")


def margin_type_unchanged() -> BinanceError:
    return BinanceError(-4046, "No need to change margin type.")


def margin_type_open_orders() -> BinanceError:
    return BinanceError(-4047, "Margin type cannot be changed if there exists open orders.")


def margin_type_position() -> BinanceError:
    return BinanceError(-4048, "Margin type cannot be changed if there exists position.")


def position_side_unchanged() -> BinanceError:
    return BinanceError(-4059, "No need to change position side.")


def position_side_open() -> BinanceError:
    return BinanceError(-4068, "Position side cannot be changed if there exists position.")


def position_side_mismatch() -> BinanceError:
    return BinanceError(-4061, "Order's position side does not match user's setting.")


def min_notional(notional: str) -> BinanceError:
    return BinanceError(-4164, f"Order's notional must be no smaller than {notional} (unless you choose reduce only).")


def fok_rejected() -> BinanceError:
    return BinanceError(
        -5021, "Due to the order could not be filled immediately, the FOK order has been rejected."
    )


def gtx_rejected() -> BinanceError:
    return BinanceError(
        -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."
    )


def algo_endpoint_required() -> BinanceError:
    """A conditional type on /fapi/v1/order (Binance since 2025-12-09; ccxt: InvalidOrder)."""
    return BinanceError(
        -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
    )


def no_data(what: str, symbol: str) -> BinanceError:
    """An endpoint whose data the store does not hold (depth, open interest)."""
    return BinanceError(
        -5000, f"The simulator has no {what} for {symbol}: the store it replays holds klines and funding "
        "rates only, so this endpoint has nothing to serve.",
    )


def listen_key_missing() -> BinanceError:
    return BinanceError(-1125, "This listenKey does not exist.")


def service_unavailable() -> BinanceError:
    return BinanceError(-1001, "Internal error; unable to process your request. Please try again.", status=503)


def unknown_status() -> BinanceError:
    return BinanceError(
        -1007,
        "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        status=503,
    )
