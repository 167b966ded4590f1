"""engine.decisions.market.align: symbols on one grid, gap-free or not."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.decisions.market import align
from engine.errors import DataError

STEP = 300_000  # 5m
T0 = 1_672_531_200_000


def _frame(times: list[int]) -> pl.DataFrame:
    t = np.array(times, dtype=np.int64)
    base = (t - T0) / STEP
    return pl.DataFrame({
        "open_time": t, "open": base + 0.1, "high": base + 0.5, "low": base - 0.5,
        "close": base + 0.2, "volume": base * 2,
    })  # fmt: skip


def test_gap_free_and_gapped_symbols_share_one_grid() -> None:
    whole = [T0 + STEP * k for k in range(10)]  # every bar: the slice path
    late = [T0 + STEP * k for k in (3, 4, 6, 7, 9)]  # a late start and gaps: the row path
    m = align({"AAA": _frame(whole), "BBB": _frame(late)}, "5m")
    assert m.open_time.tolist() == whole
    assert m.rows["AAA"].tolist() == list(range(10))
    assert m.rows["BBB"].tolist() == [3, 4, 6, 7, 9]
    assert m.has_bar[:, 0].all()
    assert np.flatnonzero(m.has_bar[:, 1]).tolist() == [3, 4, 6, 7, 9]
    for name, shift in (("open", 0.1), ("high", 0.5), ("low", -0.5), ("close", 0.2)):
        col = getattr(m, name)
        assert col[:, 0].tolist() == [k + shift for k in range(10)]
        want = [k + shift if k in (3, 4, 6, 7, 9) else np.nan for k in range(10)]
        np.testing.assert_array_equal(col[:, 1], want)


def test_a_later_gap_free_symbol_starts_at_its_row() -> None:
    m = align({"AAA": _frame([T0, T0 + STEP]), "BBB": _frame([T0 + STEP])}, "5m")
    assert m.rows["BBB"].tolist() == [1]
    assert m.close[:, 1].tolist()[1] == 1.2 and np.isnan(m.close[0, 1])


@pytest.mark.parametrize("times", [[T0, T0 + STEP + 1], [T0, T0 + 7]])
def test_a_bar_off_the_grid_is_an_error(times: list[int]) -> None:
    with pytest.raises(DataError, match="off the 5m grid"):
        align({"AAA": _frame([T0, T0 + STEP, T0 + 2 * STEP]), "BBB": _frame(times)}, "5m")
