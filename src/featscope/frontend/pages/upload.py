"""``/upload`` (Figs. 4, 5): an image of your own through backbones A and B.

The file goes straight from the browser to ``POST /api/v1/uploads`` (``uploadFile`` in ``assets/featscope.js``),
so the API's size, pixel and format checks apply as they are and a refused file shows the API's reason. The
maps are the same jobs as on an image's page, on the upload's id; the heads come from A's data set.
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html

from featscope.frontend.components import maps
from featscope.frontend.components.layout import card, error_box, page_header
from featscope.frontend.components.pickers import ab_id, comparison_bar
from featscope.frontend.components.progress import retry_input
from featscope.frontend.services import Services
from featscope.frontend.wiring import callback, triggered_id, clientside

PAGE = {"path": "/upload", "name": "Upload", "title": "featscope · upload an image", "order": 45, "nav": True,
        "pair": True}


def layout(a: str | None = None, b: str | None = None, **_query: Any) -> html.Div:
    return html.Div([
        page_header("Upload an image", "See how backbones A and B respond to an image of your own: activation "
                    "heatmaps, Grad-CAM and mask-out maps side by side, and where they differ.", figure="Figs. 4, 5"),
        card("Image", [
            dcc.Upload(id="up-file", accept="image/*", multiple=False, className="fs-upload",
                       children=html.Div(["Drop an image here or ", html.A("choose a file"),
                                          html.Div("JPEG, PNG, BMP, GIF, TIFF or WebP; the server's upload limits apply",
                                                   className="fs-hint")])),
            html.Div(id="up-info", style={"marginTop": "12px"}),
        ]),
        comparison_bar("up", a, b),
        maps.controls("up"),
        maps.panels("up"),
        html.P("Nearest neighbours need the image's embedding in A and B: add it to a data set (it is then an "
               "image page with its neighbours).", className="fs-muted"),
        dcc.Store(id="up-upload"),
    ])


CLIENTSIDE = [clientside("uploadFile", Output("up-upload", "data"), Input("up-file", "contents"),
                         State("up-file", "filename"), prevent_initial_call=True)]


def _image(svc: Services, upload: dict | None):
    """(``{"upload_id": id}``, its stored file) for an accepted upload, else Nones."""
    from featscope.worker.map_kinds import upload_path

    if not upload or upload.get("error") or not upload.get("id"):
        return None, None
    try:
        return {"upload_id": upload["id"]}, upload_path(svc.settings.uploads_dir, upload["id"])
    except (ValueError, FileNotFoundError):
        return None, None


@callback(Output("up-info", "children"), Input("up-upload", "data"))
def info(svc: Services, upload: dict | None):
    """The accepted file's format and size, or the API's reason for refusing it."""
    if not upload:
        return html.Div("No image yet.", className="fs-muted")
    if upload.get("error"):
        return error_box(f"{upload.get('filename') or 'the file'} was refused: {upload['error']}")
    _, path = _image(svc, upload)
    if path is None:
        return error_box("the upload is gone from the server; upload the image again")
    return html.Div(className="fs-image-hero", children=[
        html.Img(src=upload.get("preview") or "", alt=upload.get("filename") or "upload", id="up-preview"),
        html.Dl([x for k, v in (("File", upload.get("filename") or "—"), ("Format", upload.get("format")),
                                ("Size", f"{upload.get('width')} × {upload.get('height')}"),
                                ("Bytes", f"{upload.get('size_bytes', 0):,}"), ("Upload id", html.Code(upload["id"])))
                 for x in (html.Dt(k), html.Dd(v))], className="fs-kv"),
    ])


@callback(*maps.outputs("up", "heat"), Input(ab_id("up", "a"), "value"), Input(ab_id("up", "b"), "value"),
          Input("up-method", "value"), Input("up-tap", "value"), Input("up-head", "value"),
          Input("up-target", "value"), Input("up-heat-poll", "n_intervals"), retry_input("up-heat"),
          Input("up-upload", "data"), State("up-heat-tracked", "data"))
def heatmaps(svc: Services, a, b, method, tap, head, target, _tick, _retry, upload, tracked):
    """A's and B's heatmaps of the upload and their difference (heatmap jobs)."""
    image, path = _image(svc, upload)
    return maps.heat_view(svc, "up", image, path, a, b, method, tap, head, target, tracked)


@callback(*maps.outputs("up", "mo"), Input("up-mo-go", "n_clicks"), Input(ab_id("up", "a"), "value"),
          Input(ab_id("up", "b"), "value"), Input("up-head", "value"), Input("up-target", "value"),
          Input("up-mo-poll", "n_intervals"), retry_input("up-mo"), Input("up-upload", "data"),
          State("up-mo-size", "value"), State("up-mo-stride", "value"), State("up-mo-fill", "value"),
          State("up-mo-mode", "value"), State("up-mo-tracked", "data"))
def maskouts(svc: Services, go, a, b, head, target, _tick, _retry, upload, size, stride, fill, mode, tracked):
    """Mask-out maps of the upload: queued by the button; finished ones are shown at once."""
    image, path = _image(svc, upload)
    clicked = triggered_id() == "up-mo-go"
    return maps.maskout_view(svc, "up", image, path, a, b, size, stride, fill, mode, head, target, tracked,
                             submit=clicked)


@callback(Output("up-classes", "children"), Input(ab_id("up", "a"), "value"), Input("up-head", "value"))
def classes(svc: Services, a, head):
    return maps.class_options(svc, a, head)
