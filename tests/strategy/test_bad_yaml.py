"""The bad-YAML corpus: every file fails `engine validate` and `engine backtest` with exit 2,
a message naming the problem (file:line and YAML path where there is one), and nothing written.

Each file under tests/strategy/bad/ starts with ``# expect: <fragment>``; optional lines
``# args: <extra command-line arguments>`` and ``# hint: <fragment>``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app

BAD = Path(__file__).parent / "bad"
FILES = sorted(BAD.glob("*.yaml"))


def _meta(path: Path) -> tuple[str, list[str], str | None]:
    lines = path.read_text().splitlines()
    expect = lines[0].split("# expect:", 1)[1].strip()
    args: list[str] = []
    hint = None
    for line in lines[1:4]:
        if line.startswith("# args:"):
            args = shlex.split(line.split(":", 1)[1])
        if line.startswith("# hint:"):
            hint = line.split(":", 1)[1].strip()
    return expect, args, hint


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_corpus_is_big_enough() -> None:
    assert len(FILES) >= 15
    for f in FILES:
        assert f.read_text().startswith("# expect:"), f


@pytest.mark.parametrize("command", ["validate", "backtest"])
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_bad_yaml(path: Path, command: str, tmp_path: Path) -> None:
    expect, args, hint = _meta(path)
    results = tmp_path / "results"
    store = tmp_path / "store"
    extra = ["--results", str(results), "--store", str(store)] if command == "backtest" else []
    res = CliRunner().invoke(app, [command, str(path), *args, *extra])
    out = res.stderr if hasattr(res, "stderr") else res.output
    assert res.exit_code == 2, (res.exit_code, res.output, out)
    assert expect in out, out
    if ":" in expect and expect.startswith(":"):
        assert f"{path}{expect.split(' ')[0]}" in out, out  # file:line
    if hint:
        assert hint in out, out
    assert res.stdout == "", res.stdout
    assert not results.exists() and not store.exists()


def test_subprocess_exit_code_and_nothing_written(tmp_path: Path) -> None:
    path = BAD / "04_kelly_fraction.yaml"
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("x")
    before = _tree(results)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "backtest",
            str(path),
            "--results",
            str(results),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{path}:10: risk.kelly_fraction: must be in (0, 1], got 1.5" in proc.stderr
    assert _tree(results) == before


def test_unknown_file_is_a_config_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "strategy file not found" in res.stderr
