"""``/image/<image_id>`` (Figs. 4, 5): one data set image through backbones A and B: activation heatmaps,
mask-out maps, their differences, and the image's nearest neighbours in A and in B."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html

from featscope.frontend.components import maps
from featscope.frontend.components.layout import badge, card, empty_state, error_box, page_header
from featscope.frontend.components.pickers import ab_id, comparison_bar
from featscope.frontend.components.progress import retry_input
from featscope.frontend.components.thumbs import thumb, thumb_grid
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, layout_services, triggered_id
from featscope.workspace import NotFound

PAGE = {"path_template": "/image/<image_id>", "path": "/image", "name": "Image", "title": "featscope · image",
        "order": 40, "nav": False}
K_NEIGHBOURS = 12


def layout(image_id: str | None = None, a: str | None = None, b: str | None = None, head: str | None = None,
           target: str | None = None, size: str | None = None, **_query: Any) -> html.Div:
    """``?a=&b=`` pick the embedding sets; ``head``, ``target``, ``size`` the first map settings (bad values are
    ignored)."""
    ident = int(image_id) if image_id and str(image_id).isdigit() else None
    first = {"head": head if head in ("probe", "classifier") else "probe", "target": (target or None),
             "size": int(size) if size and str(size).isdigit() and 4 <= int(size) <= 1024 else 60}
    return html.Div([
        page_header(f"Image {ident}" if ident else "Image", "What each backbone looks at in this image, what hiding "
                    "parts of it does to a class's probability, and which images each backbone finds closest.",
                    figure="Figs. 4, 5"),
        dcc.Store(id="img-id", data=ident),
        html.Div(id="img-hero"),
        comparison_bar("img", a, b, scope=_dataset_of(layout_services(), ident)),
        maps.controls("img", **first),
        maps.panels("img"),
        html.H2("Nearest neighbours", className="fs-section-title"),
        html.Div(className="fs-grid-2", children=[
            card(["Closest in ", badge("A")], html.Div(id="img-nn-a"), caption="Cosine similarity in A's space.",
                 className="fs-side-a"),
            card(["Closest in ", badge("B")], html.Div(id="img-nn-b"), caption="Cosine similarity in B's space.",
                 className="fs-side-b"),
        ]),
    ])


def _dataset_of(svc: Services | None, image_id: int | None) -> str | None:
    """The data set (as the pickers name it) the image belongs to: its A/B sets must embed it."""
    from featscope.catalog import Dataset, Image

    if svc is None or image_id is None or not image_id < (1 << 63):
        return None
    with svc.ctx.session() as s:
        row = s.get(Image, int(image_id))
        ds = s.get(Dataset, row.dataset_id) if row is not None else None
    return None if ds is None else ds.name if ds.version == 1 else f"{ds.name}@{ds.version}"


def _image(svc: Services, image_id: int | None):
    """(``{"image_id": id}``, its file) or Nones if there is no such readable image."""
    from featscope.workspace.maps import resolve_image

    if image_id is None:
        return None, None
    try:
        path, _, _ = resolve_image(svc.ctx, int(image_id))
    except (NotFound, ValueError):
        return None, None
    return {"image_id": int(image_id)}, path


@callback(Output("img-hero", "children"), Input("img-id", "data"))
def hero(svc: Services, image_id: int | None):
    """The image and where it comes from (its data set scopes the A/B pickers from the page's first render)."""
    from featscope.catalog import Dataset, Image

    if image_id is None:
        return empty_state("No image chosen", "Open an image from the pairs or projections pages, or upload one.",
                           links=[("Pairs", "/pairs"), ("Upload", "/upload")])
    with svc.ctx.session() as s:
        row = s.get(Image, int(image_id))
        ds = s.get(Dataset, row.dataset_id) if row is not None else None
    if row is None:
        return error_box(f"There is no image {image_id} in the catalog; open one from the pairs or projections "
                         f"pages.")
    name = ds.name if ds.version == 1 else f"{ds.name}@{ds.version}"
    facts = [("File", html.Code(row.relpath)), ("Data set", name), ("Label", row.label or "—"),
             ("Size", f"{row.width} × {row.height}" if row.width else "—"), ("Boxes", len(row.boxes or []))]
    if row.error:
        facts.append(("Unreadable", row.error))
    body = html.Div(className="fs-image-hero", children=[
        thumb(row.id, None, size=512, link=False),
        html.Dl([x for k, v in facts for x in (html.Dt(k), html.Dd(v))], className="fs-kv"),
    ])
    return card(None, [body, html.A("Open the original file", href=f"/api/v1/images/{row.id}/file", target="_blank",
                                    className="fs-button fs-button-small")])


@callback(*maps.outputs("img", "heat"), Input(ab_id("img", "a"), "value"), Input(ab_id("img", "b"), "value"),
          Input("img-method", "value"), Input("img-tap", "value"), Input("img-head", "value"),
          Input("img-target", "value"), Input("img-heat-poll", "n_intervals"), retry_input("img-heat"),
          State("img-id", "data"), State("img-heat-tracked", "data"))
def heatmaps(svc: Services, a, b, method, tap, head, target, _tick, _retry, image_id, tracked):
    """A's and B's heatmaps of this image and their difference (queued as heatmap jobs when not made yet)."""
    image, path = _image(svc, image_id)
    return maps.heat_view(svc, "img", image, path, a, b, method, tap, head, target, tracked)


@callback(*maps.outputs("img", "mo"), Input("img-mo-go", "n_clicks"), Input(ab_id("img", "a"), "value"),
          Input(ab_id("img", "b"), "value"), Input("img-head", "value"), Input("img-target", "value"),
          Input("img-mo-poll", "n_intervals"), retry_input("img-mo"), State("img-mo-size", "value"),
          State("img-mo-stride", "value"), State("img-mo-fill", "value"), State("img-mo-mode", "value"),
          State("img-id", "data"), State("img-mo-tracked", "data"))
def maskouts(svc: Services, go, a, b, head, target, _tick, _retry, size, stride, fill, mode, image_id, tracked):
    """Mask-out maps: queued by the button; finished ones with these parameters are shown at once."""
    image, path = _image(svc, image_id)
    clicked = triggered_id() == "img-mo-go"
    return maps.maskout_view(svc, "img", image, path, a, b, size, stride, fill, mode, head, target, tracked,
                             submit=clicked)


@callback(Output("img-classes", "children"), Input(ab_id("img", "a"), "value"), Input("img-head", "value"))
def classes(svc: Services, a, head):
    return maps.class_options(svc, a, head)


@callback(Output("img-nn-a", "children"), Output("img-nn-b", "children"), Input(ab_id("img", "a"), "value"),
          Input(ab_id("img", "b"), "value"), State("img-id", "data"))
def neighbours(svc: Services, a: int | None, b: int | None, image_id: int | None):
    """The image's nearest neighbours in each set, from its cached FAISS index (no network runs)."""
    return _neighbours(svc, a, image_id), _neighbours(svc, b, image_id)


def _neighbours(svc: Services, set_id: int | None, image_id: int | None):
    if set_id is None or image_id is None:
        return html.Div("Pick embedding sets of this image's data set above.", className="fs-muted")
    try:
        _, hits = svc.ws.neighbours(int(set_id), int(image_id), K_NEIGHBOURS)
    except (NotFound, ValueError) as e:
        return error_box(str(e.args[0]) if e.args else str(e))
    return thumb_grid([{"image_id": h.image_id, "caption": f"{h.score:.3f} · {h.label or ''}".strip(" ·"),
                        "relpath": h.relpath} for h in hits], size=128)

