"""``engine report SWEEP_ID``: heatmap over two axes, top combinations, walk-forward curve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import UsageError
from engine.report.sweep import build_sweep_report, heatmap_cells
from engine.sweep.walkforward import run_walk_forward

from .helpers import EMA


def test_heatmap_cells_take_the_best_over_the_other_axes() -> None:
    combos = [
        ({"a": 1, "b": 1, "c": 0}, {"sharpe": 0.5, "max_drawdown": 0.2}),
        ({"a": 1, "b": 1, "c": 1}, {"sharpe": 0.9, "max_drawdown": 0.1}),
        ({"a": 2, "b": 1, "c": 0}, {"sharpe": float("nan"), "max_drawdown": 0.3}),
    ]
    assert heatmap_cells(combos, "a", "b", "sharpe", [1, 2], [1, 3]) == [[0.9, None], [None, None]]
    assert heatmap_cells(combos, "a", "b", "max_drawdown", [1, 2], [1]) == [[0.1, 0.3]]
    assert heatmap_cells(combos, "a", None, "sharpe", [1, 2], [""]) == [[0.9, None]]


def test_sweep_report_heatmap_and_top(logged_sweep, sweep_results: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sweep.html"
    res = CliRunner().invoke(
        app,
        ["report", logged_sweep.run_id, "--results", str(sweep_results), "--out", str(out),
         "--x", "slow", "--y", "fast", "--metric", "total_return", "--top", "4"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert 'id="heatmap"' in page and "total_return over slow x fast" in page
    best = logged_sweep.ranked("total_return", top=4)
    top = page.split("Top 4 by total_return")[1]
    cells = re.findall(r"<tr><td class=\"\">(\d+)</td><td class=\"\">(\d+)</td>", top)
    assert [(int(f), int(s)) for f, s in cells] == [
        (r.params["fast"], r.params["slow"]) for r in best
    ]
    with pytest.raises(UsageError, match="not an axis"):
        build_sweep_report(logged_sweep.run_id, results_dir=sweep_results, out=out, x="fats")


def test_walk_forward_report(usdm_store: Path, tmp_path: Path) -> None:
    wf = run_walk_forward(
        EMA, ["fast=5,12", "slow=26,50"], in_sample="4d", out_of_sample="2d",
        start="2024-03-01", end="2024-03-07", symbols=["BTCUSDT"], store=usdm_store,
        results=tmp_path,
    )  # fmt: skip
    path = build_sweep_report(wf.run_id, results_dir=tmp_path)  # type: ignore[arg-type]
    page = path.read_text()
    assert "Walk-forward: in-sample 4d, out-of-sample 2d" in page
    assert 'id="oos"' in page and "In-sample vs out-of-sample" in page
    for w in wf.windows:
        assert ", ".join(f"{k}={v}" for k, v in w.params.items()) in page
