"""``/runs``: training runs: loss and learning-rate curves, evaluations over training, AP against IoU of the
detection fine-tuning runs (Fig. 1), the fine-tuning tables (Tables 1, 7, 8), held-out classes (Table 2), missed
objects by occlusion (Table 3), segmentation (Table 4) and its trimap / anti-trimap curves (Fig. 2), and the
backbones runs registered."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, dcc, html

from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import card, empty_state, page_header
from featscope.frontend.components.results import missed_by_occlusion, occlusion_table
from featscope.frontend.scatter import palette
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback

PAGE = {"path": "/runs", "name": "Runs", "title": "featscope · training runs (Figs. 1, 2, Tables 1-4, 7, 8)",
        "order": 85, "nav": True}
POLL_MS = 3000
IOUS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")


def layout(**_query: Any) -> html.Div:
    return html.Div([
        page_header("Training runs", "Pre-training and fine-tuning runs of this data dir: how their loss and learning "
                    "rate moved, what they scored, and the backbones they registered.",
                    figure="Figs. 1, 2 · Tables 1-4, 7, 8"),
        card("Runs", html.Div(id="runs-table", className="fs-table-wrap"),
             caption="Newest first. A finished pre-training run is a backbone (run:<id>) usable on every page."),
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Curves of", className="fs-label"),
                      dcc.Dropdown(id="runs-chosen", multi=True, placeholder="the pre-training runs",
                                   style={"minWidth": "420px"})]),
        ]),
        html.Div(className="fs-grid-2", children=[
            figure_card("runs-loss", "Loss", caption="Training loss per logged iteration.", height=340),
            figure_card("runs-lr", "Learning rate", caption="Warm-up, then the schedule (step or cosine).", height=340),
        ]),
        figure_card("runs-eval", "Evaluation over training", height=340,
                    caption="Held-out top-1 (classification) or mAP@0.5 (detection) at each evaluation."),
        figure_card("runs-ap", "AP against the IoU threshold (Fig. 1)", height=380,
                    caption="Detection fine-tuning from each backbone, named with the set each was tested on (the "
                            "demo's Fig. 1 runs on the target set): the study finds detection pre-training helps most "
                            "at high IoU."),
        card("Fine-tuning", html.Div(id="runs-finetune", className="fs-table-wrap"),
             caption="Detection: AP at IoU 0.5 and 0.7 (Tables 1, 7). Classification: top-1 with its Wilson 95% "
                     "interval (Tables 7, 8). Segmentation: mIoU (Table 4)."),
        card("Held-out categories (Table 2)", html.Div(id="runs-table2", className="fs-table-wrap"),
             caption="A backbone pre-trained without some classes, fine-tuned for detection on data that has them, "
                     "beside the other backbones fine-tuned on the same data: AP@0.7 on the held-out classes and on "
                     "the rest."),
        card("Missed objects by occlusion (Table 3)", html.Div(id="runs-table3", className="fs-table-wrap"),
             caption="Detection fine-tuning runs whose test set says how occluded each object is; both detectors' "
                     "boxes on the same images are on the Detections page (Fig. 8)."),
        figure_card("runs-trimap", "Segmentation accuracy near and away from object boundaries (Fig. 2)", height=460,
                    caption="Pixel accuracy within x pixels of an object boundary (trimap, solid) and farther than x "
                            "(anti-trimap, dashed), per segmentation fine-tuning run: the study finds the detection "
                            "backbone's gain in both, not only at the boundaries."),
        dcc.Interval(id="runs-poll", interval=POLL_MS, disabled=False),
    ])


def _runs(svc: Services) -> list:
    return svc.ws.runs()


@callback(Output("runs-table", "children"), Output("runs-chosen", "options"), Output("runs-finetune", "children"),
          Output("runs-ap", "figure"), Output({"type": "fs-figdata", "fig": "runs-ap"}, "data"),
          Output("runs-poll", "disabled"), Input("runs-poll", "n_intervals"))
def overview(svc: Services, _tick: Any):
    """The runs table, the run choices, the fine-tuning table and Fig. 1; polls while a run is running."""
    runs = _runs(svc)
    if not runs:
        return (empty_state("No training runs yet", "Train a backbone (or run the whole study with `make demo`); "
                            "its curves and scores appear here.",
                            commands=["featscope dataset study ./study",
                                      "featscope train cls -d study-pretrain --val-dataset study-pretrain-val",
                                      "featscope train det -d study-pretrain --val-dataset study-pretrain-val "
                                      "--init cls-resnet18-1"],
                            links=[("Study", "/study"), ("Jobs", "/jobs")]),
                [], html.Div("No fine-tuning runs yet.", className="fs-muted"), empty_figure("No detection "
                "fine-tuning runs yet"), None, True)
    names = _backbone_names(svc)
    options = [{"label": f"{r.id} · {r.name} ({r.task}, {r.state})", "value": r.id} for r in runs]
    rows = ap_rows(runs, {d.id: d.name for d in svc.ws.datasets(all_versions=True)})
    active = any(r.state in ("queued", "running") for r in runs)
    return (runs_table(runs, names), options, finetune_table(runs, names), ap_figure(rows),
            figure_data("ap-vs-iou", rows), not active)


def _backbone_names(svc: Services) -> dict[int, str]:
    return {b.id: b.name for b in svc.ws.backbones()}


@callback(Output("runs-loss", "figure"), Output({"type": "fs-figdata", "fig": "runs-loss"}, "data"),
          Output("runs-lr", "figure"), Output({"type": "fs-figdata", "fig": "runs-lr"}, "data"),
          Output("runs-eval", "figure"), Output({"type": "fs-figdata", "fig": "runs-eval"}, "data"),
          Input("runs-chosen", "value"), Input("runs-poll", "n_intervals"))
def curves(svc: Services, chosen: list | None, _tick: Any):
    """Loss, learning rate and evaluations of the chosen runs (default: the pre-training runs)."""
    runs = _runs(svc)
    picked = [r for r in runs if r.id in (chosen or [])] or [r for r in runs if r.task in ("cls", "det")]
    picked.sort(key=lambda r: r.id)  # oldest first: the demo's classification run gets A's colour
    series = {f"{r.id} · {r.name}": svc.ws.run_metrics(r.id) for r in picked}
    loss = [{"run": n, "iteration": m["iteration"], "loss": m.get("loss")} for n, ms in series.items()
            for m in ms if m.get("kind") == "train"]
    lr = [{"run": n, "iteration": m["iteration"], "lr": m.get("lr")} for n, ms in series.items()
          for m in ms if m.get("kind") == "train"]
    ev = [{"run": n, "iteration": m["iteration"], "metric": "top-1" if "top1" in m else "mAP@0.5",
           "value": m.get("top1", m.get("map_50"))} for n, ms in series.items() for m in ms if m.get("kind") == "eval"]
    return (line_figure(loss, "loss", "loss"), figure_data("loss", loss), line_figure(lr, "lr", "learning rate"),
            figure_data("lr", lr), line_figure(ev, "value", "held-out score", markers=True, percent=True),
            figure_data("eval", ev))


def line_figure(rows: list[dict], key: str, title: str, *, markers: bool = False, percent: bool = False) -> dict:
    if not rows:
        return empty_figure("Nothing logged yet")
    names = list(dict.fromkeys(r["run"] for r in rows))
    colours = dict(zip(names, palette(len(names))))
    traces = [{"type": "scatter", "mode": "lines+markers" if markers else "lines", "name": n,
               "x": [r["iteration"] for r in rows if r["run"] == n], "y": [r[key] for r in rows if r["run"] == n],
               "line": {"color": colours[n]}} for n in names]
    yaxis: dict[str, Any] = {"title": {"text": title}}
    if percent:
        yaxis.update(tickformat=".0%", range=[0, 1.02])
    return {"data": traces, "layout": base_layout(xaxis={"title": {"text": "iteration"}}, yaxis=yaxis)}


def ap_rows(runs: list, datasets: dict[int, str] | None = None) -> list[dict]:
    """One row per IoU threshold and detection fine-tuning run that finished; with ``datasets`` (id -> name) the
    run's name says what it was tested on (runs on different test sets are not comparable)."""
    out = []
    for r in sorted(runs, key=lambda r: r.id):  # oldest first: the demo's run from the classifier gets A's colour
        ap = ((r.result or {}).get("eval") or {}).get("ap") if r.task == "finetune-det" and r.state == "done" else None
        name = f"{r.id} · from {_init_name(r)}" + (f" on {_tested_on(r, datasets)}" if datasets is not None else "")
        for t in IOUS if ap else ():
            if ap.get(t) is not None and ap[t] >= 0:  # pycocotools' -1: no ground truth at this threshold
                out.append({"run": name, "iou": float(t), "ap": ap[t]})
    return out


def _tested_on(run, datasets: dict[int, str]) -> str:
    if run.test_dataset_id is not None:
        return datasets.get(run.test_dataset_id, f"data set {run.test_dataset_id}")
    return f"a split of {datasets.get(run.dataset_id, f'data set {run.dataset_id}')}"


def _init_name(run) -> str:
    return run.init.replace("backbone ", "").split(" (")[0] if run.init else "?"


def ap_figure(rows: list[dict]) -> dict:
    if not rows:
        return empty_figure("No detection fine-tuning run has finished yet")
    names = list(dict.fromkeys(r["run"] for r in rows))
    colours = dict(zip(names, palette(len(names))))
    traces = [{"type": "scatter", "mode": "lines+markers", "name": n, "line": {"color": colours[n]},
               "x": [r["iou"] for r in rows if r["run"] == n], "y": [r["ap"] for r in rows if r["run"] == n],
               "hovertemplate": "IoU %{x}<br>AP %{y:.1%}<extra>" + n + "</extra>"} for n in names]
    return {"data": traces, "layout": base_layout(xaxis={"title": {"text": "IoU threshold"}, "dtick": 0.1},
                                                  yaxis={"title": {"text": "AP"}, "tickformat": ".1%",
                                                         "rangemode": "tozero"}, **_legend_below(len(traces)))}


def _legend_below(n_traces: int) -> dict[str, Any]:
    """The legend under the plot, with room for its rows: a long one above runs into the figure's toolbar."""
    return {"legend": {"yref": "container", "yanchor": "bottom", "y": 0},
            "margin": {"b": 64 + 22 * ((n_traces + 2) // 3)}}


def _pct(v: Any) -> str:
    return "—" if v is None or v < 0 else f"{100 * v:.1f}%"


def _backbone_cell(run, names: dict[int, str]) -> Any:
    if run.backbone_id is None:
        return "—"
    return html.Span([dcc.Link(names.get(run.backbone_id, f"backbone {run.backbone_id}"), href="/"),
                      html.Span(f" run:{run.id}", className="fs-muted")], title="a registered backbone: compare it "
                                                                                 "with others on the overview")


def _score(run) -> str:
    ev = (run.result or {}).get("eval") or {}
    if "miou" in ev:
        return f"mIoU {_pct(ev['miou'])}"
    if "top1" in ev:
        return f"top-1 {_pct(ev['top1'])}"
    if "ap" in ev:
        return f"AP@0.5 {_pct(ev['ap'].get('0.5'))}, AP@0.7 {_pct(ev['ap'].get('0.7'))}"
    return "—"


def runs_table(runs: list, names: dict[int, str]) -> html.Table:
    head = html.Thead(html.Tr([html.Th(h) for h in ("Id", "Name", "Task", "Preset", "State", "Iterations", "Score",
                                                    "Seconds", "Backbone")]))
    body = [html.Tr([html.Td(r.id, className="fs-num"), html.Td(html.Strong(r.name)), html.Td(r.task),
                     html.Td(r.preset), html.Td(html.Span(r.state, className=f"fs-state fs-state-{r.state}")),
                     html.Td(f"{r.iteration}/{r.total_iterations}", className="fs-num"), html.Td(_score(r)),
                     html.Td(f"{(r.result or {}).get('seconds', 0):.0f}", className="fs-num"),
                     html.Td(_backbone_cell(r, names))]) for r in runs]
    return html.Table([head, html.Tbody(body)], className="fs-table", id="runs-list")


def finetune_table(runs: list, names: dict[int, str]) -> Any:
    done = [r for r in runs if r.task.startswith("finetune-") and r.state == "done"]
    if not done:
        return html.Div("No fine-tuning run has finished yet.", className="fs-muted")
    head = html.Thead(html.Tr([html.Th(h) for h in ("Run", "Task", "From backbone", "Test images", "AP@0.5", "AP@0.7",
                                                    "Top-1", "95% interval", "mIoU")]))
    body = []
    for r in done:
        ev = (r.result or {}).get("eval") or {}
        ap = ev.get("ap") or {}
        body.append(html.Tr([html.Td(f"{r.id} · {r.name}"), html.Td(r.task), html.Td(_init_name(r)),
                             html.Td((r.result or {}).get("test_images", "—"), className="fs-num"),
                             html.Td(_pct(ap.get("0.5")) if ap else "—", className="fs-num"),
                             html.Td(_pct(ap.get("0.7")) if ap else "—", className="fs-num"),
                             html.Td(_pct(ev.get("top1")) if "top1" in ev else "—", className="fs-num"),
                             html.Td(f"{_pct(ev['ci_low'])} – {_pct(ev['ci_high'])}" if "ci_low" in ev else "—",
                                     className="fs-num fs-muted"),
                             html.Td(_pct(ev.get("miou")) if "miou" in ev else "—", className="fs-num")]))
    return html.Table([head, html.Tbody(body)], className="fs-table", id="runs-ft")


@callback(Output("runs-table2", "children"), Output("runs-table3", "children"), Output("runs-trimap", "figure"),
          Output({"type": "fs-figdata", "fig": "runs-trimap"}, "data"), Input("runs-poll", "n_intervals"))
def study_results(svc: Services, _tick: Any):
    """Table 2 (held-out classes), Table 3 (missed objects by occlusion) and Fig. 2 (trimap curves) of the runs."""
    runs = sorted(_runs(svc), key=lambda r: r.id)  # oldest first: the demo's run from the classifier gets A's colour
    datasets = {d.id: d.name for d in svc.ws.datasets(all_versions=True)}
    occ = [([f"{r.id} · from {_init_name(r)}", html.Br(), html.Span(f"on {_tested_on(r, datasets)}",
                                                                       className="fs-muted")], missed_by_occlusion(r))
           for r in runs if r.task == "finetune-det" and r.state == "done" and missed_by_occlusion(r)]
    rows = band_rows(runs)
    return heldout_tables(runs), occlusion_table(occ, "runs-occlusion"), band_figure(rows), figure_data("trimap", rows)


def band_rows(runs: list) -> list[dict]:
    """One row per finished segmentation run, band (trimap / anti-trimap) and width with a known accuracy."""
    out = []
    for r in runs:
        ev = (r.result or {}).get("eval") or {}
        if r.task != "finetune-seg" or r.state != "done":
            continue
        for band, key in (("trimap", "trimap"), ("anti-trimap", "anti_trimap")):
            out += [{"run": f"{r.id} · from {_init_name(r)}", "band": band, "width": x["width"],
                     "accuracy": x["accuracy"], "pixels": x.get("pixels")}
                    for x in ev.get(key) or [] if x.get("accuracy") is not None]
    return out


def band_figure(rows: list[dict]) -> dict:
    if not rows:
        return empty_figure("No segmentation fine-tuning run has finished yet")
    names = list(dict.fromkeys(r["run"] for r in rows))
    colours = dict(zip(names, palette(len(names))))
    traces = []
    for n in names:
        for band, dash in (("trimap", "solid"), ("anti-trimap", "dash")):
            pts = [r for r in rows if r["run"] == n and r["band"] == band]
            traces.append({"type": "scatter", "mode": "lines+markers", "name": f"{n} · {band}",
                           "line": {"color": colours[n], "dash": dash}, "x": [r["width"] for r in pts],
                           "y": [r["accuracy"] for r in pts],
                           "hovertemplate": f"{band} %{{x}} px<br>accuracy %{{y:.1%}}<extra>{n}</extra>"})
    widths = sorted({r["width"] for r in rows})
    return {"data": traces, "layout": base_layout(xaxis={"title": {"text": "band width (pixels, log scale)"},
                                                         "type": "log", "tickvals": widths},
                                                  yaxis={"title": {"text": "pixel accuracy"}, "tickformat": ".0%"},
                                                  **_legend_below(len(traces)))}


def heldout_tables(runs: list) -> Any:
    """Table 2 for each pre-training run with ``holdout_classes``: the detection fine-tuning runs from its backbone
    and those from other backbones on the same data, with AP@0.7 on the held-out classes and on the others."""
    from featscope.analysis.study_measures import class_ap

    held = [r for r in runs if r.task in ("cls", "det") and (r.config or {}).get("holdout_classes")]
    if not held:
        return html.Div("No pre-training run holds classes out yet (train one with the holdout_classes parameter, "
                        "e.g. featscope train det ... --set holdout_classes=star,cross; the demo's cuda and tiny "
                        "profiles do, the cpu one with featscope demo --heldout star,cross).", className="fs-muted")
    done = [r for r in runs if r.task == "finetune-det" and r.state == "done"
            and ((r.result or {}).get("eval") or {}).get("per_class")]
    blocks = []
    for h in held:
        classes = list(h.config["holdout_classes"])
        mine = [r for r in done if f"(run:{h.id})" in (r.init or "")]
        if not mine:
            blocks.append(html.P(f"Run {h.id} ({h.name}) holds out {', '.join(classes)}; no detection fine-tuning "
                                 f"from its backbone has finished yet.", className="fs-muted"))
            continue
        for f in mine:
            peers = [r for r in done if (r.dataset_id, r.test_dataset_id, r.classes) ==
                     (f.dataset_id, f.test_dataset_id, f.classes)]
            body = []
            for r in peers:
                ev = r.result["eval"]
                thresholds = sorted(ev["ap"], key=float)
                others = [c for c in r.classes if c not in classes]
                body.append(html.Tr([html.Td(f"{r.id} · from {_init_name(r)}" + (" (without them)" if r is f else "")),
                                     html.Td(_pct(class_ap(ev["per_class"], classes, thresholds)), className="fs-num"),
                                     html.Td(_pct(class_ap(ev["per_class"], others, thresholds)), className="fs-num"),
                                     html.Td(_pct(ev["ap"].get("0.7")), className="fs-num")],
                                    className="fs-row-study" if r is f else None))
            head = html.Thead(html.Tr([html.Th("Fine-tuning run"),
                                       *[html.Th(h, className="fs-num") for h in
                                         (f"AP@0.7 on {', '.join(classes)}", "AP@0.7 on the other classes",
                                          "AP@0.7, all")]]))
            blocks.append(html.Div([html.Div(f"Pre-training run {h.id} ({h.name}, {h.task}) never saw "
                                             f"{', '.join(classes)}; fine-tuned on the same data as:",
                                             className="fs-subtitle"),
                                    html.Table([head, html.Tbody(body)], className="fs-table",
                                               id=f"runs-heldout-{f.id}")]))
    return html.Div(blocks)
