"""Turn a simulation into run-log frames (one schema for every mode, engine.runlog.schema).

Client order ids follow invariant 7: :func:`client_order_id` is a pure function of
(run, symbol, bar open time, leg), so live mode, given the same run and bar, derives the
same id and a retry can never double an order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engine.decisions.codes import ACTION, EXIT_REASON, LEG, ORDER_TYPE, REASON, client_order_id
from engine.sim.enums import BreakerEvent, FillKind, Reason, names
from engine.timeutil import fmt_ms, interval_ms

if TYPE_CHECKING:
    import polars as pl

    from engine.decisions.types import Decisions
    from engine.decisions.market import Market
    from engine.sim import SimResult

def decision_frame(market: Market, dec: Decisions, res: SimResult) -> pl.DataFrame:
    """``ensemble_decisions``: one row per bar and symbol that has a bar."""
    import polars as pl

    from engine.runlog.schema import column_names

    logged = set(column_names("ensemble_decisions"))
    frames = []
    reason_names = {i: REASON.get(i, str(i)) for i in range(max(REASON) + 1)}
    rejecting = [Reason.BREAKER, Reason.FILTER, Reason.EDGE]
    for j, sym in enumerate(market.symbols):
        rows = np.flatnonzero(market.has_bar[:, j])
        target = res.target_qty[rows, j]
        close = market.close[rows, j]
        eq = res.equity[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            size = np.where(eq > 0, np.abs(target) * close / eq, np.nan)
        cols: dict[str, object] = {
            "open_time": market.open_time[rows],
            "state": dec.state[rows, j],
            "reason": res.reason[rows, j],
            "target_position": target,
            "confidence": dec.confidence[rows, j],
            "probability": dec.probability[rows, j],
            "position_size": size,
            "price": close,
        }
        for name, arr in dec.extra.items():
            # only the log's own columns: e.g. the Kelly payoff ratio feeds the simulator, not
            # the log; an extra named like a column wins (the ML slot logs the fused P(up) as
            # ``probability`` while the simulator's Kelly p is the chosen side's probability)
            if name in logged:
                cols[name] = arr[rows, j]
        frames.append(pl.DataFrame(cols).with_columns(symbol=pl.lit(sym)))
    if not frames:
        return pl.DataFrame()
    reason_name = pl.col("reason").replace_strict(reason_names, return_dtype=pl.Utf8)
    out = pl.concat(frames, how="vertical").with_columns(
        action=pl.col("state").cast(pl.Int64).replace_strict(ACTION, return_dtype=pl.Utf8),
        risk_check=pl.when(pl.col("reason") == Reason.NONE)
        .then(pl.lit("pass"))
        .otherwise(reason_name),
        rejection_reason=pl.when(
            (pl.col("state") != 0)
            & pl.col("reason").is_in(rejecting)
            & (pl.col("target_position") == 0)
        ).then(reason_name),
    )
    return out.drop("state", "reason")


def _decision_bar(market: Market, fill_bar: np.ndarray, sym_idx: np.ndarray) -> np.ndarray:
    """The bar whose close made an entry/exit order: the symbol's previous bar before the fill."""
    out = np.empty_like(fill_bar)
    for k in range(fill_bar.size):
        j, b = int(sym_idx[k]), int(fill_bar[k]) - 1
        while b > 0 and not market.has_bar[b, j]:
            b -= 1
        out[k] = max(b, 0)
    return out


def order_frame(run_id: str, market: Market, res: SimResult) -> pl.DataFrame:
    """``orders``: one filled order per simulator fill, with its deterministic client id."""
    import polars as pl

    f = res.fills
    if f.size == 0:
        return pl.DataFrame()
    step = interval_ms(market.interval)
    kind = f["kind"]
    on_decision = (kind == FillKind.ENTRY) | (kind == FillKind.EXIT)
    dbar = np.where(on_decision, _decision_bar(market, f["bar"], f["symbol"]), f["bar"])
    fill_time = market.open_time[f["bar"]]
    # decision fills are sent at the close of the decision bar (= open of the next bar);
    # stop/target/liquidation orders trigger inside the fill bar (its open time stands for it)
    created = np.where(on_decision, market.open_time[dbar] + step, fill_time)
    end_fill = kind == FillKind.END
    created = np.where(end_fill, market.open_time[f["bar"]] + step, created)
    symbols = np.array(market.symbols, dtype=object)[f["symbol"]]
    legs = [LEG[int(k)] for k in kind]
    dtimes = market.open_time[dbar]
    ids = [
        client_order_id(run_id, s, t, leg) for s, t, leg in zip(symbols, dtimes, legs, strict=True)
    ]
    return pl.DataFrame(
        {
            "client_order_id": ids,
            "symbol": symbols.tolist(),
            "side": np.where(f["side"] > 0, "buy", "sell").tolist(),
            "type": [ORDER_TYPE[int(t)] for t in f["order_type"]],
            "quantity": f["qty"],
            "price": f["price"],
            "status": ["filled"] * f.size,
            "created_at": created,
            "open_time": dtimes,
            "leg": legs,
            "filled_quantity": f["qty"],
            "avg_price": f["price"],
            "reduce_only": (kind != FillKind.ENTRY),
            "updated_at": np.maximum(fill_time, created),
        }
    )


def trade_frame(market: Market, res: SimResult) -> pl.DataFrame:
    """``trades``: closed round trips (funding sign flipped to the log's "+ = received")."""
    import polars as pl

    t = res.trades
    if t.size == 0:
        return pl.DataFrame()
    return pl.DataFrame(
        {
            "symbol": np.array(market.symbols, dtype=object)[t["symbol"]].tolist(),
            "side": np.where(t["side"] > 0, "long", "short").tolist(),
            "entry_time": market.open_time[t["entry_bar"]],
            "exit_time": market.open_time[t["exit_bar"]],
            "entry_price": t["entry_price"],
            "exit_price": t["exit_price"],
            "quantity": t["qty"],
            "pnl": t["pnl"],
            "fees": t["fees"],
            "funding": -t["funding"],
            "exit_reason": [EXIT_REASON[int(k)] for k in t["exit_kind"]],
        }
    )


def equity_frame(market: Market, res: SimResult) -> pl.DataFrame:
    """``equity``: equity, wallet and gross exposure at every bar's close."""
    import polars as pl

    close = _ffill(market.close)
    exposure = np.nansum(np.abs(res.position) * close, axis=1)
    return pl.DataFrame(
        {"time": market.open_time, "equity": res.equity, "cash": res.wallet, "exposure": exposure}
    )


def event_frame(market: Market, res: SimResult) -> pl.DataFrame:
    """``system_events``: breaker trips/resets and liquidations."""
    import json

    import polars as pl

    rows: list[dict[str, object]] = []
    code_names = names(BreakerEvent)
    for e in res.events:
        code = int(e["code"])
        bar = int(e["bar"])
        t = int(market.open_time[min(bar, market.n_bars - 1)])
        what = code_names.get(code, str(code))
        if code == BreakerEvent.RESET:
            msg, sev = f"circuit breaker reset at {fmt_ms(t)}: new entries allowed", "info"
        else:
            msg = f"circuit breaker tripped ({what}, {float(e['value']):.4g}) at {fmt_ms(t)}: new entries halted"
            sev = "warning"
        rows.append(
            {
                "time": t,
                "severity": sev,
                "component": "risk",
                "message": msg,
                "data": json.dumps({"event": what, "value": float(e["value"]), "bar": bar}),
            }
        )
    f = res.fills
    for k in np.flatnonzero(f["kind"] == FillKind.LIQUIDATION) if f.size else []:
        sym = market.symbols[int(f["symbol"][k])]
        t = int(market.open_time[int(f["bar"][k])])
        rows.append(
            {
                "time": t,
                "severity": "warning",
                "component": "sim",
                "message": f"{sym} position of {float(f['qty'][k]):g} liquidated at {float(f['price'][k]):g}",
                "data": json.dumps(
                    {"symbol": sym, "qty": float(f["qty"][k]), "price": float(f["price"][k])}
                ),
            }
        )
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows).sort("time", maintain_order=True)


def snapshot_frame(market: Market, features: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """``snapshots`` (long form): every feature of every bar (opt-in: ``log.snapshots: true``)."""
    import polars as pl

    from engine.runlog import features_to_long

    parts = [features_to_long(df, symbol=sym) for sym, df in features.items() if df.width > 1]
    return pl.concat(parts) if parts else pl.DataFrame()


def _ffill(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    for j in range(out.shape[1]):
        col = out[:, j]
        mask = np.isnan(col)
        if mask.any():
            idx = np.where(~mask, np.arange(col.size), 0)
            np.maximum.accumulate(idx, out=idx)
            col[:] = col[idx]
    return out
