"""Run metrics (returns, risk, trades) and model metrics (AUC, log loss, Brier, calibration).

Every value returned is a finite ``float`` or an ``int`` (JSON-serialisable, no NaN/inf).
Ratios that are undefined for the data are reported as ``0.0`` (the convention freqtrade uses
for its profit factor): Sharpe when the bar returns have no spread (flat equity), Sortino when
there is no downside, profit factor when there is no losing trade. The year is the crypto year
of 365 days, and annualisation uses the bar interval: ``periods = 365 days / bar_interval``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import RunError

if TYPE_CHECKING:
    import polars as pl

YEAR_MS = 365 * 24 * 3_600_000

#: Keys of :func:`compute_metrics`, in the order a summary table shows them.
METRIC_KEYS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "exposure",
    "trades",
    "fees",
    "funding",
    "liquidations",
    "final_equity",
    "initial_equity",
    "bars",
)


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def bar_returns(equity: np.ndarray) -> np.ndarray:
    """Simple returns between consecutive equity marks; 0 where the previous mark is <= 0."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size < 2:
        return np.zeros(0)
    prev = eq[:-1]
    out = np.zeros(eq.size - 1)
    np.divide(eq[1:], prev, out=out, where=prev > 0)
    out -= 1.0
    out[prev <= 0] = 0.0
    return out


def sharpe_ratio(returns: np.ndarray, *, periods_per_year: float) -> float:
    """Annualised Sharpe of bar returns (risk-free 0): ``mean / std(ddof=1) * sqrt(periods)``.

    Oracle: ``r.mean() / r.std(ddof=1) * np.sqrt(periods)``; 0.0 when std is 0 or n < 2.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    return sharpe_from(float(r.mean()), float(r.std(ddof=1)), periods_per_year=periods_per_year)


def sharpe_from(mean: float, sd: float, *, periods_per_year: float) -> float:
    """:func:`sharpe_ratio` from the returns' mean and sample standard deviation (n >= 2)."""
    if not sd > 0.0:
        return 0.0
    return _finite(mean / sd * math.sqrt(periods_per_year))


def sortino_ratio(returns: np.ndarray, *, periods_per_year: float) -> float:
    """Annualised Sortino (target 0): ``mean / sqrt(mean(min(r, 0)^2)) * sqrt(periods)``.

    The downside deviation averages over all bars (not only the losing ones), as in
    empyrical's ``downside_risk``. 0.0 when there is no downside.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 1:
        return 0.0
    dd = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    return sortino_from(float(r.mean()), dd, periods_per_year=periods_per_year)


def sortino_from(mean: float, downside: float, *, periods_per_year: float) -> float:
    """:func:`sortino_ratio` from the returns' mean and downside deviation (n >= 1)."""
    if not downside > 0.0:
        return 0.0
    return _finite(mean / downside * math.sqrt(periods_per_year))


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown per mark as a positive fraction of the running peak: ``1 - eq / cummax(eq)``."""
    eq = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(eq) if eq.size else eq
    out = np.zeros(eq.size)
    np.divide(eq, peak, out=out, where=peak > 0)
    out = 1.0 - out
    out[peak <= 0] = 0.0
    return out


def in_position_mask(
    times_ms: np.ndarray, entry_times: np.ndarray, exit_times: np.ndarray
) -> np.ndarray:
    """Bars in a position: some trade has ``entry_time <= t < exit_time`` (open trades: to the end)."""
    t = np.asarray(times_ms, dtype=np.int64)
    diff = np.zeros(t.size + 1, dtype=np.int64)
    if len(entry_times):
        ent = np.asarray(entry_times, dtype=np.int64)
        ext = np.asarray(exit_times, dtype=np.float64)
        starts = np.searchsorted(t, ent, side="left")
        open_ = np.isnan(ext)
        ends = np.searchsorted(t, np.where(open_, 0, ext).astype(np.int64), side="left")
        ends[open_] = t.size
        keep = ends > starts
        np.add.at(diff, starts[keep], 1)
        np.add.at(diff, ends[keep], -1)
    return np.cumsum(diff[:-1]) > 0


def compute_metrics(
    *,
    times_ms: Any,
    equity: Any,
    trades: pl.DataFrame | None,
    bar_interval_ms: int,
    exposure: Any = None,
    funding_total: float = 0.0,
    fees_total: float = 0.0,
    liquidations: int = 0,
) -> dict[str, float | int]:
    """Summary metrics of one run.

    Parameters
    ----------
    times_ms
        Bar open times (UTC ms, increasing), one per equity mark.
    equity
        Account equity marked at each bar's close; ``equity[0]`` is the starting point.
    trades
        Closed (and open) trades with at least ``pnl`` (net of fees and funding); with
        ``entry_time``/``exit_time`` when ``exposure`` is not given. None or empty: no trades.
    bar_interval_ms
        The bar length, for annualisation (``365 days / bar_interval_ms`` periods a year).
    exposure
        Optional per-bar gross exposure (any unit); a bar is "in a position" when it is not 0.
        When None, bars in a position come from the trades' entry and exit times.
    funding_total, fees_total, liquidations
        Passed through (funding: positive = received; fees: positive = paid).

    Returns
    -------
    dict
        ``total_return, cagr, sharpe, sortino, max_drawdown`` (positive fraction),
        ``win_rate, profit_factor, exposure`` (fraction of bars in a position), ``trades,
        fees, funding, liquidations, final_equity, initial_equity, bars``.

    Examples
    --------
    >>> import numpy as np
    >>> m = compute_metrics(times_ms=np.arange(3) * 86_400_000, equity=[100.0, 110.0, 99.0],
    ...                     trades=None, bar_interval_ms=86_400_000)
    >>> round(m["total_return"], 4), round(m["max_drawdown"], 4)
    (-0.01, 0.1)
    """
    t, eq = _checked_series(times_ms, equity, bar_interval_ms)
    n = int(eq.size)
    initial = float(eq[0]) if n else 0.0
    final = float(eq[-1]) if n else 0.0
    periods = YEAR_MS / bar_interval_ms
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # degenerate equity (e.g. 1e-300 then 1.0) overflows: such ratios become 0.0 below
        r = bar_returns(eq)
        dd = drawdown(eq)
        sharpe = sharpe_ratio(r, periods_per_year=periods)
        sortino = sortino_ratio(r, periods_per_year=periods)
    n_trades, win_rate, profit_factor = _trade_stats(trades)
    in_pos = _in_position(t, eq, trades, exposure, n_trades)
    return summary_metrics(
        span_ms=int(t[-1]) - int(t[0]) if n > 1 else 0,
        bars=n,
        initial=initial,
        final=final,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=float(dd.max()) if n else 0.0,
        trades=n_trades,
        win_rate=win_rate,
        profit_factor=profit_factor,
        exposure=float(in_pos.mean()) if n else 0.0,
        fees=fees_total,
        funding=funding_total,
        liquidations=liquidations,
    )


def summary_metrics(
    *,
    span_ms: int,
    bars: int,
    initial: float,
    final: float,
    sharpe: float,
    sortino: float,
    max_drawdown: float,
    trades: int,
    win_rate: float,
    profit_factor: float,
    exposure: float,
    fees: float,
    funding: float,
    liquidations: int,
) -> dict[str, float | int]:
    """The dict :func:`compute_metrics` returns, from its parts (the fused sweep kernel
    computes the same parts in numba): non-finite values become 0.0; ``span_ms`` is the last
    bar's open time minus the first's (0 for one bar), for the CAGR."""
    return {
        "total_return": _finite(final / initial - 1.0 if initial > 0 else 0.0),
        "cagr": _finite(_cagr(span_ms, initial, final)),
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": _finite(max_drawdown),
        "win_rate": _finite(win_rate),
        "profit_factor": _finite(profit_factor),
        "exposure": _finite(exposure),
        "trades": int(trades),
        "fees": _finite(fees),
        "funding": _finite(funding),
        "liquidations": int(liquidations),
        "final_equity": _finite(final),
        "initial_equity": _finite(initial),
        "bars": int(bars),
    }


def _checked_series(
    times_ms: Any, equity: Any, bar_interval_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Times and equity as arrays: 1-D, one length, finite equity, strictly increasing times."""
    t = np.asarray(times_ms, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if t.ndim != 1 or eq.ndim != 1 or t.size != eq.size:
        raise RunError(
            f"compute_metrics: times_ms and equity must be 1-D of one length, got {t.shape} and {eq.shape}"
        )
    if bar_interval_ms <= 0:
        raise RunError(f"compute_metrics: bar_interval_ms must be > 0, got {bar_interval_ms}")
    if eq.size and not np.all(np.isfinite(eq)):
        bad = int(np.flatnonzero(~np.isfinite(eq))[0])
        raise RunError(f"compute_metrics: equity is not finite at index {bad} (time {t[bad]})")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise RunError("compute_metrics: times_ms must be strictly increasing")
    return t, eq


def _cagr(span_ms: int, initial: float, final: float) -> float:
    """Compound annual growth over ``span_ms`` (365-day years); -1 when wiped out,
    0 when the span or the start is not positive; capped where exp would overflow."""
    years = span_ms / YEAR_MS
    if not (years > 0 and initial > 0):
        return 0.0
    ratio = final / initial
    if ratio > 0 and math.isfinite(ratio):
        return math.expm1(min(math.log(ratio) / years, 700.0))
    return -1.0 if ratio <= 0 else 0.0


def _trade_stats(trades: pl.DataFrame | None) -> tuple[int, float, float]:
    """(number of trades, win rate, profit factor) from the trades' net ``pnl``."""
    if trades is None or not trades.height:
        return 0, 0.0, 0.0
    pnl = trades["pnl"].cast(float).fill_null(0.0).to_numpy()
    return trade_ratios(
        int(pnl.size),
        int(np.count_nonzero(pnl > 0)),
        float(pnl[pnl > 0].sum()),
        -float(pnl[pnl < 0].sum()),
    )


def trade_ratios(
    trades: int, wins: int, gross_profit: float, gross_loss: float
) -> tuple[int, float, float]:
    """(trades, win rate, profit factor) from the count of trades and winners (net PnL > 0)
    and the sums of the winners' and (as a positive number) the losers' PnL."""
    if not trades:
        return 0, 0.0, 0.0
    win_rate = float(wins) / trades
    profit_factor = gross_profit / gross_loss if gross_loss > 0 else 0.0
    return trades, win_rate, profit_factor


def _in_position(
    t: np.ndarray,
    eq: np.ndarray,
    trades: pl.DataFrame | None,
    exposure: Any,
    n_trades: int,
) -> np.ndarray:
    """Bars in a position: from the exposure array when given, else from the trades' spans."""
    if exposure is not None:
        ex = np.asarray(exposure, dtype=np.float64)
        if ex.shape != eq.shape:
            raise RunError(f"compute_metrics: exposure has shape {ex.shape}, equity {eq.shape}")
        return np.asarray(np.nan_to_num(ex) != 0)
    if n_trades and trades is not None and "entry_time" in trades.columns:
        exits = (
            trades["exit_time"].cast(float).to_numpy()
            if "exit_time" in trades.columns
            else np.full(n_trades, np.nan)
        )
        return in_position_mask(t, trades["entry_time"].cast(int).to_numpy(), exits)
    return np.zeros(eq.size, dtype=bool)


# ---------------------------------------------------------------------- model metrics


def roc_auc(y: Any, p: Any) -> float | None:
    """Area under the ROC curve by the Mann-Whitney count, ties counted half.

    ``U`` = the number of (positive, negative) pairs whose positive scores higher, plus half
    the tied pairs: each sorted positive's count of negatives below it and of negatives not
    above it (``searchsorted`` left and right) sum to ``2 U``, an exact integer, so the AUC
    ``U / (n_pos * n_neg)`` is the same float as the rank formula's (average ranks).
    Oracle: ``sklearn.metrics.roc_auc_score``. None when only one class is present.
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    pos = y == 1
    n_pos = int(np.count_nonzero(pos))
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    neg = np.sort(p[~pos])
    ps = np.sort(p[pos])
    u2 = int(np.searchsorted(neg, ps, "left").sum()) + int(np.searchsorted(neg, ps, "right").sum())
    return float((u2 / 2) / (n_pos * n_neg))


def calibration_curve(y: Any, p: Any, *, bins: int = 10) -> list[dict[str, float | int]]:
    """Reliability diagram over ``bins`` equal-width bins (lo, hi] of [0, 1] (empty bins left out).

    Each entry: ``lo, hi, mean_predicted, fraction_positive, count``. Oracle: scikit-learn's
    ``calibration_curve(strategy="uniform")`` gives the same ``fraction_positive`` and
    ``mean_predicted`` for the non-empty bins.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.searchsorted(edges[1:-1], p, side="left")  # (lo, hi], 0 in the first bin
    out = []
    for b in range(bins):
        m = idx == b
        c = int(m.sum())
        if c:
            out.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "mean_predicted": float(p[m].mean()),
                    "fraction_positive": float(y[m].mean()),
                    "count": c,
                }
            )
    return out


def classification_metrics(y: Any, p: Any, *, bins: int = 10) -> dict[str, float | int | None]:
    """AUC, log loss, Brier score and expected calibration error of P(up) against labels.

    Parameters
    ----------
    y
        Realised labels, 1 (up) or 0 (down).
    p
        Predicted P(up) in [0, 1].
    bins
        Equal-width bins for the calibration error.

    Returns
    -------
    dict
        ``n, base_rate, auc`` (None with one class), ``log_loss`` (p clipped to
        [1e-15, 1 - 1e-15]), ``brier`` (mean squared error), ``calibration_error`` (ECE:
        count-weighted mean of ``|mean_predicted - fraction_positive|`` over the bins).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    if np.any((y != 0) & (y != 1)):
        raise RunError(
            f"classification_metrics: labels must be 0 or 1, got {sorted(set(y.tolist()) - {0.0, 1.0})[:5]}"
        )
    n = int(y.size)
    if n == 0:
        return {
            "n": 0,
            "base_rate": 0.0,
            "auc": None,
            "log_loss": 0.0,
            "brier": 0.0,
            "calibration_error": 0.0,
        }
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    log_loss = -float(np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    brier = float(np.mean((p - y) ** 2))
    curve = calibration_curve(y, p, bins=bins)
    ece = sum(abs(b["mean_predicted"] - b["fraction_positive"]) * b["count"] for b in curve) / n
    return {
        "n": n,
        "base_rate": float(y.mean()),
        "auc": roc_auc(y, p),
        "log_loss": _finite(log_loss),
        "brier": _finite(brier),
        "calibration_error": _finite(ece),
    }
