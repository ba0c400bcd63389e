"""``/detections`` (Fig. 8, Table 3): two detectors fine-tuned on the same data, their boxes side by side on one
test image, the objects each misses (with how occluded they are), and missed-object rates by occlusion level.

The page reads what the runs kept (``detections.json``: every box scoring at least 0.05, the ground truth with
its occlusion) through :mod:`featscope.workspace.detection_errors`; the score threshold only filters and
re-matches those boxes, no network runs. By default each run is shown at its own operating score (0.5; or, when
fewer than N of its boxes score 0.5, N = the test set's objects, its N-th best box score, or its lowest when it
has fewer than N boxes), as the study page
counts Fig. 8 and Table 3; the slider sets one threshold for both instead.
``?a=RUN&b=RUN&image=RELPATH&show=only-b&score=0.5`` opens a given view (a ``score`` sets the one threshold).
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html

from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import COLOUR_A, COLOUR_B, badge, card, empty_state, error_box, page_header
from featscope.frontend.components.results import init_name, missed_by_occlusion, occlusion_table
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, triggered_id
from featscope.workspace import NotFound
from featscope.workspace.detection_errors import OCCLUDED

PAGE = {"path": "/detections", "name": "Detections", "title": "featscope · detections (Fig. 8, Table 3)",
        "order": 87, "nav": True}
MISSED = "#d62728"
TRUTH = "#1f2430"
SHOW = ("all", "only-b", "only-a")
OWN, ONE = "own", "one"  # score modes: each run's operating score, or the slider's one threshold for both


def layout(a: str | None = None, b: str | None = None, image: str | None = None, show: str | None = None,
           score: str | None = None, **_query: Any) -> html.Div:
    try:
        first_score = min(0.95, max(0.05, float(score))) if score else None
    except ValueError:
        first_score = None
    query = {"a": int(a) if a and a.isdigit() else None, "b": int(b) if b and b.isdigit() else None,
             "image": image or None}
    return html.Div([
        page_header("Detections", "Two detectors fine-tuned on the same data (the demo's: from the classification "
                    "backbone, A, and from the detection backbone, B), their boxes on the same test image, and the "
                    "objects each misses: the study finds the detection-pretrained one misses fewer occluded "
                    "objects.", figure="Fig. 8 · Table 3"),
        dcc.Store(id="det-query", data=query),
        html.Div(id="det-empty"),
        html.Div(id="det-body", children=[
            html.Div(className="fs-controls", children=[
                html.Div([html.Label([badge("A"), " detector"], className="fs-label"),
                          dcc.Dropdown(id="det-run-a", clearable=False, style={"minWidth": "330px"})]),
                html.Div([html.Label([badge("B"), " detector"], className="fs-label"),
                          dcc.Dropdown(id="det-run-b", clearable=False, style={"minWidth": "330px"})]),
                html.Div([html.Label("Score threshold", className="fs-label"),
                          dcc.RadioItems(id="det-mode", value=OWN if first_score is None else ONE, inline=True,
                                         className="fs-radio",
                                         options=[{"label": "each run's operating score (as the study page)",
                                                   "value": OWN},
                                                  {"label": "one for both:", "value": ONE}]),
                          dcc.Slider(id="det-score", min=0.05, max=0.95, step=0.05, value=first_score or 0.5,
                                     disabled=first_score is None,
                                     marks={v: f"{v:g}" for v in (0.05, 0.25, 0.5, 0.75, 0.95)},
                                     tooltip={"placement": "bottom"}, className="fs-slider")],
                         style={"width": "360px"}),
            ]),
            html.Div(className="fs-controls", children=[
                html.Div([html.Label("Images", className="fs-label"),
                          dcc.RadioItems(id="det-show", value=show if show in SHOW else "all", className="fs-radio",
                                         inline=True,
                                         options=[{"label": "all", "value": "all"}])]),
                html.Div([html.Label("Image", className="fs-label"), html.Div(className="fs-det-nav", children=[
                    html.Button("‹ Previous", id="det-prev", className="fs-button fs-button-small"),
                    dcc.Dropdown(id="det-image", clearable=False, style={"minWidth": "420px"}),
                    html.Button("Next ›", id="det-next", className="fs-button fs-button-small"),
                ])], style={"flex": "1"}),
            ]),
            html.Div(id="det-status", className="fs-proj-status"),
            html.Div(className="fs-grid-2", children=[
                figure_card("det-fig-a", [badge("A"), html.Span(id="det-name-a")], height=520, className="fs-side-a",
                            extra=html.Div(id="det-sum-a", className="fs-small")),
                figure_card("det-fig-b", [badge("B"), html.Span(id="det-name-b")], height=520, className="fs-side-b",
                            extra=html.Div(id="det-sum-b", className="fs-small")),
            ]),
            legend(),
            card("Missed objects by occlusion (Table 3)", html.Div(id="det-table3", className="fs-table-wrap"),
                 caption="Each run's own count on its whole test set, at IoU 0.5 and the run's operating score: 0.5; "
                         "or, when fewer than N of its boxes score 0.5 (N = the test set's objects), its N-th best "
                         "box score (its lowest, when it has fewer than N boxes), so a weakly trained detector is "
                         "not judged where it finds nothing; a run that stays at 0.5 may keep more than N. The study "
                         "page counts Table 3 and Fig. 8 at these scores (the first score setting above)."),
        ]),
    ])


def legend() -> html.Div:
    def swatch(colour: str, dash: str) -> html.Span:
        return html.Span(className="fs-det-swatch", style={"borderColor": colour, "borderStyle": dash})

    return html.Div(className="fs-legend", children=[
        html.Span([swatch(COLOUR_A, "solid"), "A's boxes (class, score)"], className="fs-legend-item"),
        html.Span([swatch(COLOUR_B, "solid"), "B's boxes"], className="fs-legend-item"),
        html.Span([swatch(TRUTH, "dotted"), "ground truth found"], className="fs-legend-item"),
        html.Span([swatch(MISSED, "dashed"), "ground truth missed (with the share of it hidden)"],
                  className="fs-legend-item"),
    ])


def _describe(run) -> str:
    return f"{run.id} · from {init_name(run)} · {run.result.get('test_images', '?')} test images"


def _default_pair(svc: Services, runs: list, query: dict) -> tuple[int | None, int | None]:
    """The URL's runs, else the demo's two detection fine-tunings, else the two newest runs (older one as A)."""
    from featscope.demo.pipeline import read_manifest

    ids = {r.id for r in runs}
    demo = (read_manifest(svc.settings.data_dir) or {}).get("runs") or {}
    fallback = sorted(ids)[-2:] if len(ids) >= 2 else [None, None]
    a = query.get("a") if query.get("a") in ids else demo.get("finetune-det-cls")
    b = query.get("b") if query.get("b") in ids else demo.get("finetune-det-det")
    return (a if a in ids else fallback[0]), (b if b in ids else fallback[1])


@callback(Output("det-run-a", "options"), Output("det-run-a", "value"), Output("det-run-b", "options"),
          Output("det-run-b", "value"), Output("det-empty", "children"), Output("det-body", "style"),
          Input("det-query", "data"))
def runs(svc: Services, query: dict | None):
    """The finished detection fine-tuning runs to choose from, and the pair to start with."""
    from featscope.workspace.detection_errors import detection_runs

    done = detection_runs(svc.ctx)
    if len(done) < 2:
        return [], None, [], None, empty_state(
            "No two detection fine-tuning runs to compare yet",
            "This page shows two detectors fine-tuned on the same data side by side. Fine-tune one from each "
            "backbone on the same training and test sets (or run the whole study: make demo); their test-set "
            "boxes appear here.",
            commands=["featscope finetune det -b CLS_BACKBONE -d study-target-train --test-dataset study-target-test",
                      "featscope finetune det -b DET_BACKBONE -d study-target-train --test-dataset study-target-test",
                      "make demo      # the whole study, these two runs included"],
            links=[("Runs", "/runs"), ("Study", "/study")]), {"display": "none"}
    options = [{"label": _describe(r), "value": r.id} for r in done]
    a, b = _default_pair(svc, done, query or {})
    return options, a, options, b, None, {}


@callback(Output("det-score", "disabled"), Input("det-mode", "value"), services=False)
def slider_enabled(mode: str | None) -> bool:
    """The slider sets the threshold only in the "one for both" mode."""
    return mode != ONE


def _scores(pair, mode: str | None, score: float | None) -> tuple[float, float]:
    """Run A's and run B's score threshold: each one's operating score, or the slider's for both."""
    if mode == ONE:
        return float(score or 0.5), float(score or 0.5)
    return pair.operating_scores()


def _image_label(image: dict, missed: tuple[list[int], list[int]], only: str | None) -> str:
    occluded = sum(1 for g in image["gt"] if (g.get("occlusion") or 0) >= OCCLUDED)
    tail = f" · only {only} finds an occluded one" if only else ""
    return (f"{image['relpath']} · {len(image['gt'])} objects, {occluded} occluded · missed {len(missed[0])} (A) "
            f"{len(missed[1])} (B){tail}")


@callback(Output("det-image", "options"), Output("det-image", "value"), Output("det-show", "options"),
          Output("det-status", "children"), Input("det-run-a", "value"), Input("det-run-b", "value"),
          Input("det-show", "value"), Input("det-score", "value"), Input("det-mode", "value"),
          Input("det-prev", "n_clicks"), Input("det-next", "n_clicks"), State("det-image", "value"),
          State("det-query", "data"))
def images(svc: Services, a, b, show, score, mode, _prev, _next, current, query):
    """The common test images (all, or Fig. 8's picks: where only one detector finds an occluded object) and the
    one to show; Previous / Next step through them."""
    from featscope.workspace.detection_errors import compare, detection_pair

    if a is None or b is None:
        return [], None, [{"label": "all", "value": "all"}], None
    try:
        pair = detection_pair(svc.ctx, a, b)
    except (NotFound, ValueError) as e:
        return [], None, [{"label": "all", "value": "all"}], error_box(str(e.args[0]) if e.args else str(e))
    score_a, score_b = _scores(pair, mode, score)
    c = compare(*pair.docs, score=score_a, score_b=score_b)
    chosen = {"all": c.relpaths, "only-a": c.only_a, "only-b": c.only_b}[show if show in SHOW else "all"]
    by_path = {im["relpath"]: im for im in pair.docs[0]["images"]}
    tag = {**{p: "A" for p in c.only_a}, **{p: "B" for p in c.only_b}}
    options = [{"label": _image_label(by_path[p], c.missed[p], tag.get(p) if not (p in c.only_a and p in c.only_b)
                                      else "one of them"), "value": p} for p in chosen]
    shows = [{"label": f"all common test images ({len(c.relpaths)})", "value": "all"},
             {"label": f"only B finds an occluded object ({len(c.only_b)})", "value": "only-b"},
             {"label": f"only A finds an occluded object ({len(c.only_a)})", "value": "only-a"}]
    if not chosen:
        if not c.relpaths:
            why = "The two runs share no test image: choose two runs tested on the same data set."
        elif mode == ONE:
            why = "No image of this kind at this score threshold; show all images, or move the threshold."
        else:
            why = ("No image of this kind at the runs' operating scores; show all images, or choose one threshold "
                   "for both and move it.")
        return [], None, shows, html.Div(why, className="fs-muted")
    current = current if current in chosen else ((query or {}).get("image") if (query or {}).get("image") in chosen
                                                 else chosen[0])
    step = {"det-prev": -1, "det-next": 1}.get(triggered_id(), 0)
    current = chosen[(chosen.index(current) + step) % len(chosen)]
    at = (f"at score >= {c.score:.3g}" if mode == ONE else
          f"at each run's operating score (A >= {c.score:.3g}, B >= {c.score_b:.3g})")
    status = (f"Image {chosen.index(current) + 1} of {len(chosen)} · {len(c.relpaths)} common test images; "
              f"{at}, only B finds an occluded object in {len(c.only_b)}, only A in {len(c.only_a)}")
    return options, current, shows, status


def boxes_figure(uri: str, width: int, height: int, image: dict, matched: list[int], score: float,
                 colour: str) -> dict:
    """The image with the ground truth (dotted when found, dashed red with its occlusion when missed) and this
    detector's boxes scoring at least ``score`` (its colour, class and score on each)."""
    shapes, notes, missed_notes, hover = [], [], [], {"x": [], "y": [], "text": []}
    used = {k for k in matched if k >= 0}

    def label(x: float, y: float, text: str, bg: str, above: bool) -> None:
        (notes if above else missed_notes).append(
            {"x": x, "y": y, "xref": "x", "yref": "y", "text": text, "showarrow": False, "xanchor": "left",
             "yanchor": "bottom" if above else "top", "font": {"size": 11, "color": "white"}, "bgcolor": bg,
             "borderpad": 1, "opacity": 0.92})

    for k, g in enumerate(image["gt"]):
        x0, y0, x1, y1 = g["box"]
        occ = g.get("occlusion")
        occ_text = "occlusion unknown" if occ is None else f"{100 * occ:.0f}% hidden"
        found = matched[k] >= 0
        shapes.append({"type": "rect", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "xref": "x", "yref": "y",
                       "line": {"color": TRUTH if found else MISSED, "width": 1.5 if found else 2.5,
                                "dash": "dot" if found else "dash"}})
        if not found:
            label(x0, y1, f"missed {g['label']} · {occ_text}", MISSED, above=False)
        hover["x"].append((x0 + x1) / 2)
        hover["y"].append((y0 + y1) / 2)
        hover["text"].append(f"ground truth {g['label']} · {occ_text} · {'found' if found else 'missed'}")
    for k, p in enumerate(image["pred"]):
        if p["score"] < score:
            continue
        x0, y0, x1, y1 = p["box"]
        shapes.append({"type": "rect", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "xref": "x", "yref": "y",
                       "line": {"color": colour, "width": 2}})
        label(x0, y0, f"{p['label']} {p['score']:.2f}", colour, above=True)
        hover["x"].append((x0 + x1) / 2)
        hover["y"].append((y0 + y1) / 2)
        hover["text"].append(f"{p['label']} {p['score']:.3f} · {'matches an object' if k in used else 'no match'}")
    trace = {"type": "scatter", "mode": "markers", **hover, "marker": {"size": 14, "opacity": 0},
             "hovertemplate": "%{text}<extra></extra>", "showlegend": False}
    # the missed objects' labels last, so no box label hides them
    layout = base_layout(margin={"l": 4, "r": 4, "t": 4, "b": 4}, shapes=shapes, annotations=notes + missed_notes,
                         xaxis={"visible": False, "range": [0, width], "constrain": "domain"},
                         yaxis={"visible": False, "range": [height, 0], "scaleanchor": "x", "constrain": "domain"},
                         images=[{"source": uri, "xref": "x", "yref": "y", "x": 0, "y": 0, "sizex": width,
                                  "sizey": height, "sizing": "stretch", "layer": "below"}])
    return {"data": [trace], "layout": layout}


def box_rows(image: dict, matched: list[int], score: float) -> list[dict]:
    """The figure's data: every ground-truth object and every box at or above ``score``."""
    rows = [{"kind": "ground truth", "label": g["label"], "x0": g["box"][0], "y0": g["box"][1], "x1": g["box"][2],
             "y1": g["box"][3], "occlusion": g.get("occlusion"), "found": matched[k] >= 0, "score": None}
            for k, g in enumerate(image["gt"])]
    rows += [{"kind": "prediction", "label": p["label"], "x0": p["box"][0], "y0": p["box"][1], "x1": p["box"][2],
              "y1": p["box"][3], "occlusion": None, "found": None, "score": p["score"]}
             for p in image["pred"] if p["score"] >= score]
    return rows


def _summary(image: dict, matched: list[int], score: float) -> str:
    kept = sum(1 for p in image["pred"] if p["score"] >= score)
    missed = [g for g, m in zip(image["gt"], matched) if m < 0]
    occluded = sum(1 for g in missed if (g.get("occlusion") or 0) >= OCCLUDED)
    return (f"{kept} boxes at score >= {score:.3g}; missed {len(missed)} of {len(image['gt'])} objects"
            f"{f' ({occluded} of them occluded)' if missed else ''}")


@callback(Output("det-fig-a", "figure"), Output({"type": "fs-figdata", "fig": "det-fig-a"}, "data"),
          Output("det-fig-b", "figure"), Output({"type": "fs-figdata", "fig": "det-fig-b"}, "data"),
          Output("det-sum-a", "children"), Output("det-sum-b", "children"), Output("det-name-a", "children"),
          Output("det-name-b", "children"), Input("det-run-a", "value"), Input("det-run-b", "value"),
          Input("det-image", "value"), Input("det-score", "value"), Input("det-mode", "value"))
def draw(svc: Services, a, b, relpath, score, mode):
    """Both detectors' boxes on the chosen image, with what each finds and misses at this threshold."""
    from featscope.frontend.components.maps import image_uri
    from featscope.workspace.detection_errors import detection_pair, matches
    from featscope.workspace.maps import resolve_image

    blank = empty_figure("Choose two detection fine-tuning runs and an image")
    if a is None or b is None or not relpath:
        return blank, None, blank, None, None, None, None, None
    try:
        pair = detection_pair(svc.ctx, a, b)
        image_id = pair.image_ids[0].get(relpath)
        if image_id is None:
            raise NotFound(f"image {relpath!r} of run {a}'s test set is no longer in the catalog")
        path, _, _ = resolve_image(svc.ctx, image_id)
        uri, (w, h) = image_uri(path)
    except (NotFound, ValueError, OSError) as e:
        msg = empty_figure(str(e.args[0]) if e.args else str(e))
        return msg, None, msg, None, None, None, None, None
    out: list[Any] = []
    sums, names = [], []
    thresholds = _scores(pair, mode, score)
    for run, doc, colour, at in zip(pair.runs, pair.docs, (COLOUR_A, COLOUR_B), thresholds):
        image = next((im for im in doc["images"] if im["relpath"] == relpath), None)
        if image is None:
            out += [empty_figure(f"run {run.id} has no test image {relpath}"), None]
            sums.append(None)
        else:
            found = matches(image, score=at)
            out += [boxes_figure(uri, image.get("width") or w, image.get("height") or h, image, found, at, colour),
                    figure_data(f"detections-run{run.id}", box_rows(image, found, at), run=run.id, image=relpath,
                                score=at)]
            sums.append(_summary(image, found, at))
        names.append(f" fine-tuned from {init_name(run)} (run {run.id})")
    return (*out, *sums, *names)


@callback(Output("det-table3", "children"), Input("det-run-a", "value"), Input("det-run-b", "value"))
def table3(svc: Services, a, b):
    """Table 3 of the two runs at their operating scores (from their ``detections.json``, else their evaluation)."""
    columns = []
    for role, ident in (("A", a), ("B", b)):
        if ident is None:
            continue
        try:
            run = svc.ws.run(ident)
        except NotFound:
            continue
        res = missed_by_occlusion(run)
        if res:
            columns.append((f"{role} · from {init_name(run)}", res))
    return occlusion_table(columns, "det-table3-table")
