"""Helpers for the data-store tests: the CLI runner, store snapshots, a local Vision server
and a USD-M Vision mirror made from the real recordings."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app


def run_cli(*args: str | Path) -> object:
    """Run ``engine ...`` in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file under the store with its bytes (the store's exact state)."""
    if not store.exists():
        return {}
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def _base_store(usdm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.data import import_paths

    store = tmp_path_factory.mktemp("base_store")
    import_paths([usdm_dir / "klines" / "BTCUSDT-1h.csv.gz"], store=store)
    return store


@pytest.fixture
def store(_base_store: Path, tmp_path: Path) -> Path:
    """A fresh, writable store holding usdm BTCUSDT 1h klines."""
    dst = tmp_path / "store"
    shutil.copytree(_base_store, dst)
    return dst


class VisionServer:
    """A real HTTP server on 127.0.0.1 over a folder, counting requests per path.

    ``fail`` maps a URL path to a list of actions consumed one per request: ``"drop"``
    sends the headers and half the body, then closes the connection; an int answers with
    that HTTP status. When the list is empty the file is served normally.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.fail: dict[str, list[str | int]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.requests.append(self.path)
                    actions = server.fail.get(self.path)
                    action = actions.pop(0) if actions else None
                if isinstance(action, int):
                    self.send_error(action)
                    return
                if action == "drop":
                    data = (server.root / self.path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def __enter__(self) -> VisionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def zip_requests(self) -> list[str]:
        return [p for p in self.requests if p.endswith(".zip")]


@pytest.fixture
def vision_server() -> Iterator[Callable[[Path], VisionServer]]:
    """Factory: ``with vision_server(root) as srv: ...`` serves ``root`` on a free port."""
    servers: list[VisionServer] = []

    def make(root: Path) -> VisionServer:
        srv = VisionServer(root)
        servers.append(srv)
        return srv

    yield make


# The USD-M months the mirror holds (the recordings span 2023-01 to 2024-05-14).
USDM_MONTHS = ("2023-01", "2023-02", "2023-03", "2024-01", "2024-02")


def _month_of(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m")


def _write_vision_zip(path: Path, header: str, rows: list[str]) -> None:
    """A Vision zip (one CSV member named like the zip) and its ``.CHECKSUM`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(path.name[: -len(".zip")] + ".csv", "\n".join([header, *rows]) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / (path.name + ".CHECKSUM")).write_text(f"{digest}  {path.name}\n")


def _split_months(src: Path) -> tuple[str, dict[str, list[str]]]:
    with gzip.open(src, "rt") as fh:
        header = next(fh).rstrip("\n")
        months: dict[str, list[str]] = {}
        for line in fh:
            line = line.rstrip("\n")
            months.setdefault(_month_of(int(line.split(",", 1)[0])), []).append(line)
    return header, months


@pytest.fixture(scope="session")
def usdm_vision(usdm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in Binance Vision's USD-M layout, made from the real recordings in binance-usdm.

    ``data/futures/um/monthly/{klines/SYM/INT, markPriceKlines/SYM/8h, fundingRate/SYM}/...zip``
    with a ``.CHECKSUM`` beside each, for BTCUSDT and ETHUSDT, klines 5m and 1h, mark price 8h
    and funding, over :data:`USDM_MONTHS`. Each zip holds one CSV with a header row, as recent
    Vision files do; the rows are the recordings' own columns (klines: the 6 OHLCV columns, as
    the recordings have no more; the 12-column Vision parse is tested with the spot mirror).
    """
    root = tmp_path_factory.mktemp("usdm_vision")
    um = root / "data" / "futures" / "um" / "monthly"
    for sym in ("BTCUSDT", "ETHUSDT"):
        sources = [
            (usdm_dir / "klines" / f"{sym}-{iv}.csv.gz", um / "klines" / sym / iv, f"{sym}-{iv}")
            for iv in ("5m", "1h")
        ]
        sources.append(
            (
                usdm_dir / "markPriceKlines" / f"{sym}-8h.csv.gz",
                um / "markPriceKlines" / sym / "8h",
                f"{sym}-8h",
            )
        )
        sources.append(
            (
                usdm_dir / "fundingRate" / f"{sym}-fundingRate.csv.gz",
                um / "fundingRate" / sym,
                f"{sym}-fundingRate",
            )
        )
        for src, folder, stem in sources:
            header, months = _split_months(src)
            for month in USDM_MONTHS:
                _write_vision_zip(folder / f"{stem}-{month}.zip", header, months[month])
    return root
