"""``/study``: each of the study's findings beside the demo's measured counterpart, with a computed verdict, and
the progress of the demo pipeline (``make demo``) while it runs.

The page reads the demo's manifest (``<data dir>/demo.json``) and the cached results it names; the verdicts
come from :mod:`featscope.analysis.findings` (never written here). Nothing is computed in the page.
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, dcc, html

from featscope.demo.pipeline import read_manifest
from featscope.demo.study import study_findings
from featscope.frontend.components.layout import card, empty_state, page_header, stat
from featscope.frontend.components.progress import job_row
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback
from featscope.worker import jobs
from featscope.workspace import NotFound

PAGE = {"path": "/study", "name": "Study", "title": "featscope · the study, reproduced", "order": 5, "nav": True}
POLL_MS = 4000
VERDICT_CLASS = {"reproduced": "fs-verdict-yes", "not reproduced": "fs-verdict-no", "not measured": "fs-verdict-none"}


def layout(**_query: Any) -> html.Div:
    return html.Div([
        page_header("The study, reproduced", "Each finding of Li et al. (2019), An Analysis of Pre-Training on "
                    "Object Detection, beside the same measurement on featscope's own classification- and "
                    "detection-pretrained backbones (A = classification, B = detection: the classifier trained "
                    "further as a detector on the same images, as the study's detectors are). The verdict is computed from the numbers by the rule shown under each one.",
                    figure="Figs. 1-8 · Tables 1-8"),
        html.Div(id="study-summary", className="fs-stats"),
        card("Findings", html.Div(id="study-findings", className="fs-table-wrap"),
             caption="Study: the paper's own numbers (ResNet-101 on ImageNet / OpenImages / VOC). Demo: this "
                     "data dir's runs on the synthetic study sets."),
        card("Demo pipeline", html.Div(id="study-pipeline"),
             caption="Stages of `make demo`, each a set of worker jobs; the page follows them while they run."),
        dcc.Interval(id="study-poll", interval=POLL_MS, disabled=False),
    ])


@callback(Output("study-summary", "children"), Output("study-findings", "children"),
          Output("study-pipeline", "children"), Output("study-poll", "disabled"), Input("study-poll", "n_intervals"))
def show(svc: Services, _tick: Any):
    """The findings table, the pipeline's stages, and whether to keep polling (while the demo runs)."""
    manifest = read_manifest(svc.settings.data_dir)
    if not manifest:
        return ([], empty_state(
            "No demo in this data dir yet",
            "The study page shows the findings of `make demo`: it generates the study's synthetic sets, trains a "
            "classifier, then a detector from it on the same images, and runs every analysis as worker jobs. "
            "Run it (or point FEATSCOPE_DATA_DIR at the demo's data dir), then come back.",
            commands=["make demo", "featscope demo --profile cpu      # the same, from an installed featscope"],
            links=[("Overview", "/"), ("Jobs", "/jobs")]), [], True)
    findings = study_findings(svc.ws, manifest)
    running = manifest.get("state") == "running"
    return summary(findings, manifest), findings_table(findings), pipeline(svc, manifest), not running


def summary(findings: list, manifest: dict[str, Any]) -> list:
    counts = {v: sum(1 for f in findings if f.verdict == v) for v in VERDICT_CLASS}
    state = manifest.get("state", "?")
    took = f"{manifest['seconds']:.0f} s" if manifest.get("seconds") is not None else "running"
    return [stat("Reproduced", counts["reproduced"], "the study's direction holds"),
            stat("Not reproduced", counts["not reproduced"], "it does not, on this data"),
            stat("Not measured", counts["not measured"], "waiting for the pipeline" if state == "running" else
                 "see the failed jobs below"),
            stat("Demo", f"{manifest.get('profile', '?')} · {state}", took)]


def findings_table(findings: list) -> html.Table:
    head = html.Thead(html.Tr([html.Th(h) for h in ("Finding", "The study", "The demo", "Verdict", "")]))
    rows = []
    for f in findings:
        rows.append(html.Tr([
            html.Td([html.Strong(f.title), html.Div(f.claim, className="fs-muted fs-small")]),
            html.Td(f.study, className="fs-small"),
            html.Td([html.Div(f.measured), html.Div(f"rule: {f.rule}", className="fs-muted fs-small")],
                    className="fs-small"),
            html.Td(html.Span(f.verdict, className=f"fs-verdict {VERDICT_CLASS[f.verdict]}")),
            html.Td(dcc.Link("open", href=f.link, className="fs-button fs-button-small fs-button-ghost")),
        ], id=f"study-row-{f.key}"))
    return html.Table([head, html.Tbody(rows)], className="fs-table", id="study-table")


def pipeline(svc: Services, manifest: dict[str, Any]) -> list:
    stages = manifest.get("stages") or []
    if not stages:
        return [html.P("The demo has not submitted any job yet.", className="fs-muted")]
    out: list[Any] = []
    for stage in stages:
        if stage.get("state") == "off":
            out.append(html.Div([html.Strong(stage["title"]), html.Span(f"  off: {stage.get('why', '')}",
                                                                        className="fs-muted")], className="fs-stage"))
            continue
        entries = stage.get("jobs") or []
        finished = sum(1 for j in entries if j.get("state") in ("done", "failed", "cancelled"))
        hits = sum(1 for j in entries if j.get("cached"))
        took = f" in {stage['seconds']:.0f} s" if stage.get("seconds") is not None else ""
        line = html.Div([html.Strong(stage["title"]), html.Span(f"  {stage['state']}{took} · {finished}/{len(entries)} "
                                                                f"jobs finished · {hits} cache hits",
                                                                className="fs-muted")], className="fs-stage")
        out.append(line)
        for entry in entries:
            if entry.get("job") is None or entry.get("state") == "done":
                continue
            try:
                job = jobs.get_job(svc.ctx, entry["job"])
            except NotFound:
                continue
            if job.state != "done":
                out.append(job_row("study", job, entry["label"], retry=False))
    return out
