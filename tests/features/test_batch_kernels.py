"""Every specialised batch kernel equals the fold of its step kernel, bit for bit.

``compute_columns`` runs each indicator with its ``*_batch_nb`` kernel (state in local
variables, the input array as the ring buffer); ``compute_columns_fold`` folds the streaming
step (``step_plan_nb``) over the same bars. They must agree to the last bit (``-0.0`` is not
``0.0`` here), for every output of every kind, including outputs that were not requested
(which the batch path skips or sends to scratch), on real data and on random walks with NaN
bars, gaps and higher-timeframe columns.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.features import htf_nb, kinds, plan_nb
from engine.features import indicators_batch_nb as ib
from engine.features.batch import (
    candle_arrays,
    compute_columns,
    compute_columns_fold,
    funding_asof,
    run_op,
)
from engine.features.catalogue import build_plan

from .test_stream import make_bars, make_funding


def group(kind: str, p: int, q: int = 0, r: int = 0) -> list[str]:
    """Every output name of one indicator kind with period(s) p (q, r for MACD)."""
    return {
        "sma": [f"sma_{p}"],
        "volume_sma": [f"volume_sma_{p}", f"volume_ratio_{p}"],
        "ema": [f"ema_{p}"],
        "rsi": [f"rsi_{p}"],
        "macd": [f"macd_{p}_{q}_{r}", f"macd_signal_{p}_{q}_{r}", f"macd_hist_{p}_{q}_{r}"],
        "bb": [f"bb_{o}_{p}" for o in ("upper", "middle", "lower", "width", "pct")],
        "atr": [f"atr_{p}", f"atr_pct_{p}"],
        "obv": ["obv"],
        "dmi": [f"adx_{p}", f"plus_di_{p}", f"minus_di_{p}"],
        "dmi_atr": [f"adx_{p}", f"atr_{p}", f"minus_di_{p}", f"atr_pct_{p}", f"plus_di_{p}"],
        "candle": ["body_ratio", "upper_shadow", "lower_shadow"],
        "mom": [f"momentum_{p}", f"volume_momentum_{p}"],
        "logret": [f"log_return_{p}"],
        "volume": ["volume"],
    }[kind]


KINDS = ("sma", "volume_sma", "ema", "rsi", "macd", "bb", "atr", "obv", "dmi", "dmi_atr", "candle", "mom", "logret", "volume")  # fmt: skip


def assert_bits(a: np.ndarray, b: np.ndarray, label: str) -> None:
    """Equal bit patterns (any NaN equals any NaN)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    assert a.shape == b.shape, label
    same = (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise AssertionError(f"{label}: first difference at row {i}: {a[i]!r} != {b[i]!r}")


def check_batch_equals_fold(
    df: pl.DataFrame, names: list[str], funding: pl.DataFrame | None = None
) -> None:
    interval, (t, o, h, lo, c, v) = candle_arrays(df, interval="5m")
    fr = funding_asof(funding, t, 300_000)
    plan = build_plan(names, interval=interval)
    folded = compute_columns_fold(plan, t, o, h, lo, c, v, fr)
    batch = compute_columns(plan, t, o, h, lo, c, v, fr)
    for j, name in enumerate(names):
        assert_bits(batch[j], folded[j], f"batch vs fold: {name}")


def test_kernels_directly_equal_the_step_fold_on_real_bars(btc5m: pl.DataFrame) -> None:
    """Each ``*_batch_nb`` called on its own over 20,000 real bars, every output, against the
    step kernel folded one bar at a time through :func:`engine.features.plan_nb.op_step_nb`."""
    df = btc5m.slice(3_001, 20_000)
    arr = {c: df[c].to_numpy().astype(np.float64) for c in ("open", "high", "low", "close", "volume")}  # fmt: skip
    tv = df["open_time"].to_numpy().astype(np.float64)
    fr = np.linspace(-1e-4, 1e-4, df.height)
    cases = [
        (kinds.SMA, 20, kinds.SRC_VOLUME, 0), (kinds.SMA, 100, kinds.SRC_CLOSE, 0), (kinds.EMA, 9, 0, 0),
        (kinds.EMA, 200, kinds.SRC_VOLUME, 0), (kinds.RSI, 14, 0, 0), (kinds.RSI, 2, 0, 0),
        (kinds.MACD, 12, 26, 9), (kinds.MACD, 5, 5, 1), (kinds.MACD, 26, 12, 9), (kinds.BBANDS, 20, 0, 0),
        (kinds.BBANDS, 7, 0, 0), (kinds.ATR, 14, 0, 0), (kinds.ATR, 1, 0, 0), (kinds.OBV, 0, 0, 0),
        (kinds.DMI, 14, 0, 0), (kinds.DMI, 2, 0, 0), (kinds.CANDLE, 0, 0, 0), (kinds.MOM, 10, kinds.SRC_VOLUME, 0),
        (kinds.LOGRET, 3, 0, 0), (kinds.FUNDING, 0, 0, 0), (kinds.RAW_VOLUME, 0, 0, 0),
    ]  # fmt: skip
    n = df.height
    for kind, p0, p1, p2 in cases:
        n_out = kinds.N_OUTPUTS[kind]
        st_ = np.zeros(kinds.state_size(kind, p0, p1, p2))
        res = np.empty(kinds.MAX_OUTPUTS)
        want = np.empty((n_out, n))
        for i in range(n):
            plan_nb.op_step_nb(
                kind, st_, 0, p0, p1, p2, 2.0, tv[i], arr["open"][i], arr["high"][i],
                arr["low"][i], arr["close"][i], arr["volume"][i], fr[i], 300_000, res,
            )  # fmt: skip
            want[:, i] = res[:n_out]
        for m in (0, 1, max(p0 - 1, 0), p0, p0 + 1, 2 * p0, n):  # short series too
            outs = [np.full(m, 7.0) for _ in range(5)]
            run_op(
                kind, p0, p1, p2, 2.0, tv[:m], arr["open"][:m], arr["high"][:m],
                arr["low"][:m], arr["close"][:m], arr["volume"][:m], fr[:m], 300_000, *outs,
                extras=True,
            )  # fmt: skip
            for j in range(n_out):
                assert_bits(outs[j], want[j, :m], f"kind {kind} ({p0},{p1},{p2}) output {j} m={m}")


@pytest.mark.parametrize("count", range(1, 10))
def test_ema_jobs_of_one_to_four_chains(count: int, btc5m: pl.DataFrame) -> None:
    """EMAs of one series go four to a kernel call (the rest two, then one): every count up to
    nine, on gap-free bars (written straight into the result) and with NaN bars (placed)."""
    names = [f"ema_{p}" for p in (9, 200, 3, 21, 50, 2, 100, 14, 7)[:count]]
    df = btc5m.slice(40, 3_000)
    check_batch_equals_fold(df, names)
    close = df["close"].to_numpy().copy()
    close[[0, 250, 251, 2_000]] = np.nan
    check_batch_equals_fold(df.with_columns(close=pl.Series(close)), names + [f"{names[0]}_15m"])


def test_bbands_without_extras_leaves_width_and_pct_alone() -> None:
    x = np.cumsum(np.random.default_rng(4).normal(0, 1, 500)) + 100.0
    outs = [np.full(500, 7.0) for _ in range(5)]
    ib.bbands_batch_nb(x, 20, 2.0, *outs, False)
    assert (outs[3] == 7.0).all() and (outs[4] == 7.0).all()
    assert np.isnan(outs[0][:19]).all() and not np.isnan(outs[0][19:]).any()


@pytest.mark.parametrize("kind", KINDS)
def test_real_bars_with_nan_bars_gaps_and_htf(
    kind: str, btc5m: pl.DataFrame, btc_funding: pl.DataFrame
) -> None:
    """Default-size periods on 12,000 real bars (starting mid-hour, NaN bars, a gap), on the
    base interval and on 15m/1h bars; only part of the outputs requested in the 1h variant."""
    df = btc5m.slice(5_003, 12_000)
    close = df["close"].to_numpy().copy()
    close[[0, 77, 78, 5_000]] = np.nan
    df = df.with_columns(close=pl.Series(close)).filter(
        ~pl.col("open_time").is_between(int(df["open_time"][900]), int(df["open_time"][950]))
    )
    names = group(kind, 14) + group(kind, 50) if kind != "macd" else group(kind, 12, 26, 9)
    names = list(dict.fromkeys(names))
    names += [f"{x}_15m" for x in names] + [f"{x}_1h" for x in names[:1]]
    check_batch_equals_fold(df, names + ["funding_rate", "minutes_to_funding"], btc_funding)


def test_every_bar_valid_writes_straight_into_the_result(btc5m: pl.DataFrame) -> None:
    """The all-valid fast path (kernels writing into the result block), whole catalogue shape."""
    df = btc5m.slice(10, 6_000)
    names = [n for kind in KINDS for n in group(kind, 21, 8, 5) if "macd" not in n]
    names += group("macd", 8, 21, 5) + ["macd", "macd_12_26_9", "bb_pct", "bb_pct_20"]
    check_batch_equals_fold(df, list(dict.fromkeys(names)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    p=st.integers(2, 40),
    q=st.integers(2, 40),
    r=st.integers(1, 12),
    n=st.integers(1, 700),
    seed=st.integers(0, 10_000),
    offset=st.integers(0, 23),
    nan_frac=st.sampled_from([0.0, 0.03, 0.15]),
    gap_frac=st.sampled_from([0.0, 0.02, 0.2]),
    subset=st.integers(0, 7),
)
def test_random_walks_batch_equals_fold(
    kind: str, p: int, q: int, r: int, n: int, seed: int, offset: int, nan_frac: float,
    gap_frac: float, subset: int,
) -> None:  # fmt: skip
    df = make_bars(n, seed, offset, nan_frac, gap_frac)
    names = group(kind, p, q, r)
    if (
        kind in ("ema", "rsi", "sma", "atr", "dmi", "dmi_atr", "bb") and subset % 2
    ):  # two periods (pairs)
        names = list(dict.fromkeys(names + group(kind, q)))
    if len(names) > 1 and subset:  # some outputs only (the others go to scratch)
        names = [x for i, x in enumerate(names) if (subset >> (i % 3)) & 1] or names[:1]
    names = names + [f"{x}_15m" for x in names] + [f"{x}_1h" for x in names]
    check_batch_equals_fold(df, names, make_funding(df, seed) if seed % 2 else None)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from([300_000, 600_000, 7_200_000, 1, 299_999, 0, -5]), max_size=30),
    start=st.sampled_from([0, 300_000, 1_700_000_100_000, 17]),
)
def test_check_times_equals_numpy(steps: list[int], start: int) -> None:
    """The one-pass open-time check against its numpy oracle (order first, then the grid)."""
    t = np.array([start, *(start + np.cumsum(steps))], dtype=np.int64)
    bad = np.flatnonzero(np.diff(t) <= 0)
    i, ok = plan_nb.check_times_nb(t, 300_000)
    assert i == (int(bad[0]) + 1 if bad.size else -1)
    if i < 0:
        assert ok == (not np.any(t % 300_000))


@pytest.mark.parametrize("interval", ["5m", None])
def test_off_grid_row_in_the_middle_is_named(interval: str | None) -> None:
    from engine.errors import DataError
    from engine.features import compute

    from .helpers import random_walk

    df = random_walk(50, seed=1)
    t = df["open_time"].to_numpy().copy()
    t[30:] += 60_000  # rows 30.. open at xx:x1
    with pytest.raises(DataError, match=r"row 30 opens at .* not a multiple of the 5m interval"):
        compute(df.with_columns(open_time=pl.Series(t)), ["ema_3"], interval=interval)


def test_pair_kernels_equal_two_single_kernels(btc5m: pl.DataFrame) -> None:
    """ema2_batch_nb / rsi2_batch_nb against ema_batch_nb / rsi_batch_nb run one by one."""
    x = btc5m["close"].to_numpy()[:5_000].astype(np.float64)
    for na, nb in ((9, 200), (200, 9), (14, 14), (2, 3), (28, 14)):
        for m in (0, 1, min(na, nb), max(na, nb), max(na, nb) + 1, max(na, nb) + 2, 5_000):
            for single, pair in ((ib.ema_batch_nb, ib.ema2_batch_nb), (ib.rsi_batch_nb, ib.rsi2_batch_nb)):  # fmt: skip
                want_a, want_b = np.full(m, 7.0), np.full(m, 7.0)
                single(x[:m], na, want_a)
                single(x[:m], nb, want_b)
                got_a, got_b = np.full(m, 7.0), np.full(m, 7.0)
                pair(x[:m], na, nb, got_a, got_b)
                assert_bits(got_a, want_a, f"{pair.__name__} a ({na}, {nb}) m={m}")
                assert_bits(got_b, want_b, f"{pair.__name__} b ({na}, {nb}) m={m}")


def test_four_ema_kernel_equals_four_single_kernels(btc5m: pl.DataFrame) -> None:
    """ema4_batch_nb against ema_batch_nb run one by one, whichever chain seeds last."""
    x = btc5m["close"].to_numpy()[:5_000].astype(np.float64)
    for ns in ((9, 200, 21, 50), (200, 9, 3, 2), (14, 14, 14, 14), (2, 3, 5, 400)):
        for m in sorted({0, 1, *ns, *(n + 1 for n in ns), max(ns) + 2, 5_000}):
            want = [np.full(m, 7.0) for _ in ns]
            for n, w in zip(ns, want, strict=True):
                ib.ema_batch_nb(x[:m], n, w)
            got = [np.full(m, 7.0) for _ in ns]
            ib.ema4_batch_nb(x[:m], *ns, *got)
            for k in range(4):
                assert_bits(got[k], want[k], f"ema4_batch_nb chain {k} {ns} m={m}")


def test_dmi_atr_kernel_equals_the_two_kernels(btc5m: pl.DataFrame) -> None:
    """dmi_atr_batch_nb against dmi_batch_nb and atr_batch_nb run one by one."""
    df = btc5m.slice(700, 5_000)
    h, lo, c = (df[x].to_numpy().astype(np.float64) for x in ("high", "low", "close"))
    c[1_000:1_200] = c[1_000]  # a flat stretch (zero DX sums)
    h[1_000:1_200] = c[1_000]
    lo[1_000:1_200] = c[1_000]
    for n in (2, 3, 14, 50):
        for m in (0, 1, n - 1, n, n + 1, 2 * n - 1, 2 * n, 2 * n + 1, 5_000):
            want = [np.full(m, 7.0) for _ in range(5)]
            ib.dmi_batch_nb(h[:m], lo[:m], c[:m], n, *want[:3])
            ib.atr_batch_nb(h[:m], lo[:m], c[:m], n, *want[3:])
            got = [np.full(m, 7.0) for _ in range(5)]
            ib.dmi_atr_batch_nb(h[:m], lo[:m], c[:m], n, *got)
            for j in range(5):
                assert_bits(got[j], want[j], f"dmi_atr output {j} n={n} m={m}")


def test_remembered_plans_give_the_same_frames_and_errors() -> None:
    """compute() remembers compiled plans: a list and a tuple of names give the same frame,
    the plan's arrays cannot be changed, and bad names still raise every time."""
    from engine.errors import ConfigError
    from engine.features import compute
    from engine.features.batch import _plan

    from .helpers import random_walk

    df = random_walk(300, seed=8)
    a = compute(df, ["ema_3", "rsi_5_15m"], interval="5m")
    b = compute(df, ("ema_3", "rsi_5_15m"), interval="5m")
    assert a.equals(b, null_equal=True)
    with pytest.raises(ValueError, match="read-only"):
        _plan(("ema_3",), "5m").ops[0, 0] = 0
    for _ in range(2):
        with pytest.raises(ConfigError, match="did you mean 'rsi_14'"):
            compute(df, ["rsi_14", "rsi_1x"], interval="5m")
    with pytest.raises(ConfigError, match="got the string 'rsi_14'"):
        compute(df, "rsi_14", interval="5m")  # type: ignore[arg-type]


def check_aggregate(df: pl.DataFrame, tf_ms: int) -> None:
    _, (t, o, h, lo, c, v) = candle_arrays(df, interval="5m")
    valid = plan_nb.valid_mask_nb(o, h, lo, c, v)
    want_bars, want_vis = htf_nb.aggregate_nb(t, o, h, lo, c, v, valid, 300_000, tf_ms)
    got_bars, got_vis = htf_nb.aggregate_batch_nb(t, o, h, lo, c, v, valid, 300_000, tf_ms)
    assert got_bars.shape == want_bars.shape
    assert np.array_equal(got_vis, want_vis)
    for j in range(6):
        assert_bits(got_bars[j], want_bars[j], f"aggregate tf={tf_ms} field {j}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 500),
    seed=st.integers(0, 10_000),
    offset=st.integers(0, 47),
    nan_frac=st.sampled_from([0.0, 0.05, 0.3]),
    gap_frac=st.sampled_from([0.0, 0.05, 0.5]),
    tf=st.sampled_from([900_000, 3_600_000, 14_400_000]),
)
def test_aggregate_batch_equals_the_aggregator_fold(
    n: int, seed: int, offset: int, nan_frac: float, gap_frac: float, tf: int
) -> None:
    """The specialised HTF bar builder against the fold of agg_step_nb (NaN bars, gaps that
    skip whole periods, data starting mid-period)."""
    check_aggregate(make_bars(n, seed, offset, nan_frac, gap_frac), tf)


def test_aggregate_batch_on_real_bars(btc5m: pl.DataFrame) -> None:
    df = btc5m.slice(1_003, 30_000)
    df = df.filter(~pl.col("open_time").is_between(int(df["open_time"][5_000]), int(df["open_time"][5_300])))  # fmt: skip
    for tf in (900_000, 3_600_000, 86_400_000):
        check_aggregate(df, tf)


def test_compute_into_a_given_block_gives_views_of_it(btc5m: pl.DataFrame) -> None:
    """``compute(out=...)`` (the sweep's one block for every symbol): the same values as a
    fresh block, the frame's columns are rows of ``out``, and a block of the wrong shape
    or with strided rows is refused before anything is written."""
    from engine.features import compute

    bars = btc5m.head(3_000)
    names = ["ema_9", "rsi_14", "atr_14", "ema_20_1h", "adx_14"]  # a higher timeframe, a pair
    fresh = compute(bars, names, interval="5m")
    block = np.full((2, len(names) + 1, bars.height + 7), -1.0)  # wider than the bars: a pad
    frame = compute(bars, names, interval="5m", out=block[1, :, : bars.height])
    assert frame.columns == fresh.columns
    for j, name in enumerate(names):
        col = frame[:, j + 1].to_numpy()
        assert_bits(col, fresh[:, j + 1].to_numpy(), name)
        assert np.shares_memory(col, block)
        assert_bits(block[1, j, : bars.height], col, f"row {j}")
    assert (block[0] == -1.0).all() and (block[1, :, bars.height :] == -1.0).all()
    short, strided = np.empty((5, 3000)), np.empty((6, 6000))[:, ::2]
    for bad in (short, strided, block[1, :, : bars.height].astype(np.float32)):
        with pytest.raises(ValueError, match=r"out: float64 \[6, 3000\]"):
            compute(bars, names, interval="5m", out=bad)
