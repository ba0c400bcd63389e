"""Jobs: list, state with progress and log tail, cancel."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from fastapi import APIRouter, Path

from featscope.server.api.schemas import Id, JobOut, Page
from featscope.server.deps import Limit, Offset, QueueDep, WorkspaceDep
from featscope.worker import jobs
from featscope.worker.jobs import JobInfo

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_out(info: JobInfo) -> JobOut:
    return JobOut(**dataclasses.asdict(info))


@router.get("", response_model=Page[JobOut])
def list_jobs(ws: WorkspaceDep, limit: Limit = 50, offset: Offset = 0,
              state: Literal["queued", "running", "done", "failed", "cancelled"] | None = None) -> Page[JobOut]:
    """Jobs, newest first, optionally in one state."""
    from sqlalchemy import func, select

    from featscope.catalog import Job

    items = [job_out(j) for j in jobs.list_jobs(ws.ctx, state=state, limit=limit, offset=offset)]
    with ws.ctx.session() as s:
        q = select(func.count(Job.id))
        total = s.scalar(q.where(Job.state == state) if state else q) or 0
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut)
def get_job(ws: WorkspaceDep, job_id: Annotated[Id, Path()]) -> JobOut:
    """A job's state, progress, result and log tail."""
    return job_out(jobs.get_job(ws.ctx, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel(ws: WorkspaceDep, queue: QueueDep, job_id: Annotated[Id, Path()]) -> JobOut:
    """Cancel a job (a queued one at once, a running one at its next progress update)."""
    return job_out(jobs.cancel_job(ws.ctx, job_id, queue=queue))
