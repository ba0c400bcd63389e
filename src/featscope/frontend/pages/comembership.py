"""``/comembership`` (Fig. 6): P(same cluster in B | same in A) and the converse against K, over K-means seeds."""

from __future__ import annotations

import math
from typing import Any

from dash import Input, Output, State, dcc, html

from featscope.frontend import data, standard
from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import COLOUR_A, COLOUR_B, empty_state, error_box, page_header, stat
from featscope.frontend.components.pickers import ab_id, comparison_bar
from featscope.frontend.components.progress import job_area, resolve, retry_input
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback

PAGE = {"path": "/comembership", "name": "Co-membership", "title": "featscope · co-membership (Fig. 6)",
        "order": 20, "nav": True, "pair": True}
DEFAULTS = {"k_min": 2, "k_max": 1000, "n_k": 20, "seeds": "0, 1, 2"}


def layout(a: str | None = None, b: str | None = None, **_query: Any) -> html.Div:
    return html.Div([
        page_header("K-means co-membership", "Cluster both spaces with K-means at many K. If two images share a "
                    "cluster in A, how often do they share one in B, and the converse? Curves near 1 mean B keeps "
                    "A's groupings at that granularity.", figure="Fig. 6"),
        comparison_bar("cm", a, b),
        html.Div(className="fs-controls", children=[
            _num("Smallest K", "cm-kmin", DEFAULTS["k_min"], 2), _num("Largest K", "cm-kmax", DEFAULTS["k_max"], 2),
            _num("K values (log-spaced)", "cm-nk", DEFAULTS["n_k"], 1),
            html.Div([html.Label("K-means seeds", className="fs-label"),
                      dcc.Input(id="cm-seeds", type="text", value=DEFAULTS["seeds"], className="fs-input",
                                style={"width": "140px"})]),
            html.Button("Update", id="cm-go", className="fs-button fs-button-primary"),
            html.Div(id="cm-form-msg", className="fs-form-msg fs-error"),
        ]),
        job_area("cm"),
        html.Div(id="cm-stats", className="fs-stats"),
        figure_card("cm-fig", "Co-membership against K",
                    caption="Mean over seeds with a band of ± one standard deviation; K on a log axis. The grid "
                            "is clipped to the number of images.", height=460),
        figure_card("cm-agree", "Cluster agreement against K",
                    caption="Adjusted Rand index, normalised mutual information and Fowlkes-Mallows of the two "
                            "clusterings at each K.", height=360),
    ])


def _num(label: str, id_: str, value: int, minimum: int) -> html.Div:
    return html.Div([html.Label(label, className="fs-label"),
                     dcc.Input(id=id_, type="number", value=value, min=minimum, step=1, className="fs-input",
                               style={"width": "120px"})])


def parse_params(k_min: Any, k_max: Any, n_k: Any, seeds: str | None) -> dict:
    """The request's parameters from the controls (``ValueError`` says what to fix); defaults give ``{}``."""
    try:
        seed_list = [int(s) for s in (seeds or "").replace(",", " ").split()]
    except ValueError:
        raise ValueError("seeds must be whole numbers separated by commas, e.g. 0, 1, 2") from None
    if not seed_list:
        raise ValueError("give at least one K-means seed")
    if len(seed_list) > 20:
        raise ValueError("at most 20 seeds")
    given = lambda v, default: default if v in (None, "") else int(v)  # noqa: E731
    params = {"k_min": given(k_min, 2), "k_max": given(k_max, 1000), "n_k": given(n_k, 20), "seeds": seed_list}
    if params["k_min"] < 2 or params["k_max"] < params["k_min"]:
        raise ValueError("K must start at 2 or more and the largest K must not be below the smallest")
    if not 1 <= params["n_k"] <= 100:
        raise ValueError("between 1 and 100 K values")
    if params == {"k_min": 2, "k_max": 1000, "n_k": 20, "seeds": [0, 1, 2]}:
        return {}
    return params


@callback(Output("cm-fig", "figure"), Output("cm-agree", "figure"),
          Output({"type": "fs-figdata", "fig": "cm-fig"}, "data"), Output({"type": "fs-figdata", "fig": "cm-agree"}, "data"),
          Output("cm-stats", "children"), Output("cm-form-msg", "children"),
          Output("cm-progress", "children"), Output("cm-tracked", "data"), Output("cm-poll", "disabled"),
          Input(ab_id("cm", "a"), "value"), Input(ab_id("cm", "b"), "value"), Input("cm-go", "n_clicks"),
          Input("cm-poll", "n_intervals"), retry_input("cm"),
          State("cm-kmin", "value"), State("cm-kmax", "value"), State("cm-nk", "value"), State("cm-seeds", "value"),
          State("cm-tracked", "data"))
def show(svc: Services, a: int | None, b: int | None, _go: Any, _tick: Any, _retry: Any, k_min: Any, k_max: Any,
         n_k: Any, seeds: str | None, tracked: dict | None):
    """The curves of the chosen pair and K grid, from the cache or the job computing them."""
    blank = empty_figure()
    if not data.valid_pair(svc.ctx, a, b):
        return (empty_figure("Pick two embedding sets of one data set above"), blank, None, None,
                empty_state("Nothing to compare yet", "Pick A and B above, or run a Compare on the overview.",
                            links=[("Overview", "/")]), "", [], tracked or {}, True)
    try:
        params = parse_params(k_min, k_max, n_k, seeds)
    except ValueError as e:
        return blank, blank, None, None, None, str(e), [], tracked or {}, True
    out, progress, idle = resolve(svc, "cm", [standard.comembership_need(a, b, params)], tracked,
                                  {"comembership": "co-membership curves"})
    if "comembership" not in out.results:
        err = out.errors.get("comembership")
        return (empty_figure("Computing…" if not err else ""), blank, None, None,
                error_box(err) if err else None, "", progress, out.tracked, idle)
    d = out.results["comembership"].data
    return (curve_figure(d), agreement_figure(d), figure_data("comembership", curve_rows(d), a=a, b=b),
            figure_data("cluster-agreement", curve_rows(d), a=a, b=b), summary(d), "", progress, out.tracked, idle)


def _band(x: list, mean: list, std: list, colour: str, name: str) -> list[dict]:
    upper = [None if m is None or s is None else m + s for m, s in zip(mean, std)]
    lower = [None if m is None or s is None else m - s for m, s in zip(mean, std)]
    fill = _rgba(colour, 0.15)
    return [{"type": "scatter", "x": x, "y": upper, "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip",
             "showlegend": False, "legendgroup": name},
            {"type": "scatter", "x": x, "y": lower, "mode": "lines", "line": {"width": 0}, "fill": "tonexty",
             "fillcolor": fill, "hoverinfo": "skip", "showlegend": False, "legendgroup": name},
            {"type": "scatter", "x": x, "y": mean, "mode": "lines+markers", "name": name, "legendgroup": name,
             "line": {"color": colour, "width": 2.5}, "marker": {"size": 6},
             "hovertemplate": "K=%{x}<br>%{y:.3f}<extra>" + name + "</extra>"}]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def curve_figure(d: dict) -> dict:
    ks = d["ks"]
    traces = (_band(ks, d["mean"]["a_to_b"], d["std"]["a_to_b"], COLOUR_A, "P(same in B | same in A)")
              + _band(ks, d["mean"]["b_to_a"], d["std"]["b_to_a"], COLOUR_B, "P(same in A | same in B)"))
    return {"data": traces, "layout": base_layout(
        xaxis={"type": "log", "title": {"text": "K (number of clusters)"}},
        yaxis={"title": {"text": "probability"}, "range": [0, 1.02]}, hovermode="x unified")}


def agreement_figure(d: dict) -> dict:
    ks = d["ks"]
    names = {"ari": "adjusted Rand index", "nmi": "normalised mutual information", "fowlkes_mallows": "Fowlkes-Mallows"}
    colours = {"ari": "#009E73", "nmi": "#CC79A7", "fowlkes_mallows": "#E69F00"}
    traces = [t for m in names for t in _band(ks, d["mean"][m], d["std"][m], colours[m], names[m])]
    return {"data": traces, "layout": base_layout(xaxis={"type": "log", "title": {"text": "K (number of clusters)"}},
                                                  yaxis={"title": {"text": "score"}}, hovermode="x unified")}


def curve_rows(d: dict) -> list[dict]:
    rows = []
    for i, k in enumerate(d["ks"]):
        row: dict[str, Any] = {"k": k}
        for m in d["metrics"]:
            row[f"{m}_mean"], row[f"{m}_std"] = d["mean"][m][i], d["std"][m][i]
        rows.append(row)
    return rows


def summary(d: dict) -> list:
    ks, ab, ba = d["ks"], d["mean"]["a_to_b"], d["mean"]["b_to_a"]
    mid = min(range(len(ks)), key=lambda i: abs(math.log(ks[i]) - math.log(max(2, math.sqrt(ks[0] * ks[-1])))))
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    sample = f"centroids from {d['sample']:,} images" if d.get("sample") else "K-means on every image"
    return [stat("Images", f"{d['n']:,}", sample), stat(f"P(B | A) at K={ks[mid]}", fmt(ab[mid])),
            stat(f"P(A | B) at K={ks[mid]}", fmt(ba[mid])),
            stat("Seeds", len(d["seeds"]), f"K from {ks[0]} to {ks[-1]} ({len(ks)} values)")]
