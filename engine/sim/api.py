"""``engine.sim.simulate``: the batch entry to the futures portfolio simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ConfigError, DataError
from engine.sim.config import SimConfig
from engine.sim.specs import SymbolSpec, spec_arrays
from engine.sim.state import (
    Account,
    Records,
    check_capacity,
    new_account,
    new_breaker,
    new_pending,
    new_records,
)

FILL_DTYPE = np.dtype(
    [
        ("bar", "i8"),
        ("symbol", "i8"),
        ("side", "i8"),
        ("qty", "f8"),
        ("price", "f8"),
        ("fee", "f8"),
        ("realized", "f8"),
        ("kind", "i8"),
        ("order_type", "i8"),
    ]
)
TRADE_DTYPE = np.dtype(
    [
        ("symbol", "i8"),
        ("side", "i8"),
        ("entry_bar", "i8"),
        ("exit_bar", "i8"),
        ("entry_price", "f8"),
        ("exit_price", "f8"),
        ("qty", "f8"),
        ("pnl", "f8"),
        ("fees", "f8"),
        ("funding", "f8"),
        ("exit_kind", "i8"),
    ]
)
FUNDING_DTYPE = np.dtype(
    [
        ("bar", "i8"),
        ("symbol", "i8"),
        ("qty", "f8"),
        ("mark", "f8"),
        ("rate", "f8"),
        ("amount", "f8"),
    ]
)
EVENT_DTYPE = np.dtype([("bar", "i8"), ("symbol", "i8"), ("code", "i8"), ("value", "f8")])


@dataclass(frozen=True, eq=False)
class SimResult:
    """Everything one simulation produced. Arrays are indexed ``[bar]`` or ``[bar, symbol]``.

    Attributes
    ----------
    equity : float64[n]  wallet + unrealised PnL at each bar's close.
    wallet : float64[n]  wallet balance (cash + realised PnL - fees - funding) at each close.
    position : float64[n, s]  signed position at each close (after that bar's fills).
    target_qty : float64[n, s]  the target the risk manager set at each close (fills at t+1).
    reason : int64[n, s]  :data:`engine.sim.enums.Reason` code of each target.
    fills : structured (FILL_DTYPE)  bar, symbol, side (+1 buy/-1 sell), qty, price, fee,
        realized, kind (:data:`FillKind`), order_type (:data:`OrderType`).
    trades : structured (TRADE_DTYPE)  closed round trips; pnl is net of fees and funding;
        funding > 0 means paid; exit_kind is the FillKind of the closing fill.
    funding : structured (FUNDING_DTYPE)  every funding settlement; amount > 0 means paid.
    events : structured (EVENT_DTYPE)  breaker trips and resets (symbol -1 = account).
    liquidations : number of positions liquidated.
    account : the final :class:`~engine.sim.state.Account` (open positions, stops, ...).
    symbols : the symbol of each column.
    """

    equity: np.ndarray
    wallet: np.ndarray
    position: np.ndarray
    target_qty: np.ndarray
    reason: np.ndarray
    fills: np.ndarray
    trades: np.ndarray
    funding: np.ndarray
    events: np.ndarray
    liquidations: int
    account: Account
    symbols: tuple[str, ...]

    def frames(self) -> dict[str, Any]:
        """The record arrays as polars DataFrames (fills, trades, funding, events), with
        readable ``kind`` / ``order_type`` / ``exit_kind`` / ``code`` and a ``symbol`` name."""
        import polars as pl

        from engine.sim.enums import BreakerEvent, FillKind, OrderType, names

        def frame(arr: np.ndarray, maps: dict[str, dict[int, str]]) -> pl.DataFrame:
            cols: dict[str, Any] = {name: arr[name] for name in arr.dtype.names or ()}
            for col, mapping in maps.items():
                cols[col] = [mapping[int(v)] for v in arr[col]]
            if "symbol" in cols:
                cols["symbol"] = [
                    "*" if int(v) < 0 else self.symbols[int(v)] for v in arr["symbol"]
                ]
            return pl.DataFrame(cols)

        return {
            "fills": frame(self.fills, {"kind": names(FillKind), "order_type": names(OrderType)}),
            "trades": frame(self.trades, {"exit_kind": names(FillKind)}),
            "funding": frame(self.funding, {}),
            "events": frame(self.events, {"code": names(BreakerEvent)}),
        }


def _as_2d(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.ascontiguousarray(value, dtype=np.float64)
    if arr.ndim == 1 and shape[1] == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape != shape:
        raise DataError(
            f"{name}: expected an array of shape {shape} [n_bars, n_symbols], got {arr.shape}",
            hint="align every input on one time grid, one column per symbol",
        )
    return arr


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    idx = np.argwhere(mask)[0]
    return int(idx[0]), int(idx[-1])


def _trim(buf: tuple, fields: tuple[str, ...], dtype: np.dtype) -> np.ndarray:
    k = int(buf[0][0])
    out = np.empty(k, dtype=dtype)
    for name, arr in zip(fields, buf[1:], strict=True):
        out[name] = arr[:k]
    return out


def records_to_arrays(recs: Records) -> dict[str, np.ndarray]:
    """Copy the filled part of each record buffer into a structured array."""
    check_capacity(recs)
    return {
        "fills": _trim(recs.fills, recs.fills._fields[1:], FILL_DTYPE),
        "trades": _trim(recs.trades, recs.trades._fields[1:], TRADE_DTYPE),
        "funding": _trim(recs.funding, recs.funding._fields[1:], FUNDING_DTYPE),
        "events": _trim(recs.events, recs.events._fields[1:], EVENT_DTYPE),
    }


def simulate(
    open: Any,  # noqa: A002 - the market's own word
    high: Any,
    low: Any,
    close: Any,
    *,
    funding_rate: Any | None,
    direction: Any,
    prob: Any | None = None,
    payoff: Any | None = None,
    atr: Any | None = None,
    mark_price: Any | None = None,
    open_time: Any | None = None,
    specs: list[SymbolSpec],
    config: SimConfig,
) -> SimResult:
    """Simulate a futures portfolio over time-aligned bars.

    Parameters
    ----------
    open, high, low, close : float64[n_bars, n_symbols]
        OHLC on one time grid; a row of NaN where a symbol has no bar.
    funding_rate : float64[n, s] or None
        The funding rate settled at the OPEN of bar t (the bar whose open time is a funding
        time), NaN elsewhere. None: no funding. It applies to the position held at that
        instant, i.e. before the order decided at close t-1 fills at the open of t (as on
        Binance, where that order arrives after the funding timestamp).
    direction : float64[n, s]
        The decision at the CLOSE of bar t: -1 short, 0 flat, +1 long, NaN no decision
        (hold). It fills at the open of bar t+1, never at the close of t.
    prob : float64[n, s], optional
        Probability that a position in ``direction`` wins (for a short pass 1 - P(up));
        required when ``config.sizing == "kelly"``.
    payoff : float64[n, s], optional
        Payoff ratio b (average win / average loss); ``config.payoff_ratio`` when None/NaN.
    atr : float64[n, s], optional
        ATR at each decision bar; required for ATR-multiple stops or targets.
    mark_price : float64[n, s], optional
        Mark price used for funding at a funding bar; the bar's open when None/NaN.
    open_time : int64[n], optional
        Bar open times (ms, UTC); required by ``config.daily_loss_pct`` (UTC days).
    specs : list[SymbolSpec]
        One per column (:func:`engine.sim.specs.load_specs`).
    config : SimConfig

    Returns
    -------
    SimResult

    Example
    -------
    >>> import numpy as np
    >>> from engine.sim import SimConfig, load_specs, simulate
    >>> px = np.array([[100.0], [101.0], [102.0]]) * 300
    >>> r = simulate(px, px, px, px, funding_rate=None, direction=np.array([[1.0], [1.0], [0.0]]),
    ...              specs=load_specs(["BTCUSDT"]), config=SimConfig(taker_fee=0.0))
    >>> r.position[:, 0].tolist()
    [0.0, 0.33, 0.33]
    """
    from engine.sim.loop import simulate_nb

    if not isinstance(config, SimConfig):
        raise ConfigError(f"config: expected a SimConfig, got {type(config).__name__}")
    o = np.ascontiguousarray(open, dtype=np.float64)
    if o.ndim == 1:
        o = o.reshape(-1, 1)
    if o.ndim != 2:
        raise DataError(f"open: expected a 2-D array [n_bars, n_symbols], got {o.ndim} dimensions")
    shape = (o.shape[0], o.shape[1])
    n, n_sym = shape
    if len(specs) != n_sym:
        raise ConfigError(
            f"specs: {len(specs)} symbol specs for {n_sym} price columns",
            hint="give one SymbolSpec per column",
        )
    h = _as_2d("high", high, shape)
    lo = _as_2d("low", low, shape)
    c = _as_2d("close", close, shape)
    has_bar = ~np.isnan(o)
    for name, arr in (("high", h), ("low", lo), ("close", c)):
        bad = np.isnan(arr) != ~has_bar
        if bad.any():
            t, s = _first_bad(bad)
            raise DataError(
                f"{name}[{t}, {s}] ({specs[s].symbol}): NaN where open is not (or the reverse)",
                hint="a missing bar must be NaN in all of open, high, low and close",
            )
    with np.errstate(invalid="ignore"):
        bad = has_bar & ((h < lo) | (h < o) | (h < c) | (lo > o) | (lo > c) | (o <= 0))
    if bad.any():
        t, s = _first_bad(bad)
        raise DataError(
            f"bar [{t}, {s}] ({specs[s].symbol}): inconsistent OHLC "
            f"(open={o[t, s]}, high={h[t, s]}, low={lo[t, s]}, close={c[t, s]})"
        )
    fr = (
        np.full(shape, np.nan)
        if funding_rate is None
        else _as_2d("funding_rate", funding_rate, shape)
    )
    d = _as_2d("direction", direction, shape)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(d) & (d != -1) & (d != 0) & (d != 1)
    if bad.any():
        t, s = _first_bad(bad)
        raise DataError(f"direction[{t}, {s}]: must be -1, 0, +1 or NaN, got {d[t, s]}")
    none2 = np.empty((0, n_sym))
    p = none2 if prob is None else _as_2d("prob", prob, shape)
    if prob is not None:
        with np.errstate(invalid="ignore"):
            bad = (p < 0) | (p > 1)
        if bad.any():
            t, s = _first_bad(bad)
            raise DataError(
                f"prob[{t}, {s}]: must be a probability in [0, 1] or NaN, got {p[t, s]}"
            )
    if config.sizing == "kelly" and prob is None:
        raise ConfigError(
            "sizing: 'kelly' needs prob (calibrated probabilities)",
            hint="pass prob=... or use sizing='fixed'",
        )
    b = none2 if payoff is None else _as_2d("payoff", payoff, shape)
    a = none2 if atr is None else _as_2d("atr", atr, shape)
    if atr is None and (config.stop_loss_atr is not None or config.take_profit_atr is not None):
        raise ConfigError(
            "stop_loss_atr/take_profit_atr need the atr input",
            hint="pass atr=... (ATR at each bar)",
        )
    m = none2 if mark_price is None else _as_2d("mark_price", mark_price, shape)
    if open_time is None:
        if config.daily_loss_pct is not None:
            raise ConfigError(
                "daily_loss_pct needs open_time to know UTC days", hint="pass open_time=... (ms)"
            )
        tm = np.empty(0, dtype=np.int64)
    else:
        tm = np.ascontiguousarray(open_time, dtype=np.int64)
        if tm.shape != (n,):
            raise DataError(f"open_time: expected shape ({n},), got {tm.shape}")
    for sp in specs:
        top = float(sp.bracket_leverage.max())
        if config.leverage > top:
            raise ConfigError(
                f"leverage: {config.leverage:g} exceeds {sp.symbol}'s maximum of {top:g}",
                hint=f"use leverage <= {top:g}",
            )
    prm = config.to_params()
    spa = spec_arrays(specs)
    acct = new_account(n_sym, cash=config.initial_cash)
    pend = new_pending(n_sym)
    brk = new_breaker(equity=config.initial_cash)
    # per symbol and bar at most a closing leg, an opening leg and one exit; every trade has
    # an opening and a closing fill of its own
    cap_fills = 3 * n * n_sym + 2 * n_sym + 16
    recs = new_records(
        fills=cap_fills,
        trades=cap_fills // 2 + n_sym + 1,
        funding=int((~np.isnan(fr)).sum()) + 1,
        events=n + 2,
    )
    equity = np.empty(n)
    wallet = np.empty(n)
    position = np.zeros(shape)
    target = np.zeros(shape)
    reason = np.zeros(shape, dtype=np.int64)
    simulate_nb(
        o,
        h,
        lo,
        c,
        fr,
        m,
        d,
        p,
        b,
        a,
        tm,
        spa,
        prm,
        acct,
        pend,
        brk,
        recs,
        equity,
        wallet,
        position,
        target,
        reason,
        np.empty(0),
    )
    arrays = records_to_arrays(recs)
    return SimResult(
        equity=equity,
        wallet=wallet,
        position=position,
        target_qty=target,
        reason=reason,
        fills=arrays["fills"],
        trades=arrays["trades"],
        funding=arrays["funding"],
        events=arrays["events"],
        liquidations=int(acct.n_liquidations[0]),
        account=acct,
        symbols=tuple(sp.symbol for sp in specs),
    )
