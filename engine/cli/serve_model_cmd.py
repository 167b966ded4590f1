"""``engine serve-model MODEL``: serve a trained model over HTTP (see engine.ml.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from engine.cli.common import console, guarded

if TYPE_CHECKING:
    from engine.ml.serve import ModelService


def register(app: typer.Typer) -> None:
    @app.command("serve-model")
    @guarded
    def serve_model(
        model: Path = typer.Argument(
            ..., help="A model version folder under results/models/, or an .onnx file."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8765, "--port", help="Port (0: any free port)."),
        features: str | None = typer.Option(
            None,
            "--features",
            help="Comma-separated feature names in the model's input order (an .onnx file "
            "does not carry them; a version folder's meta.json does).",
        ),
        interval: str | None = typer.Option(
            None, "--interval", help="Base bar interval for candles (default: the model's)."
        ),
        max_body_mb: float = typer.Option(
            32.0, "--max-body-mb", help="Largest request body in MiB (413 above it)."
        ),
        delay_ms: float = typer.Option(
            0.0,
            "--delay-ms",
            help="Add this latency to every /predict (fault injection for tests).",
        ),
    ) -> None:
        """Serve a model: POST /predict, POST /retrain, GET /health, GET /metrics."""
        from engine.errors import UsageError
        from engine.ml.serve import ModelService

        if not 0 <= port <= 65535:
            raise UsageError(f"--port: must be in 0..65535, got {port}")
        if delay_ms < 0:
            raise UsageError(f"--delay-ms: must be >= 0, got {delay_ms}")
        if max_body_mb <= 0:
            raise UsageError(f"--max-body-mb: must be > 0, got {max_body_mb}")
        names = [f.strip() for f in features.split(",") if f.strip()] if features else None
        service = ModelService.from_path(model, features=names, interval=interval)
        service.warm_up()
        _run(service, host, port, max_body=int(max_body_mb * (1 << 20)), delay_s=delay_ms / 1000)


def _run(service: ModelService, host: str, port: int, *, max_body: int, delay_s: float) -> None:
    """Serve until SIGINT or SIGTERM; print the address once listening."""
    import asyncio
    import signal

    from engine.errors import UsageError
    from engine.ml.serve import make_app, start

    async def main() -> None:
        app = make_app(service, max_body=max_body, delay_s=delay_s)
        try:
            runner, bound = await start(app, host=host, port=port)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc}", hint="pick another --port"
            ) from None
        m = service.health()
        console.print(
            f"serving {m['model_version']} ({m['kind']}) on http://{host}:{bound}",
            highlight=False,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
