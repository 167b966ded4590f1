"""Grid parsing at the door: lists, decimal ranges, and every way a grid can be wrong."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError, UsageError
from engine.strategy.yamlio import load_yaml_file
from engine.sweep import MAX_COMBOS, Axis, combinations, parse_axis, parse_grid
from engine.sweep.grid import check_axes

from .helpers import EMA


def test_lists_and_yaml_scalars() -> None:
    assert parse_axis("fast=5,9,12").values == (5, 9, 12)
    assert parse_axis("risk.sizing=fixed").values == ("fixed",)
    assert parse_axis("x=0.5, 1, true").values == (0.5, 1, True)


def test_ranges_are_inclusive_and_exact() -> None:
    assert parse_axis("risk.fraction=0.05:0.2:0.05").values == (0.05, 0.1, 0.15, 0.2)
    assert parse_axis("fast=5:20:5").values == (5, 10, 15, 20)
    assert parse_axis("fast=5:19:5").values == (5, 10, 15)  # 19 is not on the step
    assert parse_axis("x=1:1:1").values == (1,)
    assert all(isinstance(v, int) for v in parse_axis("fast=5:20:5").values)


def test_combinations_last_axis_fastest() -> None:
    axes = parse_grid(["fast=5,9", "slow=26,50,100"])
    combos = combinations(axes)
    assert len(combos) == 6
    assert combos[0] == {"fast": 5, "slow": 26}
    assert combos[1] == {"fast": 5, "slow": 50}
    assert combos[-1] == {"fast": 9, "slow": 100}


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("fast", "expected name=values"),
        ("fast=", "no values given"),
        ("fast=5,,9", "empty value"),
        ("fast=5,5", "listed twice"),
        ("1fast=5", "not a param name"),
        ("fast=5:20", "start:stop:step"),
        ("fast=5:20:0", "step must be > 0"),
        ("fast=5:20:-5", "step must be > 0"),
        ("fast=20:5:5", "range is empty"),
        ("fast=a:5:1", "'a' is not a number"),
        ("fast=1:nan:1", "not a finite number"),
    ],
)
def test_bad_axis(item: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_axis(item)
    assert needle in err.value.message
    assert err.value.exit_code == 2


def test_empty_repeated_and_too_large_grids() -> None:
    with pytest.raises(UsageError, match="no --grid given"):
        parse_grid([])
    with pytest.raises(UsageError, match="given 2 times"):
        parse_grid(["fast=5", "fast=9"])
    big = ["fast=1:101:1", "slow=1:100:1"]  # 101 x 100 > 10,000
    with pytest.raises(UsageError, match="more than 10,000") as err:
        parse_grid(big)
    assert "--force" in (err.value.hint or "")
    assert len(combinations(parse_grid(big, force=True))) == 10_100 > MAX_COMBOS
    assert len(combinations(parse_grid(["fast=1:100:1", "slow=1:100:1"]))) == MAX_COMBOS


def test_unknown_param_suggests_the_closest() -> None:
    raw, _ = load_yaml_file(EMA)
    with pytest.raises(ConfigError) as err:
        check_axes([Axis("fats", (5,), "fats=5")], raw)
    assert "unknown param 'fats'" in err.value.message
    assert "did you mean 'fast'?" in (err.value.hint or "")
    with pytest.raises(ConfigError) as err:
        check_axes([Axis("risk.fractoin", (0.1,), "risk.fractoin=0.1")], raw)
    assert "unknown key 'fractoin'" in err.value.message
    assert "'fraction'" in (err.value.hint or "")
    with pytest.raises(UsageError, match="also given with --set"):
        check_axes([Axis("fast", (5,), "fast=5")], raw, fixed=["fast=7"])
    check_axes([Axis("fast", (5,), "fast=5"), Axis("risk.fraction", (0.1,), "")], raw)
