"""``featscope serve``: the REST API with an embedded job worker."""

from __future__ import annotations

import typer

from featscope.cli.common import _state, app

@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", help="Bind address; anything but loopback needs FEATSCOPE_TOKEN."),
          port: int = typer.Option(8050, help="Port."),
          embedded_worker: bool = typer.Option(True, "--embedded-worker/--no-embedded-worker",
                                               help="Also start one job-worker process (off when workers run apart)."),
          workers: int = typer.Option(1, help="Jobs the embedded worker runs at once."),
          log_level: str = typer.Option("info", help="uvicorn log level.")) -> None:
    """Serve the REST API (OpenAPI docs at /docs) with uvicorn, plus a job worker."""
    from featscope.server.cli import serve_command
    from featscope.server.settings import ServerSettings

    data_dir = _state.get("data_dir")
    settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
    serve_command(host, port, embedded_worker, workers, log_level, settings=settings)
