"""``engine sweep`` as a user runs it: one JSON object on stdout; bad grids exit 2 and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import EMA, SPAN


def _engine(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_json_is_one_object_sorted_best_first(usdm_store: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = _engine(
        "sweep", str(EMA), "--grid", "fast=5,12", "--grid", "risk.fraction=0.1:0.2:0.1",
        "--start", SPAN["start"], "--end", SPAN["end"], "--symbols", "BTCUSDT",
        "--sort", "max_drawdown", "--workers", "2", "--json",
        "--store", str(usdm_store), "--results", str(results),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert set(doc) == {"run_id", "results"}
    res = doc["results"]
    assert len(res) == 4
    assert {tuple(sorted(r["params"].items())) for r in res} == {
        (("fast", f), ("risk.fraction", x)) for f in (5, 12) for x in (0.1, 0.2)
    }
    dd = [r["metrics"]["max_drawdown"] for r in res]
    assert dd == sorted(dd)  # max_drawdown: smallest first
    assert all(set(r) == {"params", "metrics", "run_id"} for r in res)
    q = _engine(
        "query", "--results", str(results), "--format", "json",
        f"select run_id from runs where parent_run_id = '{doc['run_id']}'",
        cwd=tmp_path,
    )  # fmt: skip
    assert q.returncode == 0, q.stderr
    assert {r["run_id"] for r in json.loads(q.stdout)} == {r["run_id"] for r in res}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--grid", "fats=5,9"], ["unknown param 'fats'", "did you mean 'fast'?"]),
        (["--grid", "risk.fractoin=0.1,0.2"], ["unknown key 'fractoin'", "'fraction'"]),
        (["--grid", "fast=20:5:5"], ["range is empty"]),
        (["--grid", "fast=5:20:0"], ["step must be > 0"]),
        (["--grid", "fast=5:x:1"], ["'x' is not a number"]),
        ([], ["no --grid given"]),
        (["--grid", "fast=1:101:1", "--grid", "slow=1:100:1"], ["10,100 combinations", "--force"]),
        (["--grid", "fast=5,0"], ["--grid combination fast=0", "ema_0"]),
        (["--grid", "fast=5", "--set", "fast=7"], ["also given with --set"]),
        (["--grid", "fast=5", "--sort", "sharp"], ["--sort 'sharp'", "did you mean 'sharpe'?"]),
        (["--grid", "risk.fraction=0.5,1.5"], ["risk.fraction=1.5", "fraction"]),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    args: list[str], needles: list[str], usdm_store: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    results = tmp_path / "results"
    proc = CliRunner().invoke(
        app,
        ["sweep", str(EMA), *args, "--store", str(usdm_store), "--results", str(results),
         "--start", SPAN["start"], "--end", SPAN["end"]],
    )  # fmt: skip
    assert proc.exit_code == 2, proc.output
    text = " ".join(proc.output.split())
    for needle in needles:
        assert needle in text, text
    assert not results.exists()


def test_the_cli_drawer_shows_the_latest_report_and_stops() -> None:
    """engine.cli.common.ProgressBar is the one drawer of ``progress(task, done, total)``."""
    import io

    from rich.console import Console

    from engine.cli.common import ProgressBar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with ProgressBar("sweep", console=console) as progress:
        progress("combinations", 3, 9)
        progress._bar.refresh()  # type: ignore[union-attr]
        shown = out.getvalue()
        assert "sweep: combinations" in shown and "3/9" in shown
        progress("load data", 0, None)  # unknown total
        progress._bar.refresh()  # type: ignore[union-attr]
        assert "sweep: load data" in out.getvalue()
    progress("after", 1, 1)  # a report after the end is ignored
    assert "after" not in out.getvalue()
