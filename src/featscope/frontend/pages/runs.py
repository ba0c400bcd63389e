"""``/runs``: training runs: loss and learning-rate curves, evaluations over training, AP against IoU of the
detection fine-tuning runs (Fig. 1), the fine-tuning tables (Tables 1, 7, 8), and the backbones runs registered."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, dcc, html

from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import card, empty_state, page_header
from featscope.frontend.scatter import palette
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback

PAGE = {"path": "/runs", "name": "Runs", "title": "featscope · training runs (Fig. 1, Tables 1, 7, 8)", "order": 85,
        "nav": True}
POLL_MS = 3000
IOUS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")


def layout(**_query: Any) -> html.Div:
    return html.Div([
        page_header("Training runs", "Pre-training and fine-tuning runs of this data dir: how their loss and learning "
                    "rate moved, what they scored, and the backbones they registered.",
                    figure="Fig. 1 · Tables 1, 7, 8"),
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
                    caption="Detection fine-tuning on the target set, from each backbone: the study finds detection "
                            "pre-training helps most at high IoU."),
        card("Fine-tuning", html.Div(id="runs-finetune", className="fs-table-wrap"),
             caption="Detection: AP at IoU 0.5 and 0.7 (Tables 1, 7). Classification: top-1 with its Wilson 95% "
                     "interval (Tables 7, 8)."),
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
    rows = ap_rows(runs)
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


def ap_rows(runs: list) -> list[dict]:
    """One row per IoU threshold and detection fine-tuning run that finished."""
    out = []
    for r in sorted(runs, key=lambda r: r.id):  # oldest first: the demo's run from the classifier gets A's colour
        ap = ((r.result or {}).get("eval") or {}).get("ap") if r.task == "finetune-det" and r.state == "done" else None
        for t in IOUS if ap else ():
            if ap.get(t) is not None and ap[t] >= 0:  # pycocotools' -1: no ground truth at this threshold
                out.append({"run": f"{r.id} · from {_init_name(r)}", "iou": float(t), "ap": ap[t]})
    return out


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
                                                         "rangemode": "tozero"})}


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
                                                    "Top-1", "95% interval")]))
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
                                     className="fs-num fs-muted")]))
    return html.Table([head, html.Tbody(body)], className="fs-table", id="runs-ft")
