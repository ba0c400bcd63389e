"""``/pairs`` (Fig. 3): the closest image pairs in A, pairs close in A but distant in B, the closest in B."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html

from featscope.frontend import data, standard
from featscope.frontend.components.figures import download_bar, figure_data
from featscope.frontend.components.layout import badge, card, empty_state, error_box, page_header
from featscope.frontend.components.pickers import ab_id, comparison_bar
from featscope.frontend.components.progress import job_area, resolve, retry_input
from featscope.frontend.components.thumbs import pair_tile
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback

PAGE = {"path": "/pairs", "name": "Pairs", "title": "featscope · pairs (Fig. 3)", "order": 10, "nav": True,
        "pair": True}
COLUMNS = ("closest-a", "contrast", "closest-b")


def layout(a: str | None = None, b: str | None = None, **_query: Any) -> html.Div:
    return html.Div([
        page_header("Nearest-neighbour pairs", "Which images does each backbone think are alike? The middle column "
                    "holds the pairs A puts together and B pulls apart: what one pre-training encodes and the "
                    "other ignores. Click an image to open its maps.", figure="Fig. 3"),
        comparison_bar("pairs", a, b),
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Close in A, distant in B by", className="fs-label"),
                      dcc.RadioItems(id="pairs-definition", value="ranks", inline=True, className="fs-radio", options=[
                          {"label": "neighbour rank in B", "value": "ranks"},
                          {"label": "clusters (study: same cluster of A at K > 1000, different clusters of B at "
                                    "K < 5)", "value": "clusters"}])]),
            html.Div([html.Label("Pairs shown", className="fs-label"),
                      dcc.Slider(id="pairs-count", min=4, max=50, step=2, value=12,
                                 marks={4: "4", 12: "12", 24: "24", 50: "50"}, className="fs-slider")],
                     className="fs-control-narrow"),
        ]),
        job_area("pairs"),
        html.Div(className="fs-grid-3", children=[
            card(["Closest in ", badge("A")], html.Div(id="pairs-closest-a", className="fs-pair-list"),
                 caption="Highest cosine similarity in A's space.", actions=download_bar("pairs-closest-a", image=False)),
            card(["Close in ", badge("A"), ", distant in ", badge("B")], html.Div(id="pairs-contrast",
                 className="fs-pair-list"), caption="Near neighbours in A that B ranks far apart.",
                 actions=download_bar("pairs-contrast", image=False)),
            card(["Closest in ", badge("B")], html.Div(id="pairs-closest-b", className="fs-pair-list"),
                 caption="Highest cosine similarity in B's space.", actions=download_bar("pairs-closest-b", image=False)),
        ]),
        *[dcc.Store(id={"type": "fs-figdata", "fig": f"pairs-{c}"}) for c in COLUMNS],
    ])


@callback(Output("pairs-closest-a", "children"), Output("pairs-contrast", "children"),
          Output("pairs-closest-b", "children"),
          *[Output({"type": "fs-figdata", "fig": f"pairs-{c}"}, "data") for c in COLUMNS],
          Output("pairs-progress", "children"), Output("pairs-tracked", "data"), Output("pairs-poll", "disabled"),
          Input(ab_id("pairs", "a"), "value"), Input(ab_id("pairs", "b"), "value"),
          Input("pairs-definition", "value"), Input("pairs-count", "value"), Input("pairs-poll", "n_intervals"),
          retry_input("pairs"), State("pairs-tracked", "data"))
def show(svc: Services, a: int | None, b: int | None, definition: str, count: int, _tick: Any, _retry: Any,
         tracked: dict | None):
    """The three columns of pairs, from the cache or from the jobs computing them."""
    blank = [None, None, None, None, None, None]
    if not data.valid_pair(svc.ctx, a, b):
        msg = empty_state("Pick two embedding sets of one data set", "Choose A and B above, or run a Compare on "
                          "the overview to make them.", links=[("Overview", "/")])
        return msg, None, None, None, None, None, [], tracked or {}, True
    needs = standard.pairs_needs(a, b, definition or "ranks")
    out, progress, idle = resolve(svc, "pairs", needs, tracked, {"closest": "closest pairs", "contrast": "contrast pairs"})
    cols = blank[:3]
    stores = blank[3:]
    ds_id = data.dataset_id_of(svc.ctx, a)
    if "closest" in out.results:
        res = out.results["closest"]
        for side, k in ((0, 0), (1, 2)):
            rows = res.data["spaces"][side]["pairs"][:count]
            cols[k], stores[k] = _closest_column(svc, ds_id, res.arrays["positions"], rows, "AB"[side])
    if "contrast" in out.results:
        res = out.results["contrast"]
        cols[1], stores[1] = _contrast_column(svc, ds_id, res.arrays["positions"], res.data["pairs"][:count],
                                              res.params["definition"])
    for name, msg in out.errors.items():
        cols[0 if name == "closest" else 1] = error_box(msg)
    return (*cols, *stores, progress, out.tracked, idle)


def _refs(svc: Services, ds_id: int, positions, rows: list[dict]):
    pos = [int(positions[r[k]]) for r in rows for k in ("i", "j")]
    refs = data.image_refs(svc.ctx, ds_id, pos)
    return [(refs.ref(2 * n), refs.ref(2 * n + 1)) for n in range(len(rows))]


def _closest_column(svc: Services, ds_id: int, positions, rows: list[dict], side: str):
    tiles, table = [], []
    for rank, (row, (ia, ib)) in enumerate(zip(rows, _refs(svc, ds_id, positions, rows)), 1):
        tiles.append(pair_tile(ia, ib, [html.Span([html.Strong(f"#{rank}"), f" cosine {row['score']:.3f} in {side}"])]))
        table.append({"rank": rank, "space": side, "image_a": ia["image_id"], "relpath_a": ia["relpath"],
                      "label_a": ia["label"], "image_b": ib["image_id"], "relpath_b": ib["relpath"],
                      "label_b": ib["label"], "cosine": row["score"]})
    return tiles or html.Div("No pairs.", className="fs-muted"), figure_data(f"closest-pairs-{side}", table)


def _contrast_column(svc: Services, ds_id: int, positions, rows: list[dict], definition: str):
    tiles, table = [], []
    for rank, (row, (ia, ib)) in enumerate(zip(rows, _refs(svc, ds_id, positions, rows)), 1):
        if definition == "ranks":
            lines = [html.Span([html.Strong(f"#{rank}"), f" cosine {row['score_a']:.3f} in A, {row['score_b']:.3f} in B"]),
                     html.Span(f"rank in B: {row['rank_b_ij']} and {row['rank_b_ji']}", className="fs-muted")]
        else:
            lines = [html.Span([html.Strong(f"#{rank}"), f" cosine {row['score_a']:.3f} in A"]),
                     html.Span(f"cluster {row['cluster_a']} in A; clusters {row['cluster_b_i']} / "
                               f"{row['cluster_b_j']} in B", className="fs-muted")]
        tiles.append(pair_tile(ia, ib, lines))
        table.append({"rank": rank, "image_a": ia["image_id"], "relpath_a": ia["relpath"], "label_a": ia["label"],
                      "image_b": ib["image_id"], "relpath_b": ib["relpath"], "label_b": ib["label"],
                      **{k: v for k, v in row.items() if k not in ("i", "j")}})
    return tiles or html.Div("No pairs.", className="fs-muted"), figure_data(f"contrast-pairs-{definition}", table)
