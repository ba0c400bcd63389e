"""Jobs: rows in the catalog that a worker runs, with state, progress, log and result.

The request side (server, CLI) calls :func:`submit`, :func:`get_job`, :func:`list_jobs` and
:func:`cancel_job`; none of them runs slow work. States: ``queued`` -> ``running`` -> ``done`` |
``failed`` | ``cancelled`` (and ``running`` -> ``queued`` again when a run is retried or its worker died).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import huey
from sqlalchemy import delete, select, update

from featscope.cache.store import content_key
from featscope.catalog import Job
from featscope.catalog.models import utcnow
from featscope.worker.kinds import get_kind
from featscope.workspace.context import Context

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
LOG_TAIL_LINES = 40
LOG_KEEP_LINES = 1000


@dataclass(frozen=True)
class JobInfo:
    id: int
    kind: str
    state: str
    progress: float
    message: str
    error: str | None
    result: dict[str, Any]
    params: dict[str, Any]
    attempts: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    log_tail: str
    parent_id: int | None = None  # set on a shard of a larger job (one range of a split extraction)

    @classmethod
    def of(cls, row: Job) -> "JobInfo":
        return cls(row.id, row.kind, row.state, float(row.progress or 0.0), row.message or "", row.error,
                   dict(row.result or {}), dict(row.params or {}), int(row.attempts or 0), iso(row.created_at),
                   iso(row.started_at), iso(row.finished_at), tail(row.log or "", LOG_TAIL_LINES), row.parent_id)


def iso(t: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands datetimes back without their zone, and featscope stores only UTC."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()


def tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def log_line(line: str) -> str:
    return f"{utcnow().strftime('%Y-%m-%d %H:%M:%S')} {line.rstrip()}"


def append_log(log: str | None, *lines: str) -> str:
    return tail("\n".join([*(log or "").splitlines(), *(log_line(x) for x in lines)]), LOG_KEEP_LINES)


def job_key(kind: str, params: dict[str, Any]) -> str:
    return content_key({"kind": kind, "params": params})


def submit(ctx: Context, kind: str, params: dict, *, queue: huey.Huey | None = None,
           parent: int | None = None) -> JobInfo:
    """Queue ``kind`` with ``params``; the same request while an equal one is queued or running returns that job.

    Parameters are checked and completed with their defaults here (``ValueError`` says what to fix), so
    equal requests spelt differently are recognised as equal. ``parent``: the job this one is a shard of.
    """
    params = get_kind(kind).normalize(dict(params or {}))
    key = job_key(kind, params)
    existing = _active_with_key(ctx, key)
    if existing is not None:
        return JobInfo.of(existing)
    with ctx.session() as s:
        row = Job(kind=kind, key=key, params=params, state="queued", message="queued", parent_id=parent,
                  log=append_log("", f"submitted {kind}" + (f" as a shard of job {parent}" if parent else "")))
        s.add(row)
        s.flush()
        job_id = row.id
    # Two submits racing past the check above both insert; the oldest active row wins, the other is withdrawn.
    winner = _active_with_key(ctx, key)
    if winner is not None and winner.id != job_id:
        with ctx.session() as s:
            s.execute(delete(Job).where(Job.id == job_id, Job.state == "queued"))
        return JobInfo.of(winner)
    enqueue(ctx, queue or _default_queue(ctx), job_id)
    return get_job(ctx, job_id)


def enqueue(ctx: Context, queue: huey.Huey, job_id: int) -> None:
    """Put a queue message for ``job_id`` (the message holds the id only)."""
    task = queue.featscope_run_job.s(int(job_id))
    with ctx.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(task_id=task.id))
    queue.enqueue(task)


def _active_with_key(ctx: Context, key: str) -> Job | None:
    with ctx.session() as s:
        return s.scalars(select(Job).where(Job.key == key, Job.state.in_(ACTIVE)).order_by(Job.id)).first()


def _default_queue(ctx: Context) -> huey.Huey:
    from featscope.worker.queue import make_queue

    return make_queue(ctx.settings)


def _row(ctx: Context, job_id: int) -> Job:
    return ctx.get_row(Job, job_id, f"no job {job_id}; `featscope jobs list` (GET /api/v1/jobs) shows the jobs")


def get_job(ctx: Context, job_id: int) -> JobInfo:
    """A job's state, progress, result and log tail."""
    return JobInfo.of(_row(ctx, job_id))


def list_jobs(ctx: Context, *, state: str | None = None, limit: int = 50, offset: int = 0) -> list[JobInfo]:
    """Jobs, newest first, optionally in one state."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be 0 or more, got {offset}")
    with ctx.session() as s:
        q = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
        if state is not None:
            q = q.where(Job.state == state)
        return [JobInfo.of(r) for r in s.scalars(q)]


def cancel_job(ctx: Context, job_id: int, *, queue: huey.Huey | None = None) -> JobInfo:
    """Cancel a job: a queued one at once; a running one when its task next reports progress.

    Finished jobs are returned unchanged.
    """
    row = _row(ctx, job_id)
    if row.state == "queued":
        with ctx.session() as s:
            done = s.execute(update(Job).where(Job.id == row.id, Job.state == "queued").values(
                state="cancelled", cancel_requested=True, message="cancelled before it started",
                finished_at=utcnow(), log=append_log(row.log, "cancelled before it started"))).rowcount
        if done and row.task_id:
            # The worker also skips any job that is no longer queued; revoking just drops the message early.
            (queue or _default_queue(ctx)).revoke_by_id(row.task_id, revoke_once=True)
        if done:
            return get_job(ctx, row.id)
        row = _row(ctx, job_id)  # it started meanwhile
    if row.state == "running":
        with ctx.session() as s:
            s.execute(update(Job).where(Job.id == row.id, Job.state == "running").values(
                cancel_requested=True, message="cancel requested; stopping at the next progress update"))
    return get_job(ctx, row.id)
