"""``engine.sim.simulate``: the batch entry to the futures portfolio simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from engine.errors import ConfigError, DataError
from engine.kernels import writable
from engine.sim.config import SimConfig
from engine.sim.enums import BreakerEvent, FillKind, OrderType, names
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
    arr = writable(np.ascontiguousarray(value, dtype=np.float64))
    if arr.ndim == 1 and shape[1] == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape != shape:
        raise DataError(
            f"{name}: expected an array of shape {shape} [n_bars, n_symbols], got {arr.shape}",
            hint="align every input on one time grid, one column per symbol",
        )
    return arr


def _optional(name: str, value: Any, shape: tuple[int, int], *, absent: np.ndarray) -> np.ndarray:
    return absent if value is None else _as_2d(name, value, shape)


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
        required when ``config.risk.sizing == "kelly"``.
    payoff : float64[n, s], optional
        Payoff ratio b (average win / average loss); ``config.risk.payoff_ratio`` when None/NaN.
    atr : float64[n, s], optional
        ATR at each decision bar; required for ATR-multiple stops or targets.
    mark_price : float64[n, s], optional
        Mark price used for funding at a funding bar; the bar's open when None/NaN.
    open_time : int64[n], optional
        Bar open times (ms, UTC); required by ``risk.breaker.daily_loss_pct`` (UTC days).
    specs : list[SymbolSpec]
        One per column (:func:`engine.sim.specs.load_specs`).
    config : SimConfig
        The execution and risk settings (:mod:`engine.sim.settings`).

    Returns
    -------
    SimResult

    Example
    -------
    >>> import numpy as np
    >>> from engine.sim import ExecutionSettings, RiskSettings, SimConfig, load_specs, simulate
    >>> px = np.array([[100.0], [101.0], [102.0]]) * 300
    >>> cfg = SimConfig(execution=ExecutionSettings(taker_fee=0.0), risk=RiskSettings(fraction=1))
    >>> r = simulate(px, px, px, px, funding_rate=None, direction=np.array([[1.0], [1.0], [0.0]]),
    ...              specs=load_specs(["BTCUSDT"]), config=cfg)
    >>> r.position[:, 0].tolist()
    [0.0, 0.33, 0.33]
    """
    if not isinstance(config, SimConfig):
        raise ConfigError(f"config: expected a SimConfig, got {type(config).__name__}")
    o, h, lo, c = _ohlc(open, high, low, close, specs)
    shape = (o.shape[0], o.shape[1])
    none2 = np.empty((0, shape[1]))
    inputs = _Inputs(  # checked in this order; the kernel takes _Inputs' field order
        funding_rate=_optional("funding_rate", funding_rate, shape, absent=np.full(shape, np.nan)),
        direction=_direction(direction, shape),
        prob=none2 if prob is None else _prob(prob, shape),
        payoff=_optional("payoff", payoff, shape, absent=none2),
        atr=_optional("atr", atr, shape, absent=none2),
        mark_price=_optional("mark_price", mark_price, shape, absent=none2),
        open_time=np.empty(0, np.int64) if open_time is None else _open_time(open_time, shape[0]),
    )  # fmt: skip
    _check_needs(
        config, specs, prob=prob is not None, atr=atr is not None, times=open_time is not None
    )
    return _run(o, h, lo, c, inputs, specs=specs, config=config)


class _Inputs(NamedTuple):
    """The checked per-bar inputs besides prices, in the kernel's order (empty when absent)."""

    funding_rate: np.ndarray
    mark_price: np.ndarray
    direction: np.ndarray
    prob: np.ndarray
    payoff: np.ndarray
    atr: np.ndarray
    open_time: np.ndarray


def _run(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    inputs: _Inputs,
    *,
    specs: list[SymbolSpec],
    config: SimConfig,
) -> SimResult:
    """Allocate the state and the outputs, fold the bars (``simulate_nb``), collect."""
    from engine.sim.bars import bar_blocks, next_funding_bars  # lazy: the kernels load numba
    from engine.sim.fold import simulate_nb
    from engine.sim.loop import new_liq_memo

    n, n_sym = o.shape
    cash = config.execution.initial_cash
    acct = new_account(n_sym, cash=cash)
    recs = _new_records(n, n_sym, funding_bars=int((~np.isnan(inputs.funding_rate)).sum()))
    equity = np.empty(n)
    wallet = np.empty(n)
    position = np.zeros((n, n_sym))
    target = np.zeros((n, n_sym))
    reason = np.zeros((n, n_sym), dtype=np.int64)
    simulate_nb(
        o, h, lo, c, *inputs, spec_arrays(specs), config.to_params(),
        acct, new_pending(n_sym), new_breaker(equity=cash), recs,
        equity, wallet, position, target, reason, np.empty(0), new_liq_memo(n_sym),
        next_funding_bars(inputs.funding_rate), bar_blocks(o, h, lo, c, inputs.open_time),
    )  # fmt: skip
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


def _ohlc(
    open: Any,  # noqa: A002 - the market's own word
    high: Any,
    low: Any,
    close: Any,
    specs: list[SymbolSpec],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four price arrays, checked: one shape, one spec per column, NaN together, and
    each bar's high/low around its open and close."""
    o = writable(np.ascontiguousarray(open, dtype=np.float64))
    if o.ndim == 1:
        o = o.reshape(-1, 1)
    if o.ndim != 2:
        raise DataError(f"open: expected a 2-D array [n_bars, n_symbols], got {o.ndim} dimensions")
    shape = (o.shape[0], o.shape[1])
    if len(specs) != shape[1]:
        raise ConfigError(
            f"specs: {len(specs)} symbol specs for {shape[1]} price columns",
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
    return o, h, lo, c


def _direction(direction: Any, shape: tuple[int, int]) -> np.ndarray:
    d = _as_2d("direction", direction, shape)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(d) & (d != -1) & (d != 0) & (d != 1)
    if bad.any():
        t, s = _first_bad(bad)
        raise DataError(f"direction[{t}, {s}]: must be -1, 0, +1 or NaN, got {d[t, s]}")
    return d


def _prob(prob: Any, shape: tuple[int, int]) -> np.ndarray:
    p = _as_2d("prob", prob, shape)
    with np.errstate(invalid="ignore"):
        bad = (p < 0) | (p > 1)
    if bad.any():
        t, s = _first_bad(bad)
        raise DataError(f"prob[{t}, {s}]: must be a probability in [0, 1] or NaN, got {p[t, s]}")
    return p


def _open_time(open_time: Any, n: int) -> np.ndarray:
    tm = writable(np.ascontiguousarray(open_time, dtype=np.int64))
    if tm.shape != (n,):
        raise DataError(f"open_time: expected shape ({n},), got {tm.shape}")
    return tm


def _check_needs(
    config: SimConfig, specs: list[SymbolSpec], *, prob: bool, atr: bool, times: bool
) -> None:
    """The inputs the settings need are given, and the leverage fits every symbol."""
    e, r = config.execution, config.risk
    if r.sizing == "kelly" and not prob:
        raise ConfigError(
            "sizing: 'kelly' needs prob (calibrated probabilities)",
            hint="pass prob=... or use sizing='fixed'",
        )
    atr_stops = [s for s in (e.stop_loss, e.take_profit) if s is not None and s.atr is not None]
    if atr_stops and not atr:
        raise ConfigError(
            "stop_loss.atr/take_profit.atr need the atr input",
            hint="pass atr=... (ATR at each bar)",
        )
    if r.breaker.daily_loss_pct is not None and not times:
        raise ConfigError(
            "breaker.daily_loss_pct needs open_time to know UTC days",
            hint="pass open_time=... (ms)",
        )
    for sp in specs:
        top = float(sp.bracket_leverage.max())
        if e.leverage > top:
            raise ConfigError(
                f"leverage: {e.leverage:g} exceeds {sp.symbol}'s maximum of {top:g}",
                hint=f"use leverage <= {top:g}",
            )


def _new_records(n: int, n_sym: int, *, funding_bars: int) -> Records:
    """Record buffers large enough for any run of ``n`` bars: per symbol and bar at most a
    closing leg, an opening leg and one exit; every trade has an opening and a closing fill
    of its own."""
    cap_fills = 3 * n * n_sym + 2 * n_sym + 16
    return new_records(
        fills=cap_fills,
        trades=cap_fills // 2 + n_sym + 1,
        funding=funding_bars + 1,
        events=n + 2,
    )
