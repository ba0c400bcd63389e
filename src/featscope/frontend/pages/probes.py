"""``/probes`` (Tables 5, 6): linear-probe top-1 with its 95% interval and k-NN accuracy for every cached
backbone x tap x pooling of a labelled data set, as a table and a bar chart."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html

from featscope.frontend import standard
from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import card, empty_state, page_header
from featscope.frontend.components.progress import job_area, resolve, retry_input
from featscope.frontend.scatter import palette
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback

PAGE = {"path": "/probes", "name": "Probes", "title": "featscope · probes (Tables 5, 6)", "order": 50, "nav": True}
TAP_ORDER = {"conv2": 0, "layer1": 0, "conv3": 1, "layer2": 1, "conv4": 2, "layer3": 2, "conv5": 3, "layer4": 3}


def layout(**_query: Any) -> html.Div:
    return html.Div([
        page_header("Linear probes", "How linearly separable are the classes in each backbone's features? A "
                    "logistic-regression probe (L2 strength chosen on a validation split) and a cosine k-NN "
                    "classifier, on every cached tap and pooling.", figure="Tables 5, 6"),
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Labelled data set", className="fs-label"),
                      dcc.Dropdown(id="pr-dataset", clearable=False, style={"width": "280px"})]),
            html.Div([html.Label("Backbones", className="fs-label"),
                      dcc.Dropdown(id="pr-backbones", multi=True, placeholder="all with embeddings",
                                   style={"minWidth": "360px"})]),
        ]),
        job_area("pr"),
        card("Probe accuracy", html.Div(id="pr-table", className="fs-table-wrap"),
             caption="Top-1 on the held-out test split with a Wilson 95% interval; k-NN on the same split. The chart below downloads these rows as CSV or JSON."),
        figure_card("pr-fig", "Top-1 by layer", caption="Bars: linear probe with its 95% interval; "
                    "diamonds: k-NN accuracy.", height=420),
    ])


@callback(Output("pr-dataset", "options"), Output("pr-dataset", "value"), Output("pr-backbones", "options"),
          Input("pr-dataset", "value"))
def choices(svc: Services, dataset: str | None):
    """Labelled data sets that have embeddings, and the backbones with embeddings of the chosen one."""
    with_sets = {s.dataset for s in svc.ws.embedding_sets()}
    labelled = [d for d in svc.ws.datasets(all_versions=True) if d.classes]
    names = [d.name if d.version == 1 else f"{d.name}@{d.version}" for d in labelled]
    opts = [{"label": n, "value": n} for n in names if n in with_sets]
    if dataset not in {o["value"] for o in opts}:
        dataset = opts[0]["value"] if opts else None
    backbones = sorted({s.backbone for s in svc.ws.embedding_sets() if s.dataset == dataset})
    return opts, dataset, [{"label": b, "value": b} for b in backbones]


@callback(Output("pr-table", "children"), Output("pr-fig", "figure"), Output({"type": "fs-figdata", "fig": "pr-fig"}, "data"),
          Output("pr-progress", "children"), Output("pr-tracked", "data"), Output("pr-poll", "disabled"),
          Input("pr-dataset", "value"), Input("pr-backbones", "value"), Input("pr-poll", "n_intervals"),
          retry_input("pr"), State("pr-tracked", "data"))
def show(svc: Services, dataset: str | None, backbones: list | None, _tick: Any, _retry: Any, tracked: dict | None):
    """A probe per embedding set (cached, or a job each), gathered into the table and the chart."""
    if not dataset:
        return (empty_state("No labelled embeddings yet", "Probes need a labelled data set (ImageFolder, COCO, VOC "
                            "or a CSV with labels) and its embeddings: run a Compare on the overview.",
                            links=[("Overview", "/")]), empty_figure(), None, [], tracked or {}, True)
    sets = [s for s in svc.ws.embedding_sets() if s.dataset == dataset and (not backbones or s.backbone in backbones)]
    sets.sort(key=lambda s: (s.backbone, TAP_ORDER.get(s.tap, 9), s.tap, s.pooling))
    needs = [standard.probe_need(s.id) for s in sets]
    labels = {n.name: f"probe {s.backbone} {s.tap}/{s.pooling}" for n, s in zip(needs, sets)}
    out, progress, idle = resolve(svc, "pr", needs, tracked, labels)
    rows = []
    for need, s in zip(needs, sets):
        res = out.results.get(need.name)
        if res is None:
            continue
        d = res.data
        rows.append({"backbone": s.backbone, "tap": s.tap, "pooling": s.pooling, "dim": s.dim, "embedding_set": s.id,
                     "accuracy": d["accuracy"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                     "knn_accuracy": d["knn_accuracy"], "knn_ci_low": d["knn_ci_low"], "knn_ci_high": d["knn_ci_high"],
                     "best_c": d["best_c"], "n_test": d["n_test"], "n_classes": d["n_classes"]})
    return (table(rows), bar_figure(rows), figure_data(f"probes-{dataset}", rows), progress, out.tracked, idle)


def table(rows: list[dict]) -> Any:
    if not rows:
        return html.Div("No probe results yet.", className="fs-muted")
    best = max(r["accuracy"] for r in rows)
    head = html.Thead(html.Tr([html.Th(h) for h in ("Backbone", "Tap", "Pooling", "Dim", "Top-1 (linear)", "95% interval",
                                                    "k-NN", "Best C", "Test images")]))
    body = [html.Tr([html.Td(html.Strong(r["backbone"])), html.Td(r["tap"]), html.Td(r["pooling"]),
                     html.Td(f"{r['dim']:,}", className="fs-num"),
                     html.Td(html.Strong(_pct(r["accuracy"])) if r["accuracy"] == best else _pct(r["accuracy"]),
                             className="fs-num"),
                     html.Td(f"{_pct(r['ci_low'])} – {_pct(r['ci_high'])}", className="fs-num fs-muted"),
                     html.Td(_pct(r["knn_accuracy"]), className="fs-num"), html.Td(f"{r['best_c']:g}", className="fs-num"),
                     html.Td(f"{r['n_test']:,}", className="fs-num")]) for r in rows]
    return html.Table([head, html.Tbody(body)], className="fs-table", id="pr-results")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def bar_figure(rows: list[dict]) -> dict:
    if not rows:
        return empty_figure("No probe results yet")
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    colours = dict(zip(backbones, palette(len(backbones))))
    traces = []
    for bb in backbones:
        mine = [r for r in rows if r["backbone"] == bb]
        x = [f"{r['tap']}/{r['pooling']}" for r in mine]
        traces.append({"type": "bar", "name": f"{bb} · linear", "x": x, "y": [r["accuracy"] for r in mine],
                       "marker": {"color": colours[bb]}, "offsetgroup": bb, "legendgroup": bb,
                       "error_y": {"type": "data", "symmetric": False,
                                   "array": [r["ci_high"] - r["accuracy"] for r in mine],
                                   "arrayminus": [r["accuracy"] - r["ci_low"] for r in mine], "color": "#475467"},
                       "hovertemplate": "%{x}<br>top-1 %{y:.1%}<extra>" + bb + "</extra>"})
        traces.append({"type": "scatter", "mode": "markers", "name": f"{bb} · k-NN", "x": x,
                       "y": [r["knn_accuracy"] for r in mine], "offsetgroup": bb, "legendgroup": bb,
                       "marker": {"symbol": "diamond", "size": 10, "color": "white", "line": {"color": colours[bb],
                                                                                              "width": 2}},
                       "hovertemplate": "%{x}<br>k-NN %{y:.1%}<extra>" + bb + "</extra>"})
    return {"data": traces, "layout": base_layout(barmode="group", yaxis={"title": {"text": "top-1 accuracy"},
                                                                          "tickformat": ".0%", "range": [0, 1.02]},
                                                  xaxis={"title": {"text": "tap / pooling"}})}
