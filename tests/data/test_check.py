"""`engine data check`: gaps, duplicates, OHLC violations, zero volume, unsorted times."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from engine.data import import_paths
from engine.data.check import check_store
from engine.data.store import Store

from .conftest import run_cli

MIRROR_1H = Path("data/spot/monthly/klines/BTCUSDT/1h")


@pytest.fixture(scope="module")
def spot_store(vision_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("spot_store")
    import_paths([vision_mirror / MIRROR_1H], store=store)
    return store


def test_spot_halt_gap_is_reported_and_fails(spot_store: Path) -> None:
    r = run_cli(
        "data",
        "check",
        "--market",
        "spot",
        "--symbol",
        "BTCUSDT",
        "--interval",
        "1h",
        "--store",
        spot_store,
    )
    assert r.exit_code == 1, r.output
    lines = r.stdout.splitlines()
    gap = next(ln for ln in lines if ln.startswith("error") and " gap " in ln)
    assert (
        "2023-03-24 13:00" in gap
        and "1 missing bar(s) between 2023-03-24 12:00 and 2023-03-24 14:00" in gap
    )
    where = lines[lines.index(gap) + 1]
    assert "month=2023-03" in where
    zero = next(ln for ln in lines if "zero_volume" in ln)
    assert zero.startswith("warning") and "2023-03-24 12:00" in zero
    assert "1 problem(s), 1 warning(s)" in r.stdout


def test_clean_futures_series_passes_with_zero_volume_warnings(usdm_store: Path) -> None:
    r = run_cli("data", "check", "--symbol", "BTCUSDT", "--interval", "5m", "--store", usdm_store)
    assert r.exit_code == 0, r.output
    assert "0 problem(s), 3 warning(s)" in r.stdout
    assert r.stdout.count("zero_volume") == 3 and "2023-09-12 08:35" in r.stdout
    strict = run_cli(
        "data",
        "check",
        "--symbol",
        "BTCUSDT",
        "--interval",
        "5m",
        "--strict",
        "--store",
        usdm_store,
    )
    assert strict.exit_code == 1


def test_gap_between_two_1m_recordings(usdm_store: Path) -> None:
    _, findings = check_store(Store(usdm_store), symbol="BTCUSDT", interval="1m")
    gaps = [f for f in findings if f.kind == "gap"]
    assert len(gaps) == 1 and gaps[0].span() == "2023-08-17 11:12 → 2025-05-04 15:32"
    assert gaps[0].count == (1746372720000 - 1692270720000) // 60_000 + 1


def test_ohlc_violation_in_the_store(usdm_dir: Path, tmp_path: Path) -> None:
    with gzip.open(usdm_dir / "klines" / "ETHUSDT-1h.csv.gz", "rt") as fh:
        lines = [next(fh).rstrip("\n") for _ in range(30)]
    f = lines[7].split(",")
    f[2] = str(float(f[4]) - 1.0)  # high below close
    lines[7] = ",".join(f)
    src = tmp_path / "ETHUSDT-1h.csv"
    src.write_text("\n".join(lines) + "\n")
    store = tmp_path / "s"
    import_paths([src], store=store)  # stored as it is: the check reports, never repairs
    r = run_cli("data", "check", "--store", store)
    assert r.exit_code == 1
    bad = next(ln for ln in r.stdout.splitlines() if " ohlc " in ln)
    assert "2023-01-01 06:00" in bad and f"high {float(f[2])}" in bad


def test_raw_file_unsorted_duplicate_misaligned(usdm_dir: Path, tmp_path: Path) -> None:
    with gzip.open(usdm_dir / "klines" / "BTCUSDT-1h.csv.gz", "rt") as fh:
        lines = [next(fh).rstrip("\n") for _ in range(40)]
    lines[10], lines[11] = lines[11], lines[10]  # unsorted at line 12
    lines.insert(31, lines[30])  # duplicate at lines 31 and 32
    f = lines[35].split(",")
    f[0] = str(int(f[0]) + 60_000)  # off the 1h grid
    lines[35] = ",".join(f)
    raw = tmp_path / "BTCUSDT-1h.csv"
    raw.write_text("\n".join(lines) + "\n")
    r = run_cli("data", "check", raw)
    assert r.exit_code == 1
    out = r.stdout
    assert "unsorted" in out and f"{raw} line 12" in out
    assert "duplicate" in out and f"{raw} line 31, {raw} line 32" in out
    assert "misaligned" in out and f"{raw} line 36" in out
    assert "gap" in out  # the misaligned bar leaves its hour empty


def test_no_matching_series(usdm_store: Path) -> None:
    r = run_cli("data", "check", "--symbol", "SOLUSDT", "--store", usdm_store)
    assert r.exit_code == 1 and "holds no series matching" in r.stderr
