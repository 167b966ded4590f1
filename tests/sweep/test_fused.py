"""The fused sweep kernel: every metric of a combination equals ``engine backtest`` of the
same params (``==``, every key), memory does not grow with bars x combinations, numpy's own
summation order, the best combinations logged, and ML graphs going the per-combination way."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from engine.backtest import run_backtest
from engine.metrics import bar_returns, compute_metrics, drawdown
from engine.runlog import RunLog
from engine.strategy import load_strategy
from engine.sweep import fused as fz
from engine.sweep import fused_nb as K
from engine.sweep import parse_grid, run_sweep, sweep
from engine.sweep.combos import data_key
from engine.sweep.runner import _prepare, build_graphs

from .helpers import EMA, REPO

RSI = REPO / "strategies" / "rsi_reversion.yaml"
SPAN = {"start": "2024-02-20", "end": "2024-03-03"}

#: every rule operator, event rules, ATR stops, a limit entry leg, isolated margin, leverage 3
#: (liquidations), a drawdown breaker: what the programs and the bar step must get right
KITCHEN = """\
name: kitchen_sink
params: {fast: 9, slow: 50, band: 0.004}
data: {symbols: [BTCUSDT, ETHUSDT], interval: 5m, higher_timeframes: [1h], funding: true}
features: ["ema_{fast}", "ema_{slow}", rsi_14, ema_20_1h, atr_14]
signals:
  long_entry: "cross_above(ema_{fast}, ema_{slow}) and not (rsi_14 >= 75) or 20 < rsi_14 < 25"
  long_exit: "cross_below(ema_{fast}, ema_{slow}) or abs(close - shift(close, 3)) / close > {band}"
  short_entry: "ema_{fast} < ema_{slow} and close < min(ema_20_1h, shift(ema_{slow}, 2)) - 1"
  short_exit: "max(rsi_14, -rsi_14 + 100) < 55 or shift(rsi_14 > 60, 1) and not (close / 2 > close)"
risk: {sizing: fixed, fraction: 0.5, breaker: {drawdown_pct: 8, cooldown_bars: 50}}
execution:
  order_type: limit
  limit_offset_bps: 2
  leverage: 3
  margin_mode: isolated
  slippage_bps: 1
  stop_loss: {atr: 1.5, atr_period: 14}
  take_profit: {pct: 2}
"""

CASES = [
    (EMA, ["fast=5,9,21", "slow=26,50", "risk.fraction=0.1,0.3", "execution.margin_mode=cross,isolated"]),
    (RSI, ["low=25,30", "high=70,75", "trend=20,50", "execution.slippage_bps=0,2"]),
    ("kitchen", ["fast=5,12", "slow=26,40", "band=0.002,0.01", "execution.leverage=1,3"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fused") / "kitchen.yaml"
    path.write_text(KITCHEN)
    return path


@pytest.mark.parametrize(("strategy", "grid"), CASES, ids=["ema_cross", "rsi_reversion", "kitchen"])
def test_sampled_combinations_equal_single_backtests(
    strategy: object, grid: list[str], kitchen: Path, usdm_store: Path
) -> None:
    path = kitchen if strategy == "kitchen" else strategy
    res = run_sweep(path, grid, store=usdm_store, log=False, **SPAN)  # type: ignore[arg-type]
    assert len(res.results) >= 16
    assert len({r.metrics["total_return"] for r in res.results}) > 8  # not degenerate
    for r in random.Random(13).sample(res.results, 4):
        alone = run_backtest(
            load_strategy(path, overrides=r.params, **SPAN), store=usdm_store, log=False
        )  # type: ignore[arg-type]
        assert r.metrics == alone.metrics, r.params  # every key, the same floats
    if strategy == "kitchen":
        assert any(r.metrics["trades"] > 5 for r in res.results)


def test_the_fused_path_and_the_per_combination_path_agree(kitchen: Path, usdm_store: Path) -> None:
    grid = ["fast=5,12", "slow=26,40", "execution.leverage=1,3"]
    fused = run_sweep(kitchen, grid, store=usdm_store, log=False, **SPAN)
    slow = run_sweep(kitchen, grid, store=usdm_store, log=False, fused=False, **SPAN)
    assert [r.metrics for r in fused.results] == [r.metrics for r in slow.results]


def test_memory_is_flat_in_the_number_of_combinations(usdm_store: Path) -> None:
    """Nothing the kernel reads or writes is bars x combinations: its output is one row of
    statistics per combination, and a thread's buffers are sized by the bars alone."""
    sizes = {}
    for fractions in ("0.1", "0.1,0.2,0.3,0.4,0.5,0.6"):  # the same 4 EMAs, 4 or 24 combinations
        axes = parse_grid(["fast=5,9", "slow=26,50", f"risk.fraction={fractions}"])
        combos, graphs = build_graphs(EMA, axes, **SPAN)
        shared, columns = _prepare(graphs, usdm_store, None, False, False, {}, None)
        plan = fz.plan(graphs, shared.markets, columns, data_key)
        assert plan is not None
        group = plan.groups[0]
        out = fz.run_chunk(plan, (0, np.arange(len(combos))))
        assert out.shape == (len(combos), K.N_STATS)
        n_bars = group.market.open.shape[0]
        st, work = fz.lane_state(group)
        arrays = [*group.market, *work, *st[0], *st[1], *st[2]]
        arrays += [a for rec in st[3] for a in rec]
        per_combo = [a.size for a in group.programs]
        assert max(per_combo) < n_bars  # rule programs and settings: a few numbers each
        sizes[len(combos)] = sum(a.nbytes for a in arrays)
    small, large = sorted(sizes)
    assert sizes[small] == sizes[large]


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 136, 1000, 8193, 100_003])
def test_pairwise_sum_is_numpys_sum(n: int) -> None:
    a = np.random.default_rng(n).standard_normal(n) * 1e-3
    got = K.pairwise_sum_nb(a, n, np.zeros((64, 3), np.int64), np.zeros(64))
    assert got == np.sum(a)


def test_equity_statistics_are_compute_metrics(usdm_store: Path) -> None:
    """Edge equities (a wipe-out to 0, flat, one or two bars) through the kernel's statistics
    and the shared summary equal :func:`compute_metrics` exactly."""
    rng = np.random.default_rng(5)
    walks = [
        10_000 * np.cumprod(1 + rng.standard_normal(5000) * 1e-3),
        10_000 * np.cumprod(1 + rng.standard_normal(5000) * 3e-2),  # many peaks and troughs
        np.r_[5.0, 2.0, 5.0, 2.0, 5.0, 1.0, 6.0, 3.0],  # equal drawdowns, then a deeper one
        np.r_[0.0, 0.0, 5.0, 2.5],  # no positive peak at first
        np.r_[100.0, 50.0, 0.0, 0.0, 10.0],
        np.full(50, 7.0),
        np.array([3.0]),
        np.array([3.0, 4.0]),
    ]
    for eq in walks:
        n = eq.size
        out = np.zeros(K.N_STATS)
        buf = eq.copy()  # the kernel overwrites the equity with the returns
        K.equity_stats_nb(buf, n, np.zeros((64, 3), np.int64), np.zeros(64), out)
        if n > 1:  # the returns as engine.metrics forms them
            assert np.array_equal(buf[: n - 1], bar_returns(eq))
        out[K.S_OK], out[K.S_BARS], out[K.S_INITIAL], out[K.S_FINAL] = 1, n, eq[0], eq[-1]
        group = fz.FusedGroup(None, None, None, None, None, span_ms=(n - 1) * 60_000, bar_ms=60_000)  # type: ignore[arg-type]
        want = compute_metrics(
            times_ms=np.arange(n) * 60_000, equity=eq, trades=None, bar_interval_ms=60_000,
            exposure=np.zeros(n),
        )  # fmt: skip
        assert fz.metrics_of(out, group) == want, eq[:5]


def _drawdown_scan(eq: np.ndarray) -> float:
    """The bar-by-bar scan (a NaN equity counts nowhere), in Python floats."""
    peak, low, dd = -math.inf, math.inf, 0.0
    for e in map(float, eq):
        if e > peak:
            dd = max(dd, 1.0 - low / peak) if peak > 0.0 else dd
            peak = low = e
        elif e < low:
            low = e
    return max(dd, 1.0 - low / peak) if peak > 0.0 else dd


def test_max_drawdown_by_blocks_is_the_scan() -> None:
    """Blocks without a new peak (taken whole) and with one (bar by bar): a peak on a block's
    first or last bar, a block of NaN, NaN inside a block, zero and negative equity, and a
    tail shorter than a block; finite equities also equal engine.metrics' drawdown."""
    rng = np.random.default_rng(11)
    b = K.DD_BLOCK
    walk = 10_000 * np.cumprod(1 + rng.standard_normal(40 * b + 37) * 2e-3)
    edge = np.full(6 * b, 100.0)
    edge[b] = 120.0  # a peak on a block's first bar
    edge[3 * b - 1] = 130.0  # on a block's last bar
    edge[3 * b : 4 * b] = 90.0  # a whole block below the peak
    edge[5 * b + 3] = 50.0
    holes = walk.copy()
    holes[5 * b : 6 * b] = np.nan  # a whole block of NaN
    holes[[7 * b + 5, 20 * b, 20 * b + 1]] = np.nan
    low = np.r_[np.linspace(-5.0, 0.0, 2 * b), np.full(b, 0.0), walk[: 3 * b]]
    for eq in (walk, walk[::-1].copy(), edge, holes, low, np.full(3 * b, 7.0), walk[:b - 1]):
        got = K.max_drawdown_nb(eq, eq.size)
        assert got == _drawdown_scan(eq), eq[:3]
        if np.isfinite(eq).all():
            assert got == drawdown(eq).max()
    for n in (0, 1, b - 1, b, b + 1, 3 * b):
        assert K.max_drawdown_nb(walk, n) == _drawdown_scan(walk[:n])


def test_in_process_chunks_are_as_long_as_the_bars_allow(
    usdm_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process a fused sweep runs in chunks of about LOCAL_CHUNK_BARS
    bar-combinations (never under FUSED_CHUNK combinations): 80 combinations over two days
    of 5m bars are one chunk, or two of 64 and 16 when a chunk may hold 64 x 576 bars; the
    metrics are the same either way."""
    from engine.sweep import combos as C

    sizes: list[int] = []
    real = fz.run_chunk

    def counted(plan, task, lanes=None):  # type: ignore[no-untyped-def]
        sizes.append(len(task[1]))
        return real(plan, task, lanes=lanes)

    monkeypatch.setattr(fz, "run_chunk", counted)
    grid = {"fast": list(range(3, 13)), "slow": [20, 26, 30, 40, 50, 60, 80, 100]}
    span = {"start": "2024-03-01", "end": "2024-03-02"}
    args = dict(grid=grid, store=usdm_store, symbols=["BTCUSDT"], **span)
    one = sweep(EMA, **args)  # type: ignore[arg-type]
    assert sizes == [80]
    sizes.clear()
    monkeypatch.setattr(C, "LOCAL_CHUNK_BARS", 64 * 576)
    two = sweep(EMA, **args)  # type: ignore[arg-type]
    assert sizes == [64, 16]
    assert one.equals(two)


def test_logged_fused_sweep_keeps_equity_of_the_best_only(usdm_store: Path, tmp_path: Path) -> None:
    res = run_sweep(
        EMA, ["fast=5,9", "slow=26,50"], store=usdm_store, results=tmp_path, log_top=2,
        sort="total_return", symbols=["BTCUSDT"], **SPAN,
    )  # fmt: skip
    log = RunLog(tmp_path)
    best = {r.index for r in res.ranked("total_return", top=2)}
    for r in res.results:
        tables = sorted(p.stem for p in log.run_dir(r.run_id).glob("*.parquet"))
        assert tables == (["equity", "trades"] if r.index in best else []), r.params
        assert log.get_run(r.run_id)["metrics"]["sharpe"] == r.metrics["sharpe"]


def test_sweep_returns_one_row_per_combination(usdm_store: Path) -> None:
    df = sweep(
        EMA, grid={"fast": [5, 9], "risk.fraction": [0.1, 0.2]}, symbols=["BTCUSDT"],
        store=usdm_store, **SPAN,
    )  # fmt: skip
    assert df.height == 4
    assert df.columns[:3] == ["index", "fast", "risk.fraction"]
    assert {"total_return", "sharpe", "max_drawdown", "trades"} <= set(df.columns)
    assert df["fast"].to_list() == [5, 5, 9, 9]
    assert df["risk.fraction"].to_list() == [0.1, 0.2, 0.1, 0.2]
    one = run_backtest(
        load_strategy(EMA, overrides={"fast": 9, "risk.fraction": 0.2}, symbols=["BTCUSDT"], **SPAN),
        store=usdm_store, log=False,
    )  # fmt: skip
    assert df.row(3, named=True)["sharpe"] == one.metrics["sharpe"]


ML_STRATEGY = """\
name: ml_tiny
data: {symbols: [BTCUSDT], interval: 5m, start: 2024-01-01, end: 2024-01-09, funding: true}
features: [rsi_14, bb_pct, log_return_1]
labels: {horizon: 6, cost_bps: 2}
training: {train_window: 3d, retrain_every: 2d, warmup: 4d, embargo: 2, min_train_rows: 200,
           seed: 3, threads: 1, workers: 1}
models:
  - {kind: lightgbm, name: lightgbm, params: {n_estimators: 10, num_leaves: 7, min_data_in_leaf: 20}}
ensemble: {payoff_lookback: 200, min_calibration_rows: 40, gate: {max_uncertainty: 0.9999}}
risk: {sizing: kelly, kelly_fraction: 0.5}
"""


def test_ml_graphs_go_the_per_combination_way(usdm_store: Path, tmp_path: Path) -> None:
    path = tmp_path / "ml.yaml"
    path.write_text(ML_STRATEGY)
    grid = ["risk.kelly_fraction=0.25,0.5"]
    _combos, graphs = build_graphs(path, parse_grid(grid))
    assert not any(fz.fusable(g) for g in graphs)
    res = run_sweep(path, grid, store=usdm_store, results=tmp_path / "r", log=False)
    alone = run_backtest(
        load_strategy(path, overrides=res.results[1].params), store=usdm_store,
        results=tmp_path / "r", log=False,
    )  # fmt: skip
    # the trading metrics and the models' scores; "ml" says which model versions this
    # process fitted or found cached, which depends on what ran before
    got = {k: v for k, v in res.results[1].metrics.items() if k != "ml"}
    assert got == {k: v for k, v in alone.metrics.items() if k != "ml"}
    assert "models" in got
