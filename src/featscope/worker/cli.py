"""``featscope worker`` (a Huey consumer with the reaper) and ``featscope jobs list/show/cancel``.

The functions are plain Typer commands; :mod:`featscope.cli` registers them (``jobs_app`` groups the
``jobs`` verbs). Options default from ``FEATSCOPE_*`` settings like every other command.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import Annotated, Optional

import typer

from featscope.config import Settings
from featscope.worker.queue import WorkerOptions

log = logging.getLogger("featscope.worker")

jobs_app = typer.Typer(help="List, inspect and cancel background jobs.", no_args_is_help=True)


def _settings() -> Settings:
    """Settings from the environment, with the main command's ``--data-dir`` when one was given."""
    try:
        from featscope.cli import _state  # the top-level callback records --data-dir there
    except ImportError:  # pragma: no cover - running without the main CLI
        _state = {}
    data_dir = _state.get("data_dir")
    return Settings() if data_dir is None else Settings(data_dir=data_dir)


def run_worker(settings: Settings, options: WorkerOptions | None = None, *, workers: int = 1,
               worker_type: str = "thread") -> None:
    """Consume the settings' queue until SIGINT (finish running jobs) or SIGTERM (re-queue them and stop).

    Runs in the main thread of its process (Huey installs signal handlers); the reaper runs beside it.
    """
    from huey.consumer import Consumer

    from featscope.worker.queue import make_queue
    from featscope.worker.reaper import Reaper
    from featscope.workspace.context import Context

    options = options or WorkerOptions()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if worker_type not in ("thread", "process"):
        raise ValueError(f"worker type must be 'thread' or 'process', got {worker_type!r}")
    queue = make_queue(settings, options)
    # The reaper gets its own catalog connection: process workers are forked and must not share one.
    reaper = Reaper(Context.open(settings), queue, options)
    reaper.start()
    consumer = Consumer(queue, workers=workers, worker_type=worker_type, periodic=False, initial_delay=0.05,
                        max_delay=1.0, check_worker_health=True)
    where = settings.redis_url or str(settings.data_dir / "queue.sqlite")
    log.info("featscope worker ready: %d %s worker(s) on %s", workers, worker_type, where)
    try:
        consumer.run()
    finally:
        reaper.stop_event.set()


def worker_command(
    workers: Annotated[int, typer.Option("--workers", "-w", help="Jobs run at once by this process.")] = 1,
    worker_type: Annotated[str, typer.Option(help="thread (default) or process.")] = "thread",
    heartbeat_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds without a heartbeat after which a running job's worker counts as dead "
             "[default: FEATSCOPE_JOB_HEARTBEAT_TIMEOUT or 60].")] = None,
    max_attempts: Annotated[Optional[int], typer.Option(
        help="Runs of a job (errors, dead workers) before it fails [default: FEATSCOPE_JOB_MAX_ATTEMPTS or 3].")] = None,
    stall_timeout: Annotated[Optional[float], typer.Option(
        help="Seconds a running job may go without progress before it counts as stuck and fails, 0 for no limit "
             "[default: FEATSCOPE_JOB_STALL_TIMEOUT or 3600].")] = None,
    step_delay: Annotated[float, typer.Option(hidden=True, help="Test hook: sleep at each progress update.")] = 0.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Run a worker: consume the job queue (SQLite in the data dir, or Redis with FEATSCOPE_REDIS_URL)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        changes = {k: v for k, v in (("heartbeat_timeout", heartbeat_timeout), ("max_attempts", max_attempts))
                   if v is not None}
        if stall_timeout is not None:
            changes["stall_timeout"] = stall_timeout or None
        # FEATSCOPE_JOB_* are read in one place (WorkerOptions.from_env); the flags override them
        options = dataclasses.replace(WorkerOptions.from_env(), step_delay=step_delay, **changes)
        run_worker(_settings(), options, workers=workers, worker_type=worker_type)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _context():
    from featscope.workspace.context import Context

    return Context.open(_settings())


def _print(jobs: list, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([dataclasses.asdict(j) for j in jobs], indent=2) + "\n")
        return
    if not jobs:
        typer.echo("no jobs")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="jobs")
    for c in ("id", "kind", "state", "progress", "attempts", "created", "message"):
        table.add_column(c)
    for j in jobs:
        table.add_row(str(j.id), j.kind, j.state, f"{j.progress:.0%}", str(j.attempts), (j.created_at or "")[:19],
                      j.error or j.message)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _guard(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, LookupError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@jobs_app.command("list")
def jobs_list(
    state: Annotated[Optional[str], typer.Option(help="queued, running, done, failed or cancelled.")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List jobs, newest first."""
    from featscope.worker.jobs import list_jobs

    _print(_guard(list_jobs, _context(), state=state, limit=limit, offset=offset), as_json)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[int, typer.Argument(help="Job id (from `featscope jobs list`).")],
              as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """A job's state, progress, result, error and the tail of its log."""
    from featscope.worker.jobs import get_job

    job = _guard(get_job, _context(), job_id)
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(job), indent=2) + "\n")
        return
    for name in ("id", "kind", "state", "progress", "message", "error", "attempts", "created_at", "started_at",
                 "finished_at", "params", "result"):
        typer.echo(f"{name:>12}: {getattr(job, name)}")
    if job.log_tail:
        typer.echo("\n" + job.log_tail)


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(help="Job id (from `featscope jobs list`).")]) -> None:
    """Cancel a job: a queued one at once, a running one at its next progress update."""
    from featscope.worker.jobs import cancel_job

    job = _guard(cancel_job, _context(), job_id)
    typer.echo(f"job {job.id}: {job.state} ({job.message})")
