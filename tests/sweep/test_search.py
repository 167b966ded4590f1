"""``--search grid|random|optuna`` and ``--where``: which combinations a sweep runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.sweep import parse_grid
from engine.sweep.search import compile_where, kept, random_sample, run_search

from .helpers import EMA

#: a 5x5 ema_cross grid over nine days of BTCUSDT 5m bars
GRID5 = ["fast=5,7,9,12,15", "slow=20,26,35,50,100"]
SPAN9 = {"start": "2024-03-01", "end": "2024-03-10", "symbols": ["BTCUSDT"]}


def test_where_compiles_a_condition_over_the_axes() -> None:
    names = ["fast", "slow", "risk.fraction"]
    keep = compile_where("fast < slow and not risk.fraction > 0.1", names)
    assert keep({"fast": 5, "slow": 26, "risk.fraction": 0.1})
    assert not keep({"fast": 26, "slow": 26, "risk.fraction": 0.1})
    assert not keep({"fast": 5, "slow": 26, "risk.fraction": 0.2})
    chained = compile_where("2 * fast <= slow < 100 or abs(fast - slow) % 7 == 0", names)
    assert chained({"fast": 10, "slow": 20, "risk.fraction": 0.1})
    assert not chained({"fast": 12, "slow": 20, "risk.fraction": 0.1})
    assert chained({"fast": 6, "slow": 101, "risk.fraction": 0.1}) is False


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("fats < slow", "'fats' is not an axis"),
        ("fast.__class__ < slow", "is not an axis"),
        ("__import__('os')", "Call is not allowed"),
        ("fast < 'a'", "is not a number"),
        ("fast <", "syntax error"),
        ("fast ** 2 < slow", "BinOp is not allowed"),
    ],
)
def test_where_refuses_anything_else(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        compile_where(text, ["fast", "slow"])
    assert needle in err.value.message


def test_where_filters_the_sweep(usdm_store: Path) -> None:
    res = run_search(
        EMA, ["fast=5,9,26", "slow=9,26,50"], where="fast < slow", log=False,
        store=usdm_store, executor="local", **SPAN9,
    )  # fmt: skip
    got = [(r.params["fast"], r.params["slow"]) for r in res.results]
    assert got == [(5, 9), (5, 26), (5, 50), (9, 26), (9, 50), (26, 50)]
    with pytest.raises(UsageError, match="keeps none"):
        kept(parse_grid(["fast=50", "slow=9,26"]), "fast < slow")


def test_logged_search_records_how_it_chose(usdm_store: Path, tmp_path: Path) -> None:
    from engine.runlog import RunLog

    res = run_search(
        EMA, GRID5, search="random", trials=3, seed=5, where="fast < slow", store=usdm_store,
        results=tmp_path, executor="local", **SPAN9,
    )  # fmt: skip
    assert len(res.results) == 3
    with RunLog(tmp_path) as log:
        parent = log.get_run(res.run_id)  # type: ignore[arg-type]
    assert parent is not None
    got = {k: parent["params"][k] for k in ("search", "trials", "seed", "where")}
    assert got == {"search": "random", "trials": 3, "seed": 5, "where": "fast < slow"}


def test_random_search_samples_distinct_kept_combinations() -> None:
    combos = kept(parse_grid(GRID5), "fast < slow")
    a = random_sample(combos, 7, seed=3)
    assert a == random_sample(combos, 7, seed=3)
    assert len({tuple(c.values()) for c in a}) == 7
    assert all(c in combos for c in a)
    assert a == [c for c in combos if c in a]  # grid order
    assert random_sample(combos, 999, seed=1) == combos


def test_optuna_finds_the_grid_optimum(usdm_store: Path) -> None:
    kw = {"log": False, "store": usdm_store, "executor": "local", **SPAN9}
    full = run_search(EMA, GRID5, **kw)
    best = full.ranked("sharpe", top=1)[0]
    found = run_search(EMA, GRID5, search="optuna", trials=12, seed=1, **kw)
    assert len(found.results) == 12  # about half the grid, distinct combinations
    top = found.ranked("sharpe", top=1)[0]
    assert top.params == best.params
    assert top.metrics == best.metrics  # the same backtest, the same floats
    lower = run_search(EMA, GRID5, search="optuna", trials=12, seed=0, sort="max_drawdown", **kw)
    assert lower.ranked("max_drawdown", top=1)[0].params == full.ranked("max_drawdown")[0].params


def test_search_options_are_checked() -> None:
    with pytest.raises(UsageError, match="needs --trials"):
        run_search(EMA, GRID5, search="optuna")
    with pytest.raises(UsageError, match="--search must be one of"):
        run_search(EMA, GRID5, search="tpe", trials=3)
    with pytest.raises(UsageError, match="--trials goes with"):
        run_search(EMA, GRID5, trials=3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--where", "fats < slow"], "'fats' is not an axis"),
        (["--search", "optuna"], "needs --trials"),
        (["--search", "random", "--trials", "0"], "--trials"),
        (["--where", "fast > 1000"], "keeps none"),
    ],
)
def test_cli_refuses_bad_search_options(args: list[str], needle: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    res = CliRunner().invoke(
        app, ["sweep", str(EMA), *GRID5_ARGS, *args, "--results", str(tmp_path / "r")]
    )
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split())
    assert not (tmp_path / "r").exists()  # nothing written


GRID5_ARGS = [x for g in GRID5 for x in ("--grid", g)]
