"""``/projections`` (Fig. 7): maps of A and B side by side (B Procrustes-aligned onto A), linked selection.

A lasso or box in one map highlights the same images in the other and lists them. Up to
:data:`~featscope.frontend.raster.RASTER_ABOVE` points the maps are WebGL scatters and the link runs in the
browser (``linkMaps`` in ``assets/featscope.js``); above it they are datashader rasters with a sampled
overlay, and a selection is applied on the server to every point.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from dash import Input, Output, Patch, State, dcc, html, no_update

from featscope.frontend import data, raster, standard
from featscope.frontend.components.figures import download_bar, empty_figure, graph_config
from featscope.frontend.components.layout import COLOUR_A, COLOUR_B, badge, card, empty_state, error_box, page_header
from featscope.frontend.components.pickers import ab_id, as_id, comparison_bar
from featscope.frontend.components.progress import job_area, resolve, retry_input
from featscope.frontend.components.thumbs import thumb_grid
from featscope.frontend.scatter import Colouring, legend_items, map_figure, raster_figure
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, clientside, layout_services, triggered_id
from featscope.workspace.analyses import AnalysisResult

log = logging.getLogger(__name__)
PAGE = {"path": "/projections", "name": "Projections", "title": "featscope · projections (Fig. 7)", "order": 30,
        "nav": True, "pair": True}
GRID_MAX = 60


def layout(a: str | None = None, b: str | None = None, **_query: Any) -> html.Div:
    first = first_render(layout_services(), a, b)
    return html.Div([
        page_header("Projections", "The same images mapped from A's space and from B's (B rotated and scaled onto "
                    "A). Lasso or box-select points in one map to see where those images land in the other; hover a "
                    "point for its image.", figure="Fig. 7"),
        comparison_bar("proj", a, b),
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Method", className="fs-label"),
                      dcc.RadioItems(id="proj-method", value="tsne", inline=True, className="fs-radio", options=[
                          {"label": "t-SNE", "value": "tsne"}, {"label": "UMAP", "value": "umap"},
                          {"label": "PCA", "value": "pca"}])]),
            html.Div([html.Label("Colour by", className="fs-label"),
                      dcc.RadioItems(id="proj-colour", value="class", inline=True, className="fs-radio", options=[
                          {"label": "class", "value": "class"},
                          {"label": "neighbourhood agreement (k-NN overlap of A and B)", "value": "agreement"}])]),
            html.Div(download_bar("proj-data", image=False), className="fs-control-right"),
        ]),
        job_area("proj"),
        html.Div(first.get("status"), id="proj-status", className="fs-proj-status"),
        html.Div(className="fs-grid-2", children=[_map_card("A", first), _map_card("B", first)]),
        html.Div(first.get("legend"), id="proj-legend", className="fs-legend"),
        card("Selected images", html.Div(id="proj-grid"), id="proj-selection-card",
             caption="Lasso or box-select in either map (the modebar switches between them); click a map to clear."),
        dcc.Store(id="proj-mode", data=first.get("mode")), dcc.Store(id="proj-meta", data=first.get("meta")),
        dcc.Store(id="proj-selection"),
        dcc.Store(id="proj-raster-select"), dcc.Download(id="proj-download"),
        html.Div(id="proj-link-sink", hidden=True),
    ])


def _map_card(role: str, first: dict) -> html.Section:
    fig_id = f"proj-{role.lower()}"
    graph = dcc.Graph(id=fig_id, figure=first.get(f"figure_{role}") or empty_figure(), config=map_config(role),
                      clear_on_unhover=True, style={"height": "560px"})
    tip = dcc.Tooltip(id=f"{fig_id}-tip", children=html.Div([html.Img(id=f"{fig_id}-tip-img"),
                                                             html.Div(id=f"{fig_id}-tip-caption")],
                                                            className="fs-hover-card"), direction="right")
    return card([badge(role), html.Span(id=f"{fig_id}-title", children=first.get(f"title_{role}", f" map {role}"))],
                html.Div([graph, tip], style={"position": "relative"}), id=f"{fig_id}-card",
                actions=_image_bar(fig_id), className=f"fs-side-{role.lower()}")


def map_config(role: str) -> dict[str, Any]:
    """The maps' Plotly config. WebGL at the page's own pixel size (Plotly draws WebGL at twice it by default):
    a quarter of the pixels to draw and composite, which took the first draw of two 100k-point maps from about
    1.5 to 1.2 s in headless Chromium's software GL; points 2-3 px wide gain nothing from the supersampling."""
    return {**graph_config(f"projection-{role}"), "scrollZoom": True, "plotGlPixelRatio": 1}


def _image_bar(fig_id: str) -> html.Div:
    return html.Div([html.Span("Download", className="fs-dl-label"),
                     *[html.Button(fmt.upper(), id={"type": "fs-dl-img", "fig": fig_id, "fmt": fmt},
                                   className="fs-button fs-button-ghost fs-button-small") for fmt in ("png", "svg")]],
                    className="fs-dl-bar")


def needs_for(svc: Services, a: int, b: int, method: str, colour: str):
    n = min(data.set_info(svc.ctx, a).n, data.set_info(svc.ctx, b).n)
    needs = [standard.projection_need(a, b, n, method)]
    if colour == "agreement":
        needs.append(standard.agreement_need(a, b))
    return needs


@callback(Output("proj-a", "figure"), Output("proj-b", "figure"), Output("proj-status", "children"),
          Output("proj-legend", "children"), Output("proj-mode", "data"), Output("proj-meta", "data"),
          Output("proj-a-title", "children"), Output("proj-b-title", "children"),
          Output("proj-progress", "children"), Output("proj-tracked", "data"), Output("proj-poll", "disabled"),
          Input(ab_id("proj", "a"), "value"), Input(ab_id("proj", "b"), "value"), Input("proj-method", "value"),
          Input("proj-colour", "value"), Input("proj-poll", "n_intervals"), retry_input("proj"),
          State("proj-tracked", "data"), State("proj-meta", "data"))
def show(svc: Services, a: int | None, b: int | None, method: str, colour: str, _tick: Any, _retry: Any,
         tracked: dict | None, shown: dict | None = None):
    """Both maps (WebGL or raster by size), from the cached projection or the job computing it. Maps already
    on the page (``shown``: the first render's, or a previous answer's) are not sent again: a poll tick while
    another job runs neither re-plots them nor drops a selection."""
    titles = (" map A", " map B")
    if not data.valid_pair(svc.ctx, a, b):
        msg = empty_state("Pick two embedding sets of one data set", "Choose A and B above, or run a Compare on the "
                          "overview.", links=[("Overview", "/")])
        return (empty_figure(), empty_figure(), msg, None, None, None, *titles, [], tracked or {}, True)
    labels = {"projection": f"{method} projection of A and B", "agreement": "neighbourhood agreement"}
    out, progress, idle = resolve(svc, "proj", needs_for(svc, a, b, method, colour), tracked, labels)
    if "projection" not in out.results or (colour == "agreement" and "agreement" not in out.results):
        msg = error_box(next(iter(out.errors.values()))) if out.errors else \
            html.Span("Computing the maps in the background; they appear here when the job is done.")
        return (empty_figure(), empty_figure(), msg, None, None, None, *titles, progress, out.tracked, idle)
    meta = _meta(out.results["projection"], out.results.get("agreement"), a, b, colour)
    if meta == shown:  # the mode goes out again: linkMaps waits on this callback, and no_update would skip it
        return (*[no_update] * 4, _mode(meta["n"]), *[no_update] * 3, progress, out.tracked, idle)
    view = maps_view(svc, out.results["projection"], out.results.get("agreement"), a, b, colour, meta)
    return (view["figure_A"], view["figure_B"], view["status"], view["legend"], view["mode"], meta, view["title_A"],
            view["title_B"], progress, out.tracked, idle)


def _meta(proj: AnalysisResult, agreement: AnalysisResult | None, a: int, b: int, colour: str) -> dict:
    """What the maps show: the page's link to its projection, and the key telling whether they are on the page."""
    # an analysis recomputed (force) keeps its catalog id: its compute time tells the new result from the old
    meta = {"analysis": proj.id, "a": a, "b": b, "colour": colour, "n": len(proj.arrays["coords_0"]),
            "computed": proj.seconds}
    if colour == "agreement" and agreement is not None:
        meta["agreement"] = [agreement.id, agreement.seconds]
    return meta


def maps_view(svc: Services, proj: AnalysisResult, agreement: AnalysisResult | None, a: int, b: int, colour: str,
              meta: dict) -> dict:
    figs, status, legend, mode = build_maps(svc, proj, agreement, colour)
    ia, ib = data.set_info(svc.ctx, a), data.set_info(svc.ctx, b)
    return {"figure_A": figs[0], "figure_B": figs[1], "status": status, "legend": legend, "mode": mode, "meta": meta,
            "title_A": f" {ia.backbone} · {data.tap_label(ia.tap)}/{ia.pooling}",
            "title_B": f" {ib.backbone} · {data.tap_label(ib.tap)}/{ib.pooling}"}


def first_render(svc: Services | None, a: Any, b: Any, method: str = "tsne", colour: str = "class") -> dict:
    """The maps of a linked pair (``?a=&b=``) whose projection is cached, for the page's first render; ``{}``
    otherwise (the ``show`` callback then fetches or computes them). Cached results appear at once: the maps
    arrive with the page instead of one more round trip after it, and the callback's first run, seeing them
    on the page, sends nothing."""
    a, b = as_id(a), as_id(b)
    if svc is None or a is None or b is None or not data.valid_pair(svc.ctx, a, b):
        return {}
    from featscope.frontend.services import cached_analysis
    from featscope.workspace import NotFound
    from featscope.workspace.analyses import NotCached

    try:
        proj = next(cached_analysis(svc, need) for need in needs_for(svc, a, b, method, colour))
        return maps_view(svc, proj, None, a, b, colour, _meta(proj, None, a, b, colour))
    except (NotCached, ValueError, NotFound):
        return {}
    except Exception:  # noqa: BLE001 - the page must render; the show callback then reports what failed
        log.exception("projections: the first render of a=%s b=%s failed; leaving the maps to the callback", a, b)
        return {}


def colouring_for(svc: Services, proj: AnalysisResult, agreement: AnalysisResult | None, colour: str):
    ds_id = data.dataset_id_of(svc.ctx, proj.inputs[0])
    table = data.point_table(svc.ctx, ds_id, proj.arrays["positions"])
    if colour == "agreement" and agreement is not None:
        values = _aligned(agreement.arrays["per_image"], agreement.arrays["positions"], proj.arrays["positions"])
        return table, Colouring("agreement", values=values.astype(np.float32))
    return table, Colouring("class", codes=table.codes, classes=tuple(table.classes))


def _aligned(values: np.ndarray, positions: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``values`` (per row of ``positions``) in the row order of ``target`` (both are sorted data set positions)."""
    if len(positions) == len(target) and np.array_equal(positions, target):
        return values
    at = np.searchsorted(positions, target)
    at = np.minimum(at, len(positions) - 1)
    return np.where(positions[at] == target, values[at], np.nan)


def _mode(n: int) -> str:
    """How maps of ``n`` points are drawn: every point in WebGL, or a server raster with a sampled overlay."""
    return "webgl" if n <= raster.RASTER_ABOVE else "raster"


def build_maps(svc: Services, proj: AnalysisResult, agreement: AnalysisResult | None, colour: str):
    ca, cb = proj.arrays["coords_0"], proj.arrays["coords_1"]
    table, colouring = colouring_for(svc, proj, agreement, colour)
    n = len(ca)
    method = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}[proj.params["method"]]
    mode = _mode(n)
    if mode == "webgl":
        figs = (map_figure(ca, table.ids, colouring, "A", COLOUR_A), map_figure(cb, table.ids, colouring, "B", COLOUR_B))
        status = f"{n:,} images · {method} · WebGL: every point drawn in the browser"
    else:
        from concurrent.futures import ThreadPoolExecutor

        sample = raster.sample_rows(n)
        with ThreadPoolExecutor(2) as pool:  # datashader, numpy and PNG encoding release the GIL
            futures = [pool.submit(raster_figure, c, table.ids, colouring, role, col, raster.Frame.of(c), sample)
                       for c, role, col in ((ca, "A", COLOUR_A), (cb, "B", COLOUR_B))]
            figs = tuple(f.result() for f in futures)
        status = (f"{n:,} images · {method} · drawn on the server (datashader); hover and lasso use a "
                  f"{len(sample):,}-point sample, and a selection is applied to all {n:,} points")
    legend = [html.Span([html.Span(className="fs-legend-swatch", style={"background": c}), name],
                        className="fs-legend-item") for c, name in legend_items(colouring, n)]
    return figs, status, legend, mode


CLIENTSIDE = [
    # links the maps (Plotly listeners); they set proj-selection (WebGL) or proj-raster-select (raster)
    clientside("linkMaps", Output("proj-link-sink", "title"), Input("proj-mode", "data")),
    clientside("hoverThumb", Output("proj-a-tip", "show"), Output("proj-a-tip", "bbox"),
               Output("proj-a-tip-img", "src"), Output("proj-a-tip-caption", "children"),
               Output("proj-b-tip", "show"), Output("proj-b-tip", "bbox"),
               Output("proj-b-tip-img", "src"), Output("proj-b-tip-caption", "children"),
               Input("proj-a", "hoverData"), Input("proj-b", "hoverData"), prevent_initial_call=True),
]


@callback(Output("proj-a", "figure", allow_duplicate=True), Output("proj-b", "figure", allow_duplicate=True),
          Output("proj-selection", "data"), Input("proj-raster-select", "data"),
          State("proj-meta", "data"), prevent_initial_call=True)
def raster_select(svc: Services, request: dict | None, meta: dict | None):
    """Raster maps: apply a lasso or box to every point and draw the selection over both maps."""
    if not meta or not request:
        return no_update, no_update, no_update
    proj = _projection(svc, meta)
    ca, cb = proj.arrays["coords_0"], proj.arrays["coords_1"]
    mask = raster.selection_mask(ca if request.get("from") == "A" else cb, request.get("selected"))
    patches = []
    for coords in (ca, cb):
        p = Patch()
        p["layout"]["images"][1]["source"] = raster.NOTHING if mask is None or not mask.any() else \
            raster.render_mask(coords, mask, raster.Frame.of(coords))
        patches.append(p)
    if mask is None:
        return patches[0], patches[1], {"count": 0, "rows": [], "from": request.get("from")}
    rows = np.flatnonzero(mask)
    return patches[0], patches[1], {"count": int(len(rows)), "rows": rows[:GRID_MAX].tolist(), "from": request.get("from")}


def _projection(svc: Services, meta: dict) -> AnalysisResult:
    """The projection the page shows (its parameters from the catalog row, so the cache key is the same)."""
    from featscope.frontend.services import Need, cached_analysis
    from featscope.workspace.analyses import get_analysis

    params = dict(get_analysis(svc.ctx, meta["analysis"]).params)
    return cached_analysis(svc, Need("projection", "projection", [meta["a"], meta["b"]], params))


@callback(Output("proj-grid", "children"), Input("proj-selection", "data"), State("proj-meta", "data"))
def selection_grid(svc: Services, selection: dict | None, meta: dict | None):
    """Thumbnails of the selected images (the first :data:`GRID_MAX`), with the count."""
    if not selection or not meta or not (selection.get("count") or selection.get("indices")):
        return html.Div("Nothing selected: lasso or box-select points in map A or B.", className="fs-muted")
    count = int(selection.get("count") or selection.get("indices") or 0)
    if selection.get("image_ids") is not None:  # WebGL: the browser sent the ids of the selected points
        ids = [int(i) for i in selection["image_ids"][:GRID_MAX]]
    else:
        proj = _projection(svc, meta)
        ds_id = data.dataset_id_of(svc.ctx, meta["a"])
        table = data.point_table(svc.ctx, ds_id, proj.arrays["positions"])
        ids = [int(table.ids[r]) for r in selection.get("rows", [])]
    refs = data.image_refs_by_id(svc.ctx, ids)
    head = html.Div([html.Strong(f"{count:,} image{'s' if count != 1 else ''}"),
                     f" selected in {selection.get('from', 'A')}, highlighted in "
                     f"{'B' if selection.get('from', 'A') == 'A' else 'A'}",
                     html.Span(f" · showing the first {min(count, GRID_MAX)}" if count > GRID_MAX else "",
                               className="fs-muted")], className="fs-selection-head", id="proj-selection-count")
    return [head, thumb_grid([{"image_id": i, "label": refs.get(i, {}).get("label"),
                               "relpath": refs.get(i, {}).get("relpath")} for i in ids], size=128)]


@callback(Output("proj-download", "data"), Input({"type": "fs-dl-data", "fig": "proj-data", "fmt": "csv"}, "n_clicks"),
          Input({"type": "fs-dl-data", "fig": "proj-data", "fmt": "json"}, "n_clicks"), State("proj-meta", "data"),
          prevent_initial_call=True)
def download(svc: Services, csv_clicks: int | None, json_clicks: int | None, meta: dict | None):
    """Both maps' coordinates with each image's id, path and label (and agreement when shown)."""
    if not meta:
        return no_update
    trig = triggered_id()
    fmt = trig["fmt"] if isinstance(trig, dict) else "csv"
    return dcc.send_string(projection_table(svc, meta, fmt), f"projection-{meta['a']}-{meta['b']}.{fmt}")


def projection_table(svc: Services, meta: dict, fmt: str) -> str:
    import pandas as pd

    proj = _projection(svc, meta)
    ds_id = data.dataset_id_of(svc.ctx, meta["a"])
    refs = data.image_refs(svc.ctx, ds_id, proj.arrays["positions"])
    ca, cb = proj.arrays["coords_0"], proj.arrays["coords_1"]
    df = pd.DataFrame({"image_id": refs.ids, "relpath": refs.relpaths, "label": refs.labels, "a_x": ca[:, 0],
                       "a_y": ca[:, 1], "b_x": cb[:, 0], "b_y": cb[:, 1]})
    return df.to_csv(index=False) if fmt == "csv" else df.to_json(orient="records")
