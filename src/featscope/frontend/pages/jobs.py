"""``/jobs``: every background job with its state, progress, timings and log tail; cancel a queued or running one."""

from __future__ import annotations

import json
from typing import Any

from dash import ALL, Input, Output, State, dcc, html, no_update

from featscope.frontend.components.layout import card, empty_state, error_box, page_header
from featscope.frontend.components.progress import POLL_MS, elapsed, job_title
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, triggered_id
from featscope.worker import jobs
from featscope.worker.jobs import ACTIVE, JobInfo
from featscope.workspace import NotFound

PAGE = {"path": "/jobs", "name": "Jobs", "title": "featscope · jobs", "order": 90, "nav": True}
LIMIT = 200


def layout(job: str | None = None, **_query: Any) -> html.Div:
    chosen = int(job) if job and str(job).isdigit() else None
    return html.Div([
        page_header("Jobs", "Extractions, analyses, maps and data set scans run in background workers; this page "
                    "follows them. Click a job for its parameters, result and log."),
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Show", className="fs-label"),
                      dcc.RadioItems(id="jobs-state", value="all", inline=True, className="fs-radio", options=[
                          {"label": s, "value": s} for s in ("all", "queued", "running", "done", "failed", "cancelled")])]),
        ]),
        html.Div(className="fs-grid-2-1", children=[
            card("Jobs", html.Div(id="jobs-table", className="fs-table-wrap"), caption=f"Newest first (up to {LIMIT})."),
            card("Job", [html.Div(id="jobs-cancel-msg", className="fs-form-msg"), html.Div(id="jobs-detail")],
                 id="jobs-detail-card", actions=html.Button("Cancel job", id="jobs-cancel", disabled=True,
                                                            className="fs-button fs-button-danger fs-button-small")),
        ]),
        dcc.Store(id="jobs-chosen", data=chosen),
        dcc.Interval(id="jobs-poll", interval=POLL_MS, disabled=False),
    ])


@callback(Output("jobs-table", "children"), Output("jobs-detail", "children"), Output("jobs-cancel", "disabled"),
          Output("jobs-poll", "disabled"),
          Input("jobs-state", "value"), Input("jobs-chosen", "data"), Input("jobs-poll", "n_intervals"))
def show(svc: Services, state: str, chosen: int | None, _tick: Any):
    """The job list and the chosen job; polls while anything is queued or running."""
    listed = jobs.list_jobs(svc.ctx, state=None if state == "all" else state, limit=LIMIT)
    running = bool(jobs.list_jobs(svc.ctx, state="running", limit=1) or jobs.list_jobs(svc.ctx, state="queued", limit=1))
    if chosen is None and listed:
        chosen = listed[0].id
    detail: Any = html.Div("Choose a job on the left.", className="fs-muted")
    cancellable = False
    if chosen is not None:
        try:
            job = jobs.get_job(svc.ctx, int(chosen))
            detail, cancellable = detail_view(job), job.state in ACTIVE
        except NotFound:
            detail = error_box(f"there is no job {chosen}")
    if not listed:
        return (empty_state("No jobs", "Jobs appear when a Compare, an analysis, a map or a data set scan is queued.",
                            links=[("Overview", "/")]), detail, True, not running)
    return table(listed, chosen), detail, not cancellable, not running


def table(listed: list[JobInfo], chosen: int | None) -> html.Table:
    head = html.Thead(html.Tr([html.Th(h) for h in ("Job", "What", "State", "Progress", "Created", "Ran", "Message")]))
    rows = []
    for j in listed:
        pct = max(0.0, min(1.0, j.progress)) * 100
        rows.append(html.Tr([
            html.Td(html.Button(f"#{j.id}", id={"type": "jobs-pick", "job": j.id}, className="fs-button fs-button-ghost "
                                "fs-button-small")),
            html.Td(job_title(j)), html.Td(html.Span(j.state, className=f"fs-state fs-state-{j.state}")),
            html.Td(html.Div(html.Div(className="fs-bar-fill", style={"width": f"{pct:.0f}%"}),
                             className=f"fs-bar fs-job-{j.state}", style={"minWidth": "90px"}), title=f"{pct:.0f}%"),
            html.Td(_time(j.created_at), className="fs-muted"), html.Td(elapsed(j), className="fs-num"),
            html.Td(j.message, className="fs-job-message", title=j.message, style={"maxWidth": "260px"}),
        ], className=f"fs-job-{j.state}" + (" fs-row-selected" if j.id == chosen else "")))
    return html.Table([head, html.Tbody(rows)], className="fs-table", id="jobs-list")


def _time(t: str | None) -> str:
    return t[:19].replace("T", " ") if t else "—"


def detail_view(j: JobInfo) -> html.Div:
    facts = [("Kind", job_title(j)), ("State", html.Span(j.state, className=f"fs-state fs-state-{j.state}")),
             ("Progress", f"{100 * j.progress:.0f}% · {j.message}"), ("Created", _time(j.created_at)),
             ("Started", _time(j.started_at)), ("Finished", _time(j.finished_at)), ("Ran for", elapsed(j)),
             ("Attempts", j.attempts)]
    if j.error:
        facts.append(("Error", html.Span(j.error, className="fs-error")))
    return html.Div([
        html.H3(f"Job {j.id}", className="fs-subtitle", style={"marginTop": 0}),
        html.Dl([x for k, v in facts for x in (html.Dt(k), html.Dd(v))], className="fs-kv"),
        html.H3("Parameters", className="fs-subtitle"), html.Pre(json.dumps(j.params, indent=1), className="fs-log"),
        html.H3("Result", className="fs-subtitle"),
        html.Pre(json.dumps(j.result, indent=1, default=str) if j.result else "—", className="fs-log"),
        html.H3("Log (last lines)", className="fs-subtitle"), html.Pre(j.log_tail or "—", className="fs-log", id="jobs-log"),
    ])


@callback(Output("jobs-chosen", "data"), Input({"type": "jobs-pick", "job": ALL}, "n_clicks"),
          prevent_initial_call=True, services=False)
def pick(clicks: list) -> Any:
    """The clicked job becomes the one shown."""
    trig = triggered_id()
    if not any(clicks or []) or not isinstance(trig, dict):
        return no_update
    return trig["job"]


@callback(Output("jobs-cancel-msg", "children"), Input("jobs-cancel", "n_clicks"), State("jobs-chosen", "data"),
          prevent_initial_call=True)
def cancel(svc: Services, clicks: int | None, chosen: int | None):
    """Cancel the shown job (queued: at once; running: at its next progress update)."""
    if not clicks or chosen is None:
        return no_update
    try:
        j = jobs.cancel_job(svc.ctx, int(chosen), queue=svc.queue)
    except NotFound:
        return html.Span(f"there is no job {chosen}", className="fs-error")
    return html.Span(f"job {j.id}: {j.message}", className="fs-ok" if j.state in ("cancelled", "running") else "fs-muted")
