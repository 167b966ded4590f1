"""Helpers for the data-store tests: the CLI runner, store snapshots, a local Vision server."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
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
