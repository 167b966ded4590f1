"""``engine serve-model MODEL_DIR``: serve a trained model over HTTP (see engine.ml.serve)."""

from __future__ import annotations

from pathlib import Path

import typer

from engine.cli.common import console, guarded


def register(app: typer.Typer) -> None:
    @app.command("serve-model")
    @guarded
    def serve_model(
        model_dir: Path = typer.Argument(..., help="A model version folder under results/models/."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8765, "--port", help="Port (0: any free port)."),
        delay_ms: float = typer.Option(
            0.0,
            "--delay-ms",
            help="Add this latency to every /predict (fault injection for tests).",
        ),
    ) -> None:
        """Serve a trained model: POST /predict, POST /retrain, GET /health, GET /metrics."""
        import signal

        from engine.errors import UsageError
        from engine.ml.serve import ModelService, make_server

        if not 0 <= port <= 65535:
            raise UsageError(f"--port: must be in 0..65535, got {port}")
        if delay_ms < 0:
            raise UsageError(f"--delay-ms: must be >= 0, got {delay_ms}")
        service = ModelService(model_dir, delay_s=delay_ms / 1000)
        try:
            server = make_server(service, host=host, port=port)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc}", hint="pick another --port"
            ) from None

        def stop(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        h, p = server.server_address[:2]
        h = h.decode() if isinstance(h, bytes) else h  # AF_UNIX servers give bytes; ours is TCP
        console.print(
            f"serving {service.version} ({service.kind}) on http://{h}:{p}", highlight=False
        )
        try:
            server.serve_forever(poll_interval=0.1)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
