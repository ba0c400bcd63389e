"""What the pages' callbacks act on, and the one way a page gets slow work done.

:class:`Services` is the API app's state (its workspace, settings and job queue): the dashboard and the REST
routes share them, so a page and ``curl`` see the same catalog and submit to the same queue.

A page never computes: :func:`fetch` answers each analysis it needs from the cache (the REST routes'
``cached_only=True`` call) or submits the job that computes it (``worker.jobs.submit``, which returns the
running job for an equal request). The page keeps ``tracked`` (request key -> job id) in a ``dcc.Store`` and
calls :func:`fetch` again on each ``dcc.Interval`` tick until nothing runs; a failed job is reported, never
resubmitted behind the user's back. :func:`map_job` does the same for activation and mask-out maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from featscope.catalog import Job
from featscope.server.settings import ServerSettings
from featscope.worker import jobs
from featscope.worker.jobs import JobInfo
from featscope.worker.kinds import get_kind
from featscope.workspace import NotFound, Workspace
from featscope.workspace.analyses import AnalysisResult, NotCached
from featscope.workspace.context import Context


@dataclass(frozen=True)
class Services:
    """The FastAPI app's ``state``: ``workspace``, ``settings`` and the lazily opened job ``queue``."""

    state: Any

    @property
    def ws(self) -> Workspace:
        return self.state.workspace

    @property
    def ctx(self) -> Context:
        return self.state.workspace.ctx

    @property
    def settings(self) -> ServerSettings:
        return self.state.settings

    @property
    def queue(self):
        """The same queue object the REST routes use (``server.deps.get_queue``), opened on first use."""
        if self.state.queue is None:
            from featscope.worker.queue import make_queue

            self.state.queue = make_queue(self.state.settings)
        return self.state.queue

    def submit(self, kind: str, params: dict[str, Any]) -> JobInfo:
        return jobs.submit(self.ctx, kind, params, queue=self.queue)


def check_extract(ctx: Context, backbone: str, dataset: str, taps: list[str]) -> None:
    """What ``POST /embedding-sets/extract`` checks before queueing: the backbone, the data set and the taps
    exist (:class:`NotFound` / ``ValueError`` now, not a failed job later)."""
    from featscope.workspace.backbones import get_backbone_row, tap_choices
    from featscope.workspace.datasets import get_dataset

    row = get_backbone_row(ctx, backbone)
    get_dataset(ctx, dataset)
    names, aliases = tap_choices(row)  # as recorded at registration
    unknown = [t for t in taps if t not in names and t not in aliases]
    if unknown:
        raise ValueError(f"backbone {row.name!r} has no tap {unknown[0]!r}; it offers {', '.join(names)} "
                         f"and the aliases {', '.join(aliases)}")


@dataclass(frozen=True)
class Need:
    """One analysis a page shows: ``kind`` with ``inputs`` and ``params`` exactly as its REST request."""

    name: str
    kind: str
    inputs: list[Any]
    params: dict[str, Any] = field(default_factory=dict)

    def job_params(self) -> dict[str, Any]:
        return {"analysis": self.kind, "inputs": list(self.inputs), "params": dict(self.params)}


@dataclass
class Outcome:
    """What :func:`fetch` found: results by need name, jobs still running (or failed), request errors."""

    results: dict[str, AnalysisResult] = field(default_factory=dict)
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    tracked: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether any job is queued or running (the page keeps polling)."""
        return any(j.state in jobs.ACTIVE for j in self.jobs.values())

    @property
    def failed(self) -> dict[str, JobInfo]:
        return {n: j for n, j in self.jobs.items() if j.state not in jobs.ACTIVE}


def request_key(kind: str, params: dict[str, Any]) -> str:
    """The job's content key for a request (equal requests spelt differently share it)."""
    return jobs.job_key(kind, get_kind(kind).normalize(dict(params)))


def cached_analysis(svc: Services, need: Need) -> AnalysisResult:
    """The cached result of ``need`` (the REST route's call); :class:`NotCached` if it is not computed."""
    from featscope.server.api.routes.analyses import ANALYSES

    _, fn, args, _ = ANALYSES[need.kind]
    return fn(svc.ctx, *args(list(need.inputs)), cached_only=True, **need.params)


def fetch(svc: Services, needs: list[Need], tracked: dict[str, int] | None, *, submit: bool = True) -> Outcome:
    """Each need's cached result, or its job (submitted now unless ``submit`` is False or it already failed)."""
    out = Outcome(tracked=dict(tracked or {}))
    for need in needs:
        try:
            out.results[need.name] = cached_analysis(svc, need)
            continue
        except NotCached:
            pass
        except (ValueError, NotFound) as e:
            out.errors[need.name] = str(e.args[0]) if e.args else str(e)
            continue
        try:
            job = _tracked_or_submitted(svc, "analysis", need.job_params(), out.tracked, submit)
        except ValueError as e:
            out.errors[need.name] = str(e)
            continue
        if job is None:
            continue
        if job.state != "done":
            out.jobs[need.name] = job
            continue
        try:  # it finished between the cache check and now
            out.results[need.name] = cached_analysis(svc, need)
        except NotCached:
            out.errors[need.name] = (f"job {job.id} finished but its result is no longer in the cache; "
                                     f"press Retry to compute it again")
            out.tracked.pop(request_key("analysis", need.job_params()), None)
    return out


def _tracked_or_submitted(svc: Services, kind: str, params: dict[str, Any], tracked: dict[str, int],
                          submit: bool) -> JobInfo | None:
    key = request_key(kind, params)
    job_id = tracked.get(key)
    if job_id is not None:
        try:
            job = jobs.get_job(svc.ctx, job_id)
        except NotFound:
            job = None
        if job is not None:
            return job
    if not submit:
        return None
    job = svc.submit(kind, params)
    tracked[key] = job.id
    return job


def map_job(svc: Services, kind: str, params: dict[str, Any], tracked: dict[str, int], *,
            submit: bool = True) -> JobInfo | None:
    """A finished ``kind`` (heatmap / maskout) job with the same parameters whose map is still stored
    (shown at once), else the tracked or a newly submitted job."""
    key = request_key(kind, params)
    with svc.ctx.session() as s:
        done = list(s.scalars(select(Job).where(Job.key == key, Job.state == "done").order_by(Job.id.desc())
                              .limit(5)))
    for row in done:
        art = (row.result or {}).get("artifact_key")
        if art and svc.ctx.store.has("map", art):
            tracked[key] = row.id
            return JobInfo.of(row)
    job = _tracked_or_submitted(svc, kind, params, tracked, submit)
    if job is not None and job.state == "done" and not svc.ctx.store.has("map", job.result.get("artifact_key", "")):
        return svc.submit(kind, params) if submit else None  # its map was deleted since: make it again
    return job


def forget_failed(tracked: dict[str, int], svc: Services) -> dict[str, int]:
    """``tracked`` without failed or cancelled jobs (what "retry" does: their requests are submitted again)."""
    keep = {}
    for key, job_id in (tracked or {}).items():
        try:
            state = jobs.get_job(svc.ctx, job_id).state
        except NotFound:
            continue
        if state not in ("failed", "cancelled"):
            keep[key] = job_id
    return keep
