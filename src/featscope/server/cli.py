"""``featscope serve``: uvicorn on loopback by default, a token required anywhere else, one embedded worker."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from featscope.server.security import require_token_for
from featscope.server.settings import ServerSettings

log = logging.getLogger(__name__)


def serve_command(host: str = "127.0.0.1", port: int = 8050, embedded_worker: bool = True, workers: int = 1,
                  log_level: str = "info", settings: ServerSettings | None = None) -> None:
    """Serve the API (docs at /docs) with uvicorn; start one job worker process unless told not to.

    Refuses (exit status 2, message on stderr) to bind anything but loopback without FEATSCOPE_TOKEN.
    """
    import uvicorn

    from featscope.server.app import create_app

    settings = settings or ServerSettings()
    try:
        require_token_for(host, settings.token)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    worker = start_embedded_worker(settings, workers) if embedded_worker else None
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, workers=1)
    finally:
        if worker is not None:
            worker.terminate()  # SIGTERM: the consumer hands a running job back to the queue
            worker.join(timeout=30)


def start_embedded_worker(settings: ServerSettings, workers: int = 1) -> multiprocessing.Process:
    """A separate process consuming the job queue (the request threads never run slow work)."""
    proc = multiprocessing.get_context("spawn").Process(
        target=run_worker, args=(settings.model_dump(mode="json"), workers, os.getpid()), name="featscope-worker",
        daemon=False)  # not a daemon: extraction's DataLoader starts processes of its own
    proc.start()
    log.info("embedded job worker started (pid %s)", proc.pid)
    return proc


def run_worker(settings_dump: dict[str, Any], workers: int = 1, parent_pid: int | None = None) -> None:
    """The embedded worker: ``featscope worker``'s consumer and reaper, stopped when the server process is gone."""
    from featscope.worker.cli import run_worker as consume
    from featscope.worker.queue import WorkerOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    consume(ServerSettings(**settings_dump), WorkerOptions.from_env(), workers=workers)


def _exit_with_parent(parent_pid: int) -> None:
    """SIGTERM this worker once the server that started it has died (so it is never orphaned)."""
    while os.getppid() == parent_pid:
        time.sleep(2.0)
    os.kill(os.getpid(), signal.SIGTERM)
