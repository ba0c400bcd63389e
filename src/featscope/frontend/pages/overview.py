"""``/``: what is registered (data sets with their skipped files, backbones, embedding sets), the jobs, and the
Compare form: two or more backbones x a data set x a tap x a pooling -> extraction jobs, then the standard
analyses of each pair (A = the first backbone), each with its progress. Also: register a data set from an
allowed folder (a scan job) and generate the synthetic set."""

from __future__ import annotations

import dataclasses
from typing import Any

from dash import Input, Output, State, dcc, html, no_update
from fastapi import HTTPException

from featscope.frontend import data, standard
from featscope.frontend.components.layout import badge, card, empty_state, page_header, stat
from featscope.frontend.components.progress import POLL_MS, elapsed, job_row, job_title, progress_view
from featscope.frontend.services import Need, Services, check_extract, fetch
from featscope.frontend.wiring import callback
from featscope.worker import jobs
from featscope.worker.jobs import ACTIVE, JobInfo
from featscope.workspace import NotFound

PAGE = {"path": "/", "name": "Overview", "title": "featscope · overview", "order": 0, "nav": True}
POOLINGS = ("avg", "max", "grid2", "grid4")
STUDY_TAPS = ("conv2", "conv3", "conv4", "conv5")


def layout(**_query: Any) -> html.Div:
    return html.Div([
        page_header("Overview", "Register data sets and backbones, then compare their feature spaces: a "
                                "Compare extracts the embeddings and runs the study's analyses in the background."),
        html.Div(id="ov-stats", className="fs-stats"),
        card("Compare backbones", _compare_form(), caption="Pick two or more backbones (the first is A, each other "
             "one is compared with it as B), a data set, a layer tap and a pooling.", id="ov-compare"),
        html.Div(className="fs-grid-2", children=[
            card("Data sets", html.Div(id="ov-datasets"), caption="Skipped files were unreadable; open a row's "
                 "details for the reasons."),
            card("Jobs", html.Div(id="ov-jobs"), caption="Running and recent background jobs.",
                 actions=dcc.Link("All jobs →", href="/jobs", className="fs-button fs-button-ghost fs-button-small")),
        ]),
        html.Div(className="fs-grid-2", children=[
            card("Backbones", html.Div(id="ov-backbones")),
            card("Embedding sets", html.Div(id="ov-sets"), caption="Cached embeddings, one per backbone x data set "
                 "x tap x pooling."),
        ]),
        html.Div(className="fs-grid-2", children=[
            card("Register a data set", _dataset_form(), caption="A folder or annotation file under one of the "
                 "server's allowed roots (FEATSCOPE_ALLOWED_ROOTS); it is scanned in a background job."),
            card("Generate the synthetic set", _synth_form(), caption="Deterministic shapes: single objects "
                 "(ImageFolder, 10 classes) and scenes with boxes (COCO), written to the data dir."),
        ]),
        dcc.Store(id="ov-plan", storage_type="local"),
        dcc.Store(id="ov-refresh", data=0),
        dcc.Interval(id="ov-poll", interval=POLL_MS, disabled=True),
    ])


def _field(label: str, control: Any, hint: str | None = None) -> html.Div:
    return html.Div([html.Label(label, className="fs-label"), control,
                     html.Div(hint, className="fs-hint") if hint else None], className="fs-field")


def _compare_form() -> html.Div:
    return html.Div([
        html.Div(className="fs-form-row", children=[
            _field("Backbones (first = A)", dcc.Dropdown(id="ov-cmp-backbones", multi=True, placeholder="two or more")),
            _field("Data set", dcc.Dropdown(id="ov-cmp-dataset", placeholder="data set")),
            _field("Tap", dcc.Dropdown(id="ov-cmp-tap", value="conv5", clearable=False,
                                       options=[{"label": t, "value": t} for t in STUDY_TAPS])),
            _field("Pooling", dcc.Dropdown(id="ov-cmp-pooling", value="avg", clearable=False,
                                           options=[{"label": p, "value": p} for p in POOLINGS])),
            html.Div(html.Button("Compare", id="ov-cmp-go", className="fs-button fs-button-primary"),
                     className="fs-field fs-field-button"),
        ]),
        html.Div(id="ov-cmp-msg", className="fs-form-msg", role="status"),
        html.Div(id="ov-plan-view"),
    ])


def _dataset_form() -> html.Div:
    return html.Div([
        _field("Path on the server", dcc.Input(id="ov-ds-path", type="text", placeholder="/data/caltech256",
                                               className="fs-input", debounce=True)),
        html.Div(className="fs-form-row", children=[
            _field("Name (optional)", dcc.Input(id="ov-ds-name", type="text", className="fs-input")),
            _field("Format", dcc.Dropdown(id="ov-ds-format", value="auto", clearable=False, options=[
                {"label": f, "value": f} for f in ("auto", "imagefolder", "coco", "voc", "folder", "csv")])),
            html.Div(html.Button("Register", id="ov-ds-go", className="fs-button"), className="fs-field fs-field-button"),
        ]),
        html.Div(id="ov-ds-msg", className="fs-form-msg", role="status"),
    ])


def _synth_form() -> html.Div:
    return html.Div([
        html.Div(className="fs-form-row", children=[
            _field("Name", dcc.Input(id="ov-synth-name", type="text", value="synth", className="fs-input")),
            _field("Objects per class", dcc.Input(id="ov-synth-per-class", type="number", value=30, min=1, max=500,
                                                  className="fs-input")),
            _field("Scenes", dcc.Input(id="ov-synth-scenes", type="number", value=200, min=1, max=2000,
                                       className="fs-input")),
            _field("Size (px)", dcc.Input(id="ov-synth-size", type="number", value=128, min=32, max=512,
                                          className="fs-input")),
            html.Div(html.Button("Generate", id="ov-synth-go", className="fs-button"),
                     className="fs-field fs-field-button"),
        ]),
        dcc.Loading(html.Div(id="ov-synth-msg", className="fs-form-msg", role="status"), type="dot"),
    ])


# ---------------------------------------------------------------- the form's choices
@callback(Output("ov-cmp-backbones", "options"), Output("ov-cmp-dataset", "options"), Output("ov-cmp-tap", "options"),
          Output("ov-cmp-dataset", "value"), Input("ov-refresh", "data"), Input("ov-cmp-backbones", "value"),
          Input("ov-poll", "n_intervals"), State("ov-cmp-dataset", "value"))
def form_options(svc: Services, _refresh: int, chosen: list | None, _tick: int | None, dataset: str | None):
    """Backbones, data sets (newest version of each) and the taps every chosen backbone has."""
    backbones = svc.ws.backbones()
    datasets = svc.ws.datasets()
    taps: list[str] = list(STUDY_TAPS)
    picked = [b for b in backbones if b.name in (chosen or [])]
    if picked:
        from featscope.workspace.backbones import get_backbone_row, tap_choices

        offered = []
        for b in picked:
            names, aliases = tap_choices(get_backbone_row(svc.ctx, b.name))
            offered.append(set(names) | set(aliases))
        common = set.intersection(*offered)
        taps = [t for t in STUDY_TAPS if t in common] + [t for t in sorted(common) if t not in STUDY_TAPS]
    bb_opts = [{"label": f"{b.name}  ({b.spec}{', random init' if b.random_init else ''})", "value": b.name}
               for b in backbones]
    ds_opts = [{"label": f"{d.name}{'@' + str(d.version) if d.version > 1 else ''} ({d.n_images:,} images)",
                "value": d.name if d.version == 1 else f"{d.name}@{d.version}"} for d in datasets]
    if dataset is None and ds_opts:
        labelled = [o for d, o in zip(datasets, ds_opts) if d.classes]
        dataset = (labelled or ds_opts)[0]["value"]
    return bb_opts, ds_opts, [{"label": t, "value": t} for t in taps], dataset


# ---------------------------------------------------------------- Compare
@callback(Output("ov-plan", "data", allow_duplicate=True), Output("ov-cmp-msg", "children"),
          Input("ov-cmp-go", "n_clicks"), State("ov-cmp-backbones", "value"), State("ov-cmp-dataset", "value"),
          State("ov-cmp-tap", "value"), State("ov-cmp-pooling", "value"), prevent_initial_call=True)
def start_compare(svc: Services, _clicks: int, backbones: list | None, dataset: str | None, tap: str | None,
                  pooling: str | None):
    """Queue one extraction job per backbone; the plan (kept in the browser) runs the analyses after them."""
    backbones = list(dict.fromkeys(backbones or []))
    if len(backbones) < 2:
        return no_update, _msg("Pick at least two backbones: the first is A, the others are compared with it.")
    if not dataset or not tap or not pooling:
        return no_update, _msg("Pick a data set, a tap and a pooling.")
    extract: dict[str, int] = {}
    try:
        for bb in backbones:  # every request checked before any is queued
            check_extract(svc.ctx, bb, dataset, [tap])
        for bb in backbones:
            extract[bb] = svc.submit("extract", {"backbone": bb, "dataset": dataset, "taps": [tap],
                                                 "poolings": [pooling]}).id
    except (ValueError, NotFound) as e:
        return no_update, _msg(str(e.args[0] if e.args else e))
    plan = {"backbones": backbones, "dataset": dataset, "tap": tap, "pooling": pooling, "extract": extract,
            "sets": {}, "tracked": {}, "done": False}
    return plan, _msg(f"Queued {len(backbones)} extraction job(s); the analyses follow when they finish.", ok=True)


def _msg(text: str, ok: bool = False) -> html.Div:
    return html.Div(text, className="fs-ok" if ok else "fs-error")


def plan_needs(svc: Services, plan: dict) -> list[Need]:
    """The standard analyses of each pair (A = first backbone, B = each other one) of a plan's sets."""
    sets = plan["sets"]
    first = plan["backbones"][0]
    a = sets[first]
    info = data.set_info(svc.ctx, a)
    ds = svc.ws.datasets(all_versions=True)
    labelled = any(d.classes for d in ds if info is not None and d.name == info.dataset.split("@")[0])
    needs: list[Need] = []
    for other in plan["backbones"][1:]:
        b = sets[other]
        for need in standard.compare_needs(a, b, info.n if info else 0, first, other, plan["dataset"],
                                           plan["pooling"], labelled):
            if need.kind == "probe" and any(n.name == need.name for n in needs):
                continue
            needs.append(dataclasses.replace(need, name=need.name if need.kind == "probe" else f"{other}:{need.name}"))
    return needs


def advance_plan(svc: Services, plan: dict) -> tuple[dict, list, bool]:
    """One step of a Compare: read its extraction jobs; once all are done, fetch/submit the analyses.
    Returns the updated plan, its progress rows and whether anything still runs."""
    rows: list[Any] = []
    states: dict[str, JobInfo] = {}
    for bb, job_id in plan["extract"].items():
        try:
            states[bb] = jobs.get_job(svc.ctx, job_id)
        except NotFound:
            continue
        if states[bb].state == "done":
            plan["sets"][bb] = states[bb].result["embedding_sets"][0]
    rows += [job_row("ov", j, f"extract {bb}") for bb, j in states.items() if j.state != "done"]
    running = any(j.state in ACTIVE for j in states.values())
    if len(plan["sets"]) < len(plan["backbones"]):
        return plan, rows, running
    needs = plan_needs(svc, plan)
    out = fetch(svc, needs, plan["tracked"])
    plan["tracked"] = out.tracked
    labels = {n.name: _need_label(n) for n in needs}
    rows += progress_view("ov", out.jobs, labels, out.errors)
    plan["done"] = not out.active and not out.jobs and not out.errors
    return plan, rows, out.active


def _need_label(need: Need) -> str:
    prefix, _, base = need.name.rpartition(":")
    return f"{need.kind} {('(B = ' + prefix + ')') if prefix else ''}".strip() if need.kind != "probe" else \
        f"probe of set {need.inputs[0]}"


def plan_summary(plan: dict) -> html.Div:
    bbs = plan["backbones"]
    head = [badge("A"), f" {bbs[0]}  vs  ", *[x for bb in bbs[1:] for x in (badge("B"), f" {bb} ")],
            html.Span(f" · {plan['dataset']} · {plan['tap']}/{plan['pooling']}", className="fs-muted")]
    links: list[Any] = []
    if plan.get("done") and len(plan["sets"]) == len(bbs):
        a = plan["sets"][bbs[0]]
        for bb in bbs[1:]:
            q = f"?a={a}&b={plan['sets'][bb]}"
            links.append(html.Div([html.Span(f"{bbs[0]} vs {bb}: ", className="fs-muted"),
                                   *[dcc.Link(text, href=path + q, className="fs-button fs-button-small")
                                     for text, path in (("Pairs (Fig. 3)", "/pairs"), ("Co-membership (Fig. 6)",
                                                        "/comembership"), ("Projections (Fig. 7)", "/projections"),
                                                        ("Similarity", "/similarity"))],
                                   dcc.Link("Probes (Tables 5, 6)", href="/probes", className="fs-button fs-button-small")],
                                  className="fs-plan-links"))
    state = "done: every analysis is cached" if plan.get("done") else "running"
    return html.Div([html.Div([html.Strong("Compare "), *head, html.Span(f" — {state}", className="fs-muted")],
                              className="fs-plan-head"), *links], className="fs-plan")


# ---------------------------------------------------------------- the page's tick
@callback(Output("ov-stats", "children"), Output("ov-datasets", "children"), Output("ov-backbones", "children"),
          Output("ov-sets", "children"), Output("ov-jobs", "children"), Output("ov-plan-view", "children"),
          Output("ov-plan", "data"), Output("ov-poll", "disabled"),
          Input("ov-poll", "n_intervals"), Input("ov-refresh", "data"), Input("ov-plan", "data"))
def tick(svc: Services, _n: int | None, _refresh: int, plan: dict | None):
    """Everything the overview lists, and one step of the Compare in progress; polls while anything runs."""
    recent = jobs.list_jobs(svc.ctx, limit=8)
    active = any(j.state in ACTIVE for j in recent) or bool(jobs.list_jobs(svc.ctx, state="running", limit=1))
    plan_view: Any = None
    if plan and plan.get("extract"):
        plan, rows, plan_active = advance_plan(svc, plan)
        active = active or plan_active
        plan_view = html.Div([plan_summary(plan), html.Div(rows, className="fs-progress-area")])
    else:
        plan = no_update
    return (stats(svc), datasets_view(svc), backbones_view(svc), sets_view(svc), jobs_view(recent), plan_view,
            plan, not active)


def stats(svc: Services) -> list:
    running = len(jobs.list_jobs(svc.ctx, state="running", limit=1000))
    queued = len(jobs.list_jobs(svc.ctx, state="queued", limit=1000))
    return [stat("Data sets", len(svc.ws.datasets())), stat("Backbones", len(svc.ws.backbones())),
            stat("Embedding sets", len(svc.ws.embedding_sets())),
            stat("Jobs", f"{running} running", f"{queued} queued")]


def datasets_view(svc: Services) -> Any:
    infos = svc.ws.datasets()
    if not infos:
        return empty_state("No data sets yet", "Generate the synthetic set below, register a folder under an "
                           "allowed root, or use the CLI on the server:",
                           ["featscope dataset synth ./synth", "featscope dataset add ~/data/caltech256"])
    rows = []
    for d in infos:
        skipped: Any = "0"
        if d.n_skipped:
            files = svc.ws.images(d.id, skipped=True, limit=20)
            reasons = _skipped_reasons(svc, d.id)
            skipped = html.Details([html.Summary(f"{d.n_skipped:,} skipped"),
                                    html.Ul([html.Li(f"{n} × {r}") for r, n in reasons.items()]),
                                    html.Ul([html.Li([html.Code(f.relpath), f": {f.error}"]) for f in files],
                                            className="fs-skipped-files")])
        rows.append(html.Tr([html.Td([html.Strong(d.name), html.Span(f" v{d.version}", className="fs-muted")]),
                             html.Td(d.format), html.Td(f"{d.n_images:,}", className="fs-num"),
                             html.Td(f"{len(d.classes)}" if d.classes else "—", className="fs-num"), html.Td(skipped)]))
    return _table(["Name", "Format", "Images", "Classes", "Skipped"], rows, "ov-datasets-table")


def _skipped_reasons(svc: Services, dataset_id: int) -> dict[str, int]:
    from featscope.workspace.datasets import get_dataset

    return dict(get_dataset(svc.ctx, dataset_id).skipped_reasons or {})


def backbones_view(svc: Services) -> Any:
    infos = svc.ws.backbones()
    if not infos:
        return empty_state("No backbones yet", "Register backbones on the server (weights are read from local "
                           "files only):", ["featscope backbone add torchvision:resnet50 --weights r50.pth --name cls",
                                            "featscope backbone add torchvision-det:fasterrcnn_resnet50_fpn "
                                            "--weights frcnn.pth --name det",
                                            "featscope backbone add torchvision:resnet18 --random-init --name r18"])
    rows = [html.Tr([html.Td(html.Strong(b.name)), html.Td(html.Code(b.spec)),
                     html.Td("random init" if b.random_init else (b.weights or "—").split("/")[-1]),
                     html.Td(", ".join(b.taps)), html.Td("yes" if b.has_classifier else "probe")]) for b in infos]
    return _table(["Name", "Spec", "Weights", "Taps", "Classifier"], rows, "ov-backbones-table")


def sets_view(svc: Services) -> Any:
    infos = svc.ws.embedding_sets()
    if not infos:
        return empty_state("No embeddings yet", "Run a Compare above: it extracts each backbone's embeddings.")
    rows = [html.Tr([html.Td(f"#{s.id}", className="fs-num"), html.Td(s.backbone), html.Td(s.dataset),
                     html.Td(f"{data.tap_label(s.tap)}/{s.pooling}"), html.Td(f"{s.n:,} × {s.dim}", className="fs-num"),
                     html.Td(s.index_kind)]) for s in reversed(infos[-50:])]
    return _table(["Set", "Backbone", "Data set", "Tap/pooling", "Vectors", "Index"], rows, "ov-sets-table")


def jobs_view(recent: list[JobInfo]) -> Any:
    if not recent:
        return empty_state("No jobs yet", "Jobs appear here when a Compare, an analysis or a map is queued.")
    return html.Div([html.Div([job_row("ovj", j, job_title(j), retry=False),
                               html.Span(elapsed(j), className="fs-job-time")], className="fs-job-line")
                     for j in recent], className="fs-job-list")


def _table(header: list[str], rows: list, table_id: str) -> html.Table:
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(rows)],
                      className="fs-table", id=table_id)


# ---------------------------------------------------------------- registering data
@callback(Output("ov-ds-msg", "children"), Output("ov-refresh", "data", allow_duplicate=True),
          Input("ov-ds-go", "n_clicks"), State("ov-ds-path", "value"), State("ov-ds-name", "value"),
          State("ov-ds-format", "value"), State("ov-refresh", "data"), prevent_initial_call=True)
def register_dataset(svc: Services, _clicks: int, path: str | None, name: str | None, fmt: str, refresh: int):
    """Scan a folder under an allowed root in a worker (the REST ``POST /datasets/scan``)."""
    from featscope.server.deps import allowed_path

    if not path:
        return _msg("Give the folder's path on the server."), no_update
    try:
        real = allowed_path(svc.settings, path.strip(), "data set path")
        params = {"path": str(real), "format": fmt or "auto", **({"name": name.strip()} if name else {})}
        job = svc.submit("dataset-add", params)
    except HTTPException as e:
        return _msg(str(e.detail)), no_update
    except ValueError as e:
        return _msg(str(e)), no_update
    return _msg(f"Scanning in job {job.id}; the data set appears when it finishes.", ok=True), (refresh or 0) + 1


@callback(Output("ov-synth-msg", "children"), Output("ov-refresh", "data", allow_duplicate=True),
          Input("ov-synth-go", "n_clicks"), State("ov-synth-name", "value"), State("ov-synth-per-class", "value"),
          State("ov-synth-scenes", "value"), State("ov-synth-size", "value"), State("ov-refresh", "data"),
          prevent_initial_call=True)
def generate_synth(svc: Services, _clicks: int, name: str | None, per_class: int | None, scenes: int | None,
                   size: int | None, refresh: int):
    """Generate and register the synthetic set in a worker (the REST ``POST /datasets/synth``: a
    ``dataset-synth`` job, whose progress the jobs list shows)."""
    from pydantic import ValidationError

    from featscope.server.api.schemas import SynthIn

    try:
        body = SynthIn(name=(name or "synth").strip(), n_per_class=per_class or 30, n_scenes=scenes or 200,
                       size=size or 128)
        job = svc.submit("dataset-synth", body.model_dump())
    except ValidationError as e:
        return _msg("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())), no_update
    except ValueError as e:
        return _msg(str(e)), no_update
    return (_msg(f"Generating {body.name}-objects and {body.name}-scenes in job {job.id}; they appear under Data "
                 f"sets when it finishes.", ok=True), (refresh or 0) + 1)

