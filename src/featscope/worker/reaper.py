"""Recover jobs whose worker died: Huey removes a message from the queue before running it, so a
SIGKILLed (or power-cut) worker takes its job's message with it and the job would stay ``running``.

:func:`reap` finds running jobs whose heartbeat is older than the timeout (or whose worker process,
on this host, no longer exists) and puts them back on the queue -- an extraction then resumes from its
last finished shard -- or, after ``max_attempts`` runs, marks them failed with the reason. Every
worker runs it at start and then periodically; several reapers at once are safe because each change
is a conditional UPDATE on the job's current worker token and attempt count.

:func:`requeue_orphans` covers the other way a job can be lost: a ``queued`` row whose queue message is
gone (the queue file deleted, Redis restarted without persistence, a submit whose enqueue failed after
the row was written). A job seen without a message on two passes in a row gets a new one; a duplicate
message is harmless, because a run first claims its job with a conditional UPDATE.

:func:`fail_stalled` covers a worker that is alive but stuck inside a job (its heartbeat thread still
beats): a job whose progress has not moved for ``stall_timeout`` seconds is failed with the reason.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta, timezone

import huey
from sqlalchemy import select, update

from featscope.catalog import Job
from featscope.catalog.models import utcnow
from featscope.worker.jobs import append_log, enqueue
from featscope.worker.queue import WorkerOptions
from featscope.worker.tasks import host_id, worker_prefix
from featscope.workspace.context import Context

log = logging.getLogger(__name__)


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=timezone.utc))


def _dead_local_worker(token: str | None) -> bool:
    """True if ``token`` names a process on this host (not this one) that no longer exists."""
    if not token:
        return False
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != host_id() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap(ctx: Context, queue: huey.Huey, options: WorkerOptions, *, now: datetime | None = None) -> list[int]:
    """Re-queue or fail running jobs whose worker is gone; returns the ids of the jobs it changed."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=options.heartbeat_timeout)
    with ctx.session() as s:
        running = list(s.scalars(select(Job).where(Job.state == "running")))
    changed = []
    for row in running:
        beat = _aware(row.heartbeat_at) or _aware(row.started_at)
        stale = beat is None or beat < cutoff
        if stale:
            why = f"no heartbeat from worker {row.worker} for over {options.heartbeat_timeout:g} s"
        elif _dead_local_worker(row.worker):
            why = f"worker {row.worker} is no longer running"
        else:
            continue
        if _give_up_or_requeue(ctx, queue, row, options, f"worker died ({why})"):
            changed.append(row.id)
    return changed


def requeue_orphans(ctx: Context, queue: huey.Huey, seen: dict[int, str | None]) -> list[int]:
    """Enqueue again the queued jobs that had no queue message on this pass and the previous one.

    ``seen`` carries the orphans of the previous pass (job id -> task id) and is updated in place; a
    job whose task id changed in between (someone re-queued it) starts over. Returns the re-queued ids."""
    with ctx.session() as s:
        queued = {row.id: row.task_id for row in s.scalars(select(Job).where(Job.state == "queued"))}
    if not queued:
        seen.clear()
        return []
    pending = {task.id for task in queue.pending()}
    orphans = {job_id: task_id for job_id, task_id in queued.items() if task_id not in pending}
    again = [job_id for job_id, task_id in orphans.items() if job_id in seen and seen[job_id] == task_id]
    seen.clear()
    seen.update({job_id: task_id for job_id, task_id in orphans.items() if job_id not in again})
    for job_id in again:
        with ctx.session() as s:
            row = s.get(Job, job_id)
            if row is None or row.state != "queued" or row.task_id != orphans[job_id]:
                continue
            row.log = append_log(row.log, "its queue message was lost; queued again")
        log.warning("job %s: queued without a queue message; enqueued again", job_id)
        enqueue(ctx, queue, job_id)
    return again


def fail_stalled(ctx: Context, options: WorkerOptions, seen: dict[int, tuple[tuple, datetime]], *,
                 now: datetime | None = None) -> list[int]:
    """Fail running jobs whose progress has not moved for ``options.stall_timeout`` seconds.

    A worker stuck inside a job keeps its heartbeat thread alive, so :func:`reap` never sees it die. ``seen``
    (updated in place) holds, per running job, its last progress mark and since when it has not changed;
    the job is failed (cancelled when a cancel was asked) with the reason, by a conditional UPDATE, so a
    stuck worker that wakes up later cannot write over it. Returns the ids of the jobs it ended."""
    if not options.stall_timeout:
        return []
    now = now or utcnow()
    with ctx.session() as s:
        running = {row.id: row for row in s.scalars(select(Job).where(Job.state == "running"))}
    for job_id in set(seen) - set(running):
        del seen[job_id]
    ended = []
    for job_id, row in running.items():
        mark = (row.worker, row.attempts, row.progress, row.message)
        if job_id not in seen or seen[job_id][0] != mark:
            seen[job_id] = (mark, now)
            continue
        if (now - seen[job_id][1]).total_seconds() < options.stall_timeout:
            continue
        reason = (f"no progress for over {options.stall_timeout:g} s although worker {row.worker} is alive: the job "
                  f"is stuck; resubmit it (or raise FEATSCOPE_JOB_STALL_TIMEOUT if one step legitimately takes longer)")
        state = "cancelled" if row.cancel_requested else "failed"
        values = {"state": state, "message": state, "error": None if row.cancel_requested else reason,
                  "finished_at": utcnow(), "worker": None, "log": append_log(row.log, reason)}
        with ctx.session() as s:
            n = s.execute(update(Job).where(Job.id == job_id, Job.state == "running", Job.worker == row.worker,
                                            Job.attempts == row.attempts, Job.progress == row.progress)
                          .values(**values)).rowcount
        if n:
            log.warning("job %s: %s -> %s", job_id, reason, state)
            ended.append(job_id)
            del seen[job_id]
    return ended


def requeue_own(ctx: Context, queue: huey.Huey, job_id: int, options: WorkerOptions, why: str) -> bool:
    """Give back a job this process is running (consumer shutting down mid-job)."""
    with ctx.session() as s:
        row = s.get(Job, job_id)
    if row is None or row.state != "running" or not (row.worker or "").startswith(worker_prefix()):
        return False
    return _give_up_or_requeue(ctx, queue, row, options, why)


def _give_up_or_requeue(ctx: Context, queue: huey.Huey, row: Job, options: WorkerOptions, why: str) -> bool:
    owned = (Job.id == row.id, Job.state == "running", Job.worker == row.worker, Job.attempts == row.attempts)
    if row.cancel_requested:
        values = {"state": "cancelled", "message": "cancelled", "finished_at": utcnow(),
                  "log": append_log(row.log, f"{why}; it had been asked to cancel, so it is cancelled")}
    elif row.attempts >= options.max_attempts:
        reason = f"{why} on attempt {row.attempts} of {options.max_attempts}; giving up"
        values = {"state": "failed", "message": "failed", "error": reason, "finished_at": utcnow(),
                  "log": append_log(row.log, reason)}
    else:
        values = {"state": "queued", "message": f"re-queued: {why}", "heartbeat_at": None,
                  "log": append_log(row.log, f"{why}; re-queued (attempt {row.attempts} of {options.max_attempts} "
                                             f"used)")}
    with ctx.session() as s:
        n = s.execute(update(Job).where(*owned).values(worker=None, **values)).rowcount
    if not n:
        return False  # another reaper, or the worker itself, got there first
    log.warning("job %s: %s -> %s", row.id, why, values["state"])
    if values["state"] == "queued":
        enqueue(ctx, queue, row.id)
    return True


class Reaper(threading.Thread):
    """Runs :func:`reap` now and every ``options.reap_interval`` seconds until stopped."""

    def __init__(self, ctx: Context, queue: huey.Huey, options: WorkerOptions) -> None:
        super().__init__(name="featscope-reaper", daemon=True)
        self.ctx, self.queue, self.options = ctx, queue, options
        self.stop_event = threading.Event()

    def run(self) -> None:
        orphans: dict[int, str | None] = {}
        stalls: dict[int, tuple[tuple, datetime]] = {}
        while True:
            try:
                reap(self.ctx, self.queue, self.options)
                requeue_orphans(self.ctx, self.queue, orphans)
                fail_stalled(self.ctx, self.options, stalls)
            except Exception:  # noqa: BLE001 - keep reaping after a transient database or queue error
                log.warning("reaper pass failed", exc_info=True)
            if self.stop_event.wait(self.options.reap_interval):
                return
