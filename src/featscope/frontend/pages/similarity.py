"""``/similarity``: how alike are A and B as representations? Linear CKA (and the layer-by-layer matrix),
mutual k-NN alignment, per-image neighbourhood agreement and the images the two disagree on most."""

from __future__ import annotations

from typing import Any

import numpy as np
from dash import Input, Output, State, html

from featscope.frontend import data, standard
from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import COLOUR_A, card, empty_state, error_box, page_header, stat
from featscope.frontend.components.pickers import ab_id, comparison_bar
from featscope.frontend.components.progress import job_area, resolve, retry_input
from featscope.frontend.components.thumbs import thumb_grid
from featscope.frontend.services import Services, check_extract
from featscope.frontend.wiring import callback

PAGE = {"path": "/similarity", "name": "Similarity", "title": "featscope · similarity", "order": 60, "nav": True,
        "pair": True}
STUDY_TAPS = ["conv2", "conv3", "conv4", "conv5"]


def layout(a: str | None = None, b: str | None = None, **_query: Any) -> html.Div:
    return html.Div([
        page_header("Representation similarity", "Linear CKA compares whole spaces (1: the same up to rotation "
                    "and scale); mutual k-NN and per-image agreement ask whether each image keeps its neighbours."),
        comparison_bar("sim", a, b),
        job_area("sim"),
        html.Div(id="sim-stats", className="fs-stats"),
        html.Div(className="fs-grid-2", children=[
            figure_card("sim-cka", "Layer-by-layer CKA", caption="Every cached tap of A (rows) against every tap of "
                        "B (columns), at A's pooling.", height=400,
                        extra=html.Div([html.Div(id="sim-cka-note", className="fs-muted"),
                                        html.Button("Extract conv2–conv5 of A and B", id="sim-extract",
                                                    className="fs-button fs-button-small"),
                                        html.Div(id="sim-extract-msg", className="fs-form-msg")],
                                       className="fs-cka-extra")),
            figure_card("sim-hist", "Neighbourhood agreement", caption="Per image: the share of its k nearest "
                        "neighbours that A and B have in common.", height=400),
        ]),
        card("Most disagreeing images", html.Div(id="sim-worst"), caption="Lowest k-NN overlap between A and B: "
             "images whose neighbourhoods the two backbones see differently. Click one to compare its maps."),
    ])


@callback(Output("sim-stats", "children"), Output("sim-cka", "figure"), Output("sim-hist", "figure"),
          Output({"type": "fs-figdata", "fig": "sim-cka"}, "data"), Output({"type": "fs-figdata", "fig": "sim-hist"}, "data"),
          Output("sim-worst", "children"), Output("sim-cka-note", "children"),
          Output("sim-progress", "children"), Output("sim-tracked", "data"), Output("sim-poll", "disabled"),
          Input(ab_id("sim", "a"), "value"), Input(ab_id("sim", "b"), "value"), Input("sim-poll", "n_intervals"),
          retry_input("sim"), State("sim-tracked", "data"))
def show(svc: Services, a: int | None, b: int | None, _tick: Any, _retry: Any, tracked: dict | None):
    """The pair's similarity numbers, CKA matrix, agreement histogram and most disagreeing images."""
    if not data.valid_pair(svc.ctx, a, b):
        return (empty_state("Pick two embedding sets of one data set", "Choose A and B above, or run a Compare on "
                            "the overview.", links=[("Overview", "/")]), empty_figure(), empty_figure(), None, None,
                None, None, [], tracked or {}, True)
    ia, ib = data.set_info(svc.ctx, a), data.set_info(svc.ctx, b)
    needs = [standard.similarity_need(a, b), standard.agreement_need(a, b),
             standard.cka_need(ia.backbone, ib.backbone, ia.dataset, ia.pooling)]
    labels = {"similarity": "CKA and mutual k-NN", "agreement": "neighbourhood agreement", "cka": "layer-by-layer CKA"}
    out, progress, idle = resolve(svc, "sim", needs, tracked, labels)
    stats = stats_view(out.results.get("similarity"), out.results.get("agreement"))
    cka_fig, cka_data, note = empty_figure("computing…" if "cka" in out.jobs else ""), None, None
    if "cka" in out.results:
        d = out.results["cka"].data
        cka_fig, cka_data = cka_figure(d), figure_data("cka-matrix", [{"tap_a": ta, "tap_b": tb, "cka": d["cka"][i][j]}
                                                                      for i, ta in enumerate(d["taps_a"])
                                                                      for j, tb in enumerate(d["taps_b"])])
        if len(d["taps_a"]) < 2 or len(d["taps_b"]) < 2:
            note = "Only one tap is cached: extract more taps to see the layer-by-layer matrix."
    elif "cka" in out.errors:
        note = out.errors["cka"]
    hist, hist_data, worst = empty_figure("computing…" if "agreement" in out.jobs else ""), None, None
    if "agreement" in out.results:
        ag = out.results["agreement"]
        hist, hist_data = agreement_histogram(ag), figure_data("agreement", _agreement_rows(svc, a, ag))
        worst = worst_view(svc, a, ag)
    elif "agreement" in out.errors:
        worst = error_box(out.errors["agreement"])
    return stats, cka_fig, hist, cka_data, hist_data, worst, note, progress, out.tracked, idle


def stats_view(sim, ag) -> list:
    if sim is None:
        return []
    d = sim.data
    deb = d.get("cka_debiased")
    return [stat("Linear CKA", f"{d['cka']:.3f}", "biased (Kornblith et al.)"),
            stat("Debiased CKA", "—" if deb is None else f"{deb:.3f}", "unbiased HSIC"),
            stat(f"Mutual k-NN (k={d['k']})", f"{d['mutual_knn']:.3f}", "mean share of shared neighbours"),
            stat("Images", f"{d['n']:,}", f"mean agreement {ag.data['mean']:.3f}" if ag is not None else None)]


def cka_figure(d: dict) -> dict:
    z = d["cka"]
    text = [[f"{v:.2f}" if v is not None else "" for v in row] for row in z]
    trace = {"type": "heatmap", "z": z, "x": d["taps_b"], "y": d["taps_a"], "zmin": 0, "zmax": 1, "colorscale": "Viridis",
             "text": text, "texttemplate": "%{text}", "hovertemplate": "A %{y} vs B %{x}: CKA %{z:.3f}<extra></extra>",
             "colorbar": {"thickness": 12}}
    return {"data": [trace], "layout": base_layout(xaxis={"title": {"text": "B tap"}, "type": "category"},
                                                   yaxis={"title": {"text": "A tap", "standoff": 12}, "automargin": True, "type": "category",
                                                          "autorange": "reversed"})}


def agreement_histogram(ag) -> dict:
    per = np.asarray(ag.arrays["per_image"], dtype=float)
    k = ag.data["k"]
    trace = {"type": "histogram", "x": per.tolist(), "xbins": {"start": -0.5 / k, "end": 1 + 0.5 / k, "size": 1 / k},
             "marker": {"color": COLOUR_A, "line": {"color": "white", "width": 1}},
             "hovertemplate": "overlap %{x:.2f}: %{y} images<extra></extra>"}
    mean = float(np.nanmean(per)) if len(per) else 0.0
    layout = base_layout(xaxis={"title": {"text": f"share of the {k} nearest neighbours in common"}, "range": [-0.05, 1.05]},
                         yaxis={"title": {"text": "images"}}, bargap=0.05,
                         shapes=[{"type": "line", "x0": mean, "x1": mean, "y0": 0, "y1": 1, "yref": "paper",
                                  "line": {"color": "#111827", "dash": "dot"}}],
                         annotations=[{"x": mean, "y": 0.98, "yref": "paper", "text": f"mean {mean:.2f}", "showarrow": False,
                                       # inside the plot, beside the line: above it the label ran into the toolbar
                                       "yanchor": "top", "xanchor": "right" if mean > 0.5 else "left",
                                       "bgcolor": "rgba(255,255,255,0.85)", "font": {"size": 12}}])
    return {"data": [trace], "layout": layout}


def _agreement_rows(svc: Services, a: int, ag) -> list[dict]:
    per = ag.arrays["per_image"]
    if len(per) > 20_000:  # the histogram's counts, not one row per image
        counts, edges = np.histogram(per, bins=ag.data["k"] + 1, range=(0, 1))
        return [{"overlap_from": float(edges[i]), "overlap_to": float(edges[i + 1]), "images": int(c)}
                for i, c in enumerate(counts)]
    refs = data.image_refs(svc.ctx, data.dataset_id_of(svc.ctx, a), ag.arrays["positions"])
    return [{**refs.ref(i), "overlap": float(per[i])} for i in range(len(per))]


def worst_view(svc: Services, a: int, ag) -> Any:
    worst = ag.data["worst"]
    if not worst:
        return html.Div("No images.", className="fs-muted")
    refs = data.image_refs(svc.ctx, data.dataset_id_of(svc.ctx, a), [int(ag.arrays["positions"][w["row"]]) for w in worst])
    return thumb_grid([{**refs.ref(i), "caption": f"{w['overlap']:.2f} · {refs.labels[i] or ''}".strip(" ·")}
                       for i, w in enumerate(worst)], size=128)


@callback(Output("sim-extract-msg", "children"), Input("sim-extract", "n_clicks"), State(ab_id("sim", "a"), "value"),
          State(ab_id("sim", "b"), "value"), prevent_initial_call=True)
def extract_taps(svc: Services, _clicks: int, a: int | None, b: int | None):
    """Queue extraction of the study's four taps for A's and B's backbones (the matrix needs them)."""
    from featscope.workspace import NotFound

    infos = [data.set_info(svc.ctx, x) for x in (a, b)]
    if any(i is None for i in infos):
        return html.Span("Pick A and B first.", className="fs-error")
    try:
        for i in infos:
            check_extract(svc.ctx, i.backbone, i.dataset, STUDY_TAPS)
        ids = [svc.submit("extract", {"backbone": i.backbone, "dataset": i.dataset, "taps": STUDY_TAPS,
                                      "poolings": [i.pooling]}).id for i in infos]
    except (ValueError, NotFound) as e:
        return html.Span(str(e.args[0] if e.args else e), className="fs-error")
    return html.Span(f"Queued extraction jobs {', '.join(map(str, ids))}; the matrix fills in when they finish and "
                     f"you reopen this page.", className="fs-ok")
