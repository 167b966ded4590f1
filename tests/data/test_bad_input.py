"""Every kind of bad input gets a message naming the file and the line or field, a non-zero
exit code, and leaves the store byte for byte as it was."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import pytest

from .conftest import run_cli, snapshot

MIRROR_1H = Path("data/spot/monthly/klines/BTCUSDT/1h")


@pytest.fixture(scope="module")
def eth_lines(usdm_dir: Path) -> list[str]:
    """Header and first 48 rows of the real ETHUSDT 1h futures klines (not in the base store)."""
    with gzip.open(usdm_dir / "klines" / "ETHUSDT-1h.csv.gz", "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(49)]


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_rejected(store: Path, args: list[str | Path], *needles: str, code: int = 1) -> str:
    before = snapshot(store)
    result = run_cli("data", "import", *args, "--store", store)
    assert result.exit_code == code, result.output
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert "hint:" in result.stderr
    assert snapshot(store) == before
    return result.stderr


def test_truncated_zip(store: Path, vision_mirror: Path, tmp_path: Path) -> None:
    src = vision_mirror / MIRROR_1H / "BTCUSDT-1h-2023-05.zip"
    bad = tmp_path / "in" / "spot" / src.name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert_rejected(store, [bad], str(bad), "not a readable zip", "download it again")


def test_corrupt_zip(store: Path, vision_mirror: Path, tmp_path: Path) -> None:
    src = vision_mirror / MIRROR_1H / "BTCUSDT-1h-2023-05.zip"
    data = bytearray(src.read_bytes())
    for i in range(200, 400):  # inside the deflated member
        data[i] ^= 0x5A
    bad = tmp_path / "in" / "spot" / src.name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(bytes(data))
    assert_rejected(store, [bad], str(bad), "not a readable zip")


def test_truncated_gzip(store: Path, usdm_dir: Path, tmp_path: Path) -> None:
    src = usdm_dir / "klines" / "ETHUSDT-1h.csv.gz"
    bad = tmp_path / "in" / src.name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    assert_rejected(store, [bad], str(bad), "cannot read", "corrupt or truncated")


def test_corrupt_gzip(store: Path, usdm_dir: Path, tmp_path: Path) -> None:
    src = usdm_dir / "klines" / "ETHUSDT-1h.csv.gz"
    data = bytearray(src.read_bytes())
    for i in range(200, 400):  # inside the deflate stream
        data[i] ^= 0x5A
    bad = tmp_path / "in" / src.name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(bytes(data))
    assert_rejected(store, [bad], str(bad), "cannot read")


def test_checksum_mismatch(store: Path, vision_mirror: Path, tmp_path: Path) -> None:
    src = vision_mirror / MIRROR_1H / "BTCUSDT-1h-2023-05.zip"
    folder = tmp_path / "in" / "spot"
    folder.mkdir(parents=True)
    shutil.copy(src, folder / src.name)
    text = (vision_mirror / MIRROR_1H / (src.name + ".CHECKSUM")).read_text()
    altered = ("0" if text[0] != "0" else "1") + text[1:]
    (folder / (src.name + ".CHECKSUM")).write_text(altered)
    err = assert_rejected(store, [tmp_path / "in"], src.name, "checksum mismatch")
    assert altered.split()[0] in err


def test_missing_column(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    lines = [line.split(",") for line in eth_lines]
    no_low = [",".join(f[:3] + f[4:]) for f in lines]  # drop `low`
    bad = write(tmp_path / "in" / "ETHUSDT-1h.csv", no_low)
    assert_rejected(store, [bad], str(bad), "missing column 'low'")


def test_non_numeric_price(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    lines = list(eth_lines)
    f = lines[5].split(",")
    f[2] = "12O4.5"  # letter O instead of zero, in `high`
    lines[5] = ",".join(f)
    bad = write(tmp_path / "in" / "ETHUSDT-1h.csv", lines)
    assert_rejected(store, [bad], str(bad), "line 6", "field 'high'", "'12O4.5'")


def test_empty_field(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    lines = list(eth_lines)
    f = lines[9].split(",")
    f[4] = ""
    lines[9] = ",".join(f)
    bad = write(tmp_path / "in" / "ETHUSDT-1h.csv", lines)
    assert_rejected(store, [bad], str(bad), "line 10", "field 'close' is empty")


def test_ragged_line(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    lines = list(eth_lines)
    lines[7] = lines[7] + ",1,2"
    bad = write(tmp_path / "in" / "ETHUSDT-1h.csv", lines)
    assert_rejected(store, [bad], str(bad), "line 8 has 8 fields")


def test_unsorted_times(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    lines = list(eth_lines)
    lines[10], lines[11] = lines[11], lines[10]
    bad = write(tmp_path / "in" / "ETHUSDT-1h.csv", lines)
    assert_rejected(store, [bad], str(bad), "line 12", "unsorted open_time", "sort the file")


def test_duplicated_times(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    lines = list(eth_lines)
    lines.insert(21, lines[20])
    bad = write(tmp_path / "in" / "ETHUSDT-1h.csv", lines)
    assert_rejected(store, [bad], str(bad), "line 22", "duplicated open_time", "line 21")


def test_mixed_ms_and_us_times(store: Path, vision_mirror: Path, tmp_path: Path) -> None:
    def rows(month: str) -> list[str]:
        with zipfile.ZipFile(vision_mirror / MIRROR_1H / f"BTCUSDT-1h-{month}.zip") as zf:
            return zf.read(zf.namelist()[0]).decode().splitlines()

    ms_rows = rows("2024-12")[-5:]  # milliseconds
    us_rows = rows("2025-01")[:5]  # microseconds
    bad = write(tmp_path / "in" / "spot" / "BTCUSDT-1h-2025-01.csv", ms_rows + us_rows)
    assert_rejected(store, [bad], str(bad), "line 6", "mixed ms and us")


def test_unknown_interval_in_file_name(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    bad = write(tmp_path / "in" / "ETHUSDT-7m.csv", eth_lines)
    assert_rejected(store, [bad], str(bad), "unknown interval '7m'")


def test_unknown_interval_option(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    f = write(tmp_path / "in" / "eth.csv", eth_lines)
    assert_rejected(
        store, [f, "--symbol", "ETHUSDT", "--interval", "7m"], "unknown interval '7m'", code=2
    )


def test_interval_not_matching_the_data(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    bad = write(tmp_path / "in" / "ETHUSDT-1d.csv", eth_lines)
    assert_rejected(store, [bad], str(bad), "line 3", "not on the 1d grid")


def test_nonexistent_path(store: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ETHUSDT-1h.csv"
    assert_rejected(store, [missing], str(missing), "no such file or folder")


def test_broken_link_in_folder(store: Path, eth_lines: list[str], tmp_path: Path) -> None:
    write(tmp_path / "in" / "ETHUSDT-1h.csv", eth_lines)
    link = tmp_path / "in" / "ETHUSDT-15m.csv"
    link.symlink_to(tmp_path / "gone.csv")
    assert_rejected(store, [tmp_path / "in"], str(link), "cannot read")


def test_empty_file(store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "in" / "ETHUSDT-1h.csv"
    bad.parent.mkdir()
    bad.write_text("")
    assert_rejected(store, [bad], str(bad), "empty")


def test_one_bad_file_blocks_the_whole_import(
    store: Path, eth_lines: list[str], tmp_path: Path
) -> None:
    write(tmp_path / "in" / "a" / "ETHUSDT-1h.csv", eth_lines)  # good
    lines = list(eth_lines)
    lines[3] = lines[3].replace(",", ",x", 1)
    bad = write(tmp_path / "in" / "b" / "ETHUSDT-15m.csv", lines)
    assert_rejected(store, [tmp_path / "in"], str(bad), "line 4")


def test_conflict_with_the_store(store: Path, usdm_dir: Path, tmp_path: Path) -> None:
    with gzip.open(usdm_dir / "klines" / "BTCUSDT-1h.csv.gz", "rt") as fh:
        lines = [next(fh).rstrip("\n") for _ in range(30)]
    f = lines[12].split(",")
    f[4] = str(float(f[4]) + 1.0)
    lines[12] = ",".join(f)
    bad = write(tmp_path / "in" / "BTCUSDT-1h.csv", lines)
    err = assert_rejected(store, [bad], str(bad), "line 13", "conflicting data", "close")
    assert "month=2023-01" in err
