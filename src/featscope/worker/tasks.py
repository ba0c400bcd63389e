"""The Huey task ``run_job(job_id)``: claim a queued job, run its kind, record progress, result or error.

Ownership: a run claims the job with one conditional UPDATE (``queued`` -> ``running``, a fresh
worker token ``host:pid:nonce``), so a duplicate queue message or a second worker can never run the
same job at once. Every later write is conditioned on that token; if the reaper has given the job
to another worker (this one looked dead), this run notices at its next heartbeat and stops quietly.
A heartbeat thread refreshes ``heartbeat_at`` while the job runs, whatever the job is doing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import huey
from huey.signals import SIGNAL_INTERRUPTED
from sqlalchemy import case, select, update

from featscope.catalog import Job
from featscope.catalog.models import utcnow
from featscope.config import Settings
from featscope.worker.jobs import append_log, enqueue
from featscope.worker.kinds import get_kind
from featscope.worker.queue import WorkerOptions
from featscope.workspace.context import Context

log = logging.getLogger(__name__)

TASK_NAME = "featscope.run_job"
# Errors in the request itself (bad names, parameters, files): retrying cannot help.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, TypeError, FileNotFoundError, PermissionError)


class JobCancelled(Exception):
    """Raised inside a run at a progress update after ``cancel_job``."""


class OwnershipLost(Exception):
    """Raised inside a run whose job was re-queued by the reaper (this worker looked dead)."""


def host_id() -> str:
    """This host, and its PID namespace where there is one: containers sharing a host name stay apart."""
    try:
        return f"{socket.gethostname()}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def worker_prefix() -> str:
    """``host:pid:`` of this process; a run's worker token is this plus a nonce."""
    return f"{host_id()}:{os.getpid()}:"


def register_tasks(queue: huey.Huey, settings: Settings, options: WorkerOptions) -> None:
    """Register ``run_job`` on ``queue`` (as ``queue.featscope_run_job``); the task opens the catalog once per process."""
    opened: dict[str, Context] = {}
    lock = threading.Lock()

    def context() -> Context:
        with lock:
            if "ctx" not in opened:
                opened["ctx"] = Context.open(settings)
            return opened["ctx"]

    @queue.task(name=TASK_NAME)
    def run_job(job_id: int) -> None:
        execute_job(context(), queue, int(job_id), options)

    @queue.signal(SIGNAL_INTERRUPTED)
    def _interrupted(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:
        """The consumer is shutting down mid-job (SIGTERM): give the job back to the queue now."""
        if getattr(task, "name", None) == TASK_NAME and task.args:
            from featscope.worker.reaper import requeue_own

            requeue_own(context(), queue, int(task.args[0]), options, "the worker was stopped")

    queue.featscope_run_job = run_job
    queue.featscope_options = options
    queue.featscope_settings = settings
    queue.featscope_context = context


def execute_job(ctx: Context, queue: huey.Huey, job_id: int, options: WorkerOptions,
                relay: Callable[[float, str], None] | None = None) -> None:
    """Run one job to ``done``, ``failed``, ``cancelled`` or back to ``queued`` (retry); never raises.

    ``relay(fraction, message)`` also receives the job's progress: a job running a shard of its own in its
    thread (a split extraction) passes it on as its own progress. Whatever ``relay`` raises is ignored."""
    token = worker_prefix() + uuid.uuid4().hex[:8]
    now = utcnow()
    with ctx.session() as s:
        claimed = s.execute(update(Job).where(Job.id == job_id, Job.state == "queued",
                                              Job.cancel_requested.is_(False)).values(
            state="running", worker=token, attempts=Job.attempts + 1, started_at=now, heartbeat_at=now,
            finished_at=None, error=None, message="started")).rowcount
        row = s.get(Job, job_id) if claimed else None
    if not claimed:
        log.info("job %s is not queued (missing, cancelled, or another worker has it); skipping", job_id)
        return
    run = _Run(ctx, row, token, options, relay)
    run.log(f"attempt {row.attempts} of {options.max_attempts} started on {token}")
    beat = threading.Thread(target=run.heartbeat_loop, name=f"featscope-heartbeat-{job_id}", daemon=True)
    beat.start()
    try:
        result = get_kind(row.kind).run(ctx, dict(row.params), run)
        run.flush()
        run.finish("done", message="done", result=result)
    except OwnershipLost:
        log.warning("job %s was taken over by another worker; this run stops", job_id)
    except JobCancelled:
        run.finish("cancelled", message="cancelled", line="cancelled while running")
    except USER_ERRORS as e:
        run.finish("failed", message="failed", error=_reason(e), line=f"failed: {_reason(e)}")
    except Exception as e:  # noqa: BLE001 - anything else may be transient (out of memory, a lost mount)
        log.exception("job %s failed on attempt %s", job_id, row.attempts)
        run.log(traceback.format_exc().rstrip())
        with ctx.session() as s:
            cancel = bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
        if cancel:  # a retry would never be claimed (cancel requested) and the job would sit queued
            run.finish("cancelled", message="cancelled", line=f"cancelled after an error: {_reason(e)}")
        elif row.attempts < options.max_attempts:
            if run.finish("queued", message=f"attempt {row.attempts} failed ({_reason(e)}); retrying",
                          line=f"retrying after: {_reason(e)}"):
                enqueue(ctx, queue, job_id)
        else:
            reason = f"failed after {row.attempts} attempt(s): {_reason(e)}"
            run.finish("failed", message="failed", error=reason, line=reason)
    finally:
        run.stopped.set()
        beat.join(timeout=5)


def _reason(e: BaseException) -> str:
    text = str(e.args[0]) if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return f"{type(e).__name__}: {text}" if not isinstance(e, (ValueError, LookupError)) else text


class _Run:
    """One claimed run: throttled progress and log writes, heartbeats, cancel and ownership checks."""

    def __init__(self, ctx: Context, row: Job, token: str, options: WorkerOptions,
                 relay: Callable[[float, str], None] | None = None) -> None:
        self.ctx, self.job_id, self.token, self.options, self.relay = ctx, row.id, token, options, relay
        self.stopped = threading.Event()
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._progress: tuple[float, str] | None = None
        self._last_write = 0.0

    # -- Report protocol (called from the job's thread)
    def progress(self, fraction: float, message: str | None = None) -> None:
        with self._lock:
            self._progress = (min(max(float(fraction), 0.0), 1.0), message or "")
        if time.monotonic() - self._last_write >= self.options.progress_interval:
            self.flush()
        if self.relay is not None:
            try:
                self.relay(min(max(float(fraction), 0.0), 1.0), message or "")
            except Exception:  # noqa: BLE001 - the relay's owner checks its own state after this run
                log.debug("progress relay of job %s raised", self.job_id, exc_info=True)
        if self.options.step_delay:
            time.sleep(self.options.step_delay)
        self.check()

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        with self._lock:
            self._lines.append(line)
        if time.monotonic() - self._last_write >= self.options.progress_interval:
            self.flush()

    def check(self) -> None:
        if self.lost.is_set():
            raise OwnershipLost()
        if self.cancelled.is_set():
            raise JobCancelled()

    # -- writes
    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            progress, self._progress = self._progress, None
        self._last_write = time.monotonic()
        if not lines and progress is None:
            return
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"], message = progress
            # Once the user asked to cancel, keep saying so until the run stops: the task's own message
            # ("step 9") must not hide that the cancel was heard.
            values["message"] = case((Job.cancel_requested.is_(True), Job.message), else_=message)
        self._write(values, lines)

    def finish(self, state: str, *, message: str, result: dict | None = None, error: str | None = None,
               line: str | None = None) -> bool:
        """Leave the running state; False if this run no longer owns the job."""
        values: dict[str, Any] = {"state": state, "message": message, "error": error, "worker": None}
        if state == "queued":
            values["heartbeat_at"] = None
        else:
            values["finished_at"] = utcnow()
        if state == "done":
            values.update(progress=1.0, result=result or {})
        with self._lock:
            lines, self._lines = self._lines, []
        return self._write(values, [*lines, line or state])

    def _write(self, values: dict[str, Any], lines: list[str]) -> bool:
        owned = (Job.id == self.job_id, Job.worker == self.token, Job.state == "running")
        with self.ctx.session() as s:
            if lines:
                current = s.scalars(select(Job.log).where(*owned)).first()
                values = {**values, "log": append_log(current, *lines)}
            n = s.execute(update(Job).where(*owned).values(**values)).rowcount
        if not n:
            self.lost.set()
        return bool(n)

    def heartbeat_loop(self) -> None:
        """Refresh the heartbeat and read the cancel flag until the run ends."""
        while not self.stopped.wait(self.options.heartbeat_interval):
            try:
                with self.ctx.session() as s:
                    n = s.execute(update(Job).where(Job.id == self.job_id, Job.worker == self.token,
                                                    Job.state == "running").values(heartbeat_at=utcnow())).rowcount
                    flag = s.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
            except Exception:  # noqa: BLE001 - a busy database must not kill the job; the next beat retries
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                continue
            if not n and not self.stopped.is_set():
                self.lost.set()
            if flag:
                self.cancelled.set()
