"""Job progress on a page: the store of tracked jobs, the poll interval (off when nothing runs), the bars.

A page's main callback takes ``Input(f"{prefix}-poll", "n_intervals")`` and the retry buttons
(``retry_input(prefix)``), keeps ``State(f"{prefix}-tracked", "data")``, calls
:func:`featscope.frontend.services.fetch` and returns :func:`progress_view` and ``poll_disabled``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from dash import ALL, Input, dcc, html

from featscope.frontend.services import Need, Outcome, Services, fetch, forget_failed
from featscope.frontend.wiring import triggered_id
from featscope.worker.jobs import JobInfo

POLL_MS = 800


def job_area(prefix: str) -> html.Div:
    return html.Div([dcc.Store(id=f"{prefix}-tracked", data={}),
                     dcc.Interval(id=f"{prefix}-poll", interval=POLL_MS, disabled=True),
                     html.Div(id=f"{prefix}-progress", className="fs-progress-area", **{"aria-live": "polite"})])


def retry_input(prefix: str) -> Input:
    return Input({"type": "fs-retry", "page": prefix, "job": ALL}, "n_clicks")


def retried(clicks: list | None) -> bool:
    return any(clicks or [])


def progress_view(prefix: str, jobs: dict[str, JobInfo], labels: dict[str, str] | None = None,
                  errors: dict[str, str] | None = None) -> list:
    """A row per job (a bar while it runs, the error and a Retry button when it failed) and per request error."""
    rows: list[Any] = [job_row(prefix, j, (labels or {}).get(name, name)) for name, j in jobs.items()]
    rows += [html.Div([html.Span((labels or {}).get(n, n), className="fs-job-label"),
                       html.Span("cannot run", className="fs-state fs-state-failed"),
                       html.Div(msg, className="fs-job-error")], className="fs-job-row")
             for n, msg in (errors or {}).items()]
    return rows


def job_row(prefix: str, job: JobInfo, label: str, *, retry: bool = True) -> html.Div:
    pct = max(0.0, min(1.0, job.progress)) * 100
    parts: list[Any] = [
        html.Span(label, className="fs-job-label"),
        html.Span(job.state, className=f"fs-state fs-state-{job.state}"),
        html.Div(html.Div(className="fs-bar-fill", style={"width": f"{pct:.0f}%"}), className="fs-bar",
                 role="progressbar", **{"aria-valuenow": f"{pct:.0f}", "aria-valuemin": "0", "aria-valuemax": "100"}),
        html.Span(f"{pct:.0f}%", className="fs-job-pct"),
        html.Span(job.message, className="fs-job-message", title=job.message),
        dcc.Link(f"job {job.id}", href=f"/jobs?job={job.id}", className="fs-job-link"),
    ]
    if job.state in ("failed", "cancelled"):
        parts.append(html.Div(job.error or job.message, className="fs-job-error"))
    if job.state in ("failed", "cancelled") and retry:
        parts.append(html.Button("Retry", id={"type": "fs-retry", "page": prefix, "job": job.id},
                                 className="fs-button fs-button-small"))
    return html.Div(parts, className=f"fs-job-row fs-job-{job.state}")


def job_title(job: JobInfo) -> str:
    """What a job does, in a few words (``analysis: comembership [3, 7]``, ``extract: det on coco``)."""
    p = job.params
    if job.kind == "analysis":
        return f"{p.get('analysis')} {p.get('inputs')}"
    if job.kind == "extract":
        return f"extract {p.get('backbone')} on {p.get('dataset')}"
    if job.kind in ("heatmap", "maskout"):
        what = f"image {p['image_id']}" if p.get("image_id") else "an upload"
        return f"{job.kind} {p.get('backbone')}, {what}"
    if job.kind == "dataset-add":
        return f"scan {str(p.get('path', '')).rsplit('/', 1)[-1]}"
    if job.kind == "dataset-synth":
        return f"generate {p.get('name', 'synth')}"
    return job.kind


def elapsed(job: JobInfo) -> str:
    """Run time so far (running) or in total (finished), as ``1m 05s``."""
    start = _parse(job.started_at)
    if start is None:
        return "—"
    end = _parse(job.finished_at) or datetime.now(timezone.utc)
    s = max(0, int((end - start).total_seconds()))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _parse(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t) if t else None


def resolve(svc: Services, prefix: str, needs: list[Need], tracked: dict | None, labels: dict[str, str] | None = None,
            *, submit: bool = True) -> tuple[Outcome, list, bool]:
    """A page's analyses: cached results or jobs (a Retry click forgets the failed ones first).
    Returns the outcome, the progress rows and the poll interval's ``disabled``."""
    if _retry_clicked(prefix):
        tracked = forget_failed(tracked or {}, svc)
    out = fetch(svc, needs, tracked, submit=submit)
    return out, progress_view(prefix, out.jobs, labels, out.errors), not out.active


def retried_now(prefix: str) -> bool:
    """Whether this callback run was started by one of ``prefix``'s Retry buttons."""
    return _retry_clicked(prefix)


def _retry_clicked(prefix: str) -> bool:
    trig = triggered_id()
    return isinstance(trig, dict) and trig.get("type") == "fs-retry" and trig.get("page") == prefix
