"""Activation heatmaps and mask-out maps of one image for backbones A and B, and their difference (Figs. 4, 5).

Shared by ``/image/<id>`` and ``/upload``. Maps are ``heatmap`` / ``maskout`` jobs (the REST routes' job
kinds); a map already made with the same parameters is shown at once. Each panel is a Plotly figure: the
image as a layout image with the map on top as a heatmap (hover reads the value), so the toolbar exports
it and the data bar downloads the (downsampled) map.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from dash import dcc, html

from featscope.frontend.components.figures import base_layout, empty_figure, figure_card, figure_data
from featscope.frontend.components.layout import badge
from featscope.frontend import data
from featscope.frontend.components.progress import POLL_MS, progress_view, retried_now
from featscope.frontend.services import Services, forget_failed, map_job
from featscope.worker.jobs import ACTIVE, JobInfo

MAX_HEAT_CELLS = 96   # longest side of the heat grid sent to the browser
MAX_IMAGE_SIDE = 512  # longest side of the image under it
MASKOUT_MODES = {"exact": {"precision": "fp32"}, "fast": {"precision": "mixed"},
                 "approx": {"precision": "fp32", "approx_margin": 2}}


def controls(prefix: str, *, head: str = "probe", target: str | None = None, size: int = 60) -> html.Div:
    """Heatmap method, tap, head and target; mask-out size, stride, fill, mode and a button (mask-out is slow).

    ``head``, ``target`` and ``size`` are the first values (a link may set them, e.g. to open the maps the
    demo made)."""
    return html.Div([
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Heatmap", className="fs-label"),
                      dcc.RadioItems(id=f"{prefix}-method", value="mean", inline=True, className="fs-radio", options=[
                          {"label": "channel mean", "value": "mean"}, {"label": "Grad-CAM", "value": "gradcam"}])]),
            html.Div([html.Label("Tap", className="fs-label"),
                      dcc.Dropdown(id=f"{prefix}-tap", value="conv5", clearable=False, style={"width": "130px"},
                                   options=[{"label": t, "value": t} for t in ("conv2", "conv3", "conv4", "conv5")])]),
            html.Div([html.Label("Classification head (Grad-CAM, mask-out)", className="fs-label"),
                      dcc.RadioItems(id=f"{prefix}-head", value=head, inline=True, className="fs-radio", options=[
                          {"label": "linear probe on A's data set", "value": "probe"},
                          {"label": "the backbone's own classifier", "value": "classifier"}])]),
            html.Div([html.Label("Target class", className="fs-label"),
                      dcc.Input(id=f"{prefix}-target", type="text", value=target, list=f"{prefix}-classes", debounce=True,
                                placeholder="class name or index", className="fs-input", style={"width": "200px"}),
                      html.Datalist(id=f"{prefix}-classes")]),
        ]),
        html.Div(className="fs-controls", children=[
            html.Div([html.Label("Mask-out: mask size (px)", className="fs-label"),
                      dcc.Input(id=f"{prefix}-mo-size", type="number", value=size, min=4, max=1024, className="fs-input",
                                style={"width": "110px"})]),
            html.Div([html.Label("stride (px)", className="fs-label"),
                      dcc.Input(id=f"{prefix}-mo-stride", type="number", value=8, min=1, max=1024,
                                className="fs-input", style={"width": "110px"})]),
            html.Div([html.Label("fill", className="fs-label"),
                      dcc.Dropdown(id=f"{prefix}-mo-fill", value="zero", clearable=False, style={"width": "130px"},
                                   options=[{"label": "mean colour", "value": "zero"},
                                            {"label": "blurred", "value": "blur"}])]),
            html.Div([html.Label("mode", className="fs-label"),
                      dcc.RadioItems(id=f"{prefix}-mo-mode", value="exact", inline=True, className="fs-radio", options=[
                          {"label": "exact (fp32)", "value": "exact"}, {"label": "mixed bf16 (for GPUs)", "value": "fast"},
                          {"label": "approximate (margin 2)", "value": "approx"}])]),
            html.Button("Compute mask-out maps", id=f"{prefix}-mo-go", className="fs-button fs-button-primary"),
        ]),
    ])


def panels(prefix: str) -> html.Div:
    heat = [figure_card(f"{prefix}-heat-{r}", [badge(r.upper()), html.Span(id=f"{prefix}-heat-{r}-title")], height=380,
                        caption=f"Where backbone {r.upper()} responds: 1 is its strongest.") for r in ("a", "b")]
    heat.append(figure_card(f"{prefix}-heat-diff", ["Difference ", badge("A"), " − ", badge("B")], height=380,
                            caption="Red: A responds more; blue: B does."))
    mo = [figure_card(f"{prefix}-mo-{r}", [badge(r.upper()), html.Span(id=f"{prefix}-mo-{r}-title")], height=380,
                      caption=f"The class's probability for {r.upper()} with the mask centred here.") for r in ("a", "b")]
    mo.append(figure_card(f"{prefix}-mo-diff", ["Difference ", badge("A"), " − ", badge("B")], height=380,
                          caption="Red: masking hurts A more; blue: B."))
    return html.Div([
        html.H2("Activation heatmaps", className="fs-section-title"),
        html.Div(id=f"{prefix}-heat-progress", className="fs-progress-area"),
        html.Div(heat, className="fs-grid-3"),
        html.H2("Mask-out maps", className="fs-section-title"),
        html.P("The probability of the target class as a blank square slides over the image, drawn at the square's "
               "centre, each map coloured over its own range (the colour bar gives the values): dark blue where "
               "hiding that area hurts the prediction most.", className="fs-muted"),
        html.Div(id=f"{prefix}-mo-progress", className="fs-progress-area"),
        html.Div(mo, className="fs-grid-3"),
        dcc.Store(id=f"{prefix}-heat-tracked", data={}), dcc.Store(id=f"{prefix}-mo-tracked", data={}),
        dcc.Interval(id=f"{prefix}-heat-poll", interval=POLL_MS, disabled=True),
        dcc.Interval(id=f"{prefix}-mo-poll", interval=POLL_MS, disabled=True),
    ])


# ---------------------------------------------------------------- requests
def heat_params(backbone: str, image: dict, method: str, tap: str, head: str, target: str | None,
                probe_dataset: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"backbone": backbone, **image, "tap": tap or "conv5", "method": method or "mean"}
    if params["method"] != "mean":
        if target:  # none: Grad-CAM explains each backbone's top-scoring class
            params["target"] = target
        if head == "probe" and probe_dataset:
            params["probe_dataset"] = probe_dataset
    return params


def maskout_params(backbone: str, image: dict, size: Any, stride: Any, fill: str, mode: str, head: str,
                   target: str | None, probe_dataset: str | None) -> dict[str, Any]:
    params = {"backbone": backbone, **image, "target": target, "size": int(size or 60), "stride": int(stride or 8),
              "fill": fill or "zero", **MASKOUT_MODES.get(mode, MASKOUT_MODES["exact"])}
    if head == "probe" and probe_dataset:
        params["probe_dataset"] = probe_dataset
    return params


def request_maps(svc: Services, kind: str, requests: dict[str, dict], tracked: dict, *, submit: bool) \
        -> tuple[dict[str, JobInfo], dict[str, str]]:
    """Jobs (done, running or failed) per role for ``requests``; errors of requests the API would refuse."""
    from fastapi import HTTPException

    from featscope.workspace import NotFound

    from featscope.worker.map_kinds import upload_path
    from featscope.workspace.map_requests import check_heatmap, check_maskout

    check = {"heatmap": check_heatmap, "maskout": check_maskout}[kind]
    found, errors = {}, {}
    for role, params in requests.items():
        try:
            if submit:  # what the REST route checks before queueing: a reason now, not a failed job later
                image = upload_path(svc.settings.uploads_dir, params["upload_id"]) if params.get("upload_id") \
                    else params["image_id"]
                check(svc.ctx, params["backbone"], image,
                      **{k: v for k, v in params.items() if k not in ("backbone", "image_id", "upload_id")})
            job = map_job(svc, kind, params, tracked, submit=submit)
        except (ValueError, NotFound, FileNotFoundError) as e:
            errors[role] = str(e.args[0]) if e.args else str(e)
            continue
        except HTTPException as e:
            errors[role] = str(e.detail)
            continue
        if job is not None:
            found[role] = job
    return found, errors


def active(jobs: dict[str, JobInfo]) -> bool:
    return any(j.state in ACTIVE for j in jobs.values())


# ---------------------------------------------------------------- figures
def image_uri(path: Path) -> tuple[str, tuple[int, int]]:
    """A JPEG data URI of the image (longest side at most :data:`MAX_IMAGE_SIDE`) and its original size."""
    from PIL import Image

    from featscope.datasets.images import load_rgb

    img = load_rgb(path)
    size = img.size
    img.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), size


def load_heat(svc: Services, job: JobInfo) -> np.ndarray:
    return svc.ctx.store.get("map", job.result["artifact_key"]).array("heat")


def coarse(heat: np.ndarray) -> tuple[np.ndarray, int]:
    """The map sampled every ``step`` pixels (longest side at most :data:`MAX_HEAT_CELLS`), and ``step``."""
    step = max(1, int(np.ceil(max(heat.shape) / MAX_HEAT_CELLS)))
    return heat[step // 2::step, step // 2::step], step


def map_figure(uri: str, size: tuple[int, int], heat: np.ndarray, *, diverging: bool = False,
               label: str = "activation", relative: bool = False) -> dict:
    """The image with ``heat`` (original-image resolution, NaN = no map) drawn over it.

    ``relative``: the colours span the map's own range (symmetric around 0 when ``diverging``) instead of
    0..1 / -1..1, and the colour bar states those values: a mask-out map whose probabilities lie within
    0.146..0.153 is otherwise one flat colour (the same choice as the API overlay's ``scale=relative``)."""
    w, h = size
    z, step = coarse(heat)
    zf = np.where(np.isnan(z), None, np.round(z.astype(float), 4)).tolist()
    trace = {"type": "heatmap", "z": zf, "x0": step / 2, "dx": step, "y0": step / 2, "dy": step, "opacity": 0.55,
             "zsmooth": "best", "hovertemplate": f"x %{{x:.0f}}, y %{{y:.0f}}<br>{label} %{{z:.3f}}<extra></extra>",
             "colorbar": {"thickness": 10, "len": 0.8}}
    lo, hi = (0.0, 1.0) if not diverging else (-1.0, 1.0)
    finite = heat[np.isfinite(heat)]
    if relative and finite.size:
        if diverging:
            hi = float(np.abs(finite).max()) or 1e-6
            lo = -hi
        else:
            lo, hi = float(finite.min()), float(finite.max())
            hi = hi if hi > lo else lo + 1e-6
    if diverging:
        trace.update(colorscale="RdBu", zmin=lo, zmax=hi, zmid=0)  # plotly.js RdBu: blue low, red high
    else:
        trace.update(colorscale="Jet", zmin=lo, zmax=hi)
    layout = base_layout(margin={"l": 4, "r": 4, "t": 4, "b": 4},
                         xaxis={"visible": False, "range": [0, w], "constrain": "domain"},
                         yaxis={"visible": False, "range": [h, 0], "scaleanchor": "x", "constrain": "domain"},
                         images=[{"source": uri, "xref": "x", "yref": "y", "x": 0, "y": 0, "sizex": w, "sizey": h,
                                  "sizing": "stretch", "layer": "below"}])
    return {"data": [trace], "layout": layout}


def heat_rows(heat: np.ndarray, label: str) -> list[dict]:
    z, step = coarse(heat)
    ys, xs = np.nonzero(~np.isnan(z))
    return [{"x": int(x * step + step // 2), "y": int(y * step + step // 2), label: round(float(z[y, x]), 5)}
            for y, x in zip(ys, xs)]


def three_figures(svc: Services, image_path: Path, jobs: dict[str, JobInfo], label: str, name: str,
                  idle: str = "", relative: bool = False):
    """(fig A, fig B, fig A-B, data A, data B, data A-B, titles) for the finished jobs among ``jobs``;
    ``idle`` is the message of a panel with no job."""
    figs: list[Any] = [empty_figure("computing…" if role in jobs else idle) for role in ("a", "b")]
    figs.append(empty_figure("computing…" if jobs else idle))
    stores: list[Any] = [None, None, None]
    titles = ["", ""]
    done = {r: j for r, j in jobs.items() if j.state == "done"}
    if not done:
        return figs, stores, titles
    uri, size = image_uri(image_path)
    heats = {}
    for i, role in enumerate(("a", "b")):
        if role in done:
            heats[role] = load_heat(svc, done[role])
            figs[i] = map_figure(uri, size, heats[role], label=label, relative=relative)
            stores[i] = figure_data(f"{name}-{role.upper()}", heat_rows(heats[role], label),
                                    backbone=done[role].result.get("backbone"), params=done[role].result.get("params"))
            titles[i] = _title(done[role])
    if len(heats) == 2 and heats["a"].shape == heats["b"].shape:
        diff = heats["a"] - heats["b"]
        figs[2] = map_figure(uri, size, diff, diverging=True, label=f"{label} A − B", relative=relative)
        stores[2] = figure_data(f"{name}-difference", heat_rows(diff, "difference"))
    return figs, stores, titles


def _title(job: JobInfo) -> str:
    r = job.result
    d = r.get("data") or {}
    text = f" {r.get('backbone', '')}"
    if d.get("class_name") is not None:
        text += f" · {d['class_name']}"
    if d.get("unmasked_probability") is not None:
        text += f" · p = {d['unmasked_probability']:.3f} unmasked, {d.get('min_probability', 0):.3f} at worst"
        if d.get("seconds") is not None:  # a cache hit keeps the seconds of the run that made it
            text += f" · {d['seconds']:.1f} s in {(r.get('params') or {}).get('precision', 'fp32')}"
    elif d.get("probability") is not None:
        text += f" · p = {d['probability']:.3f}"
    return text


# ---------------------------------------------------------------- what the pages' callbacks return
def _backbones(svc: Services, a: int | None, b: int | None):
    ia, ib = data.set_info(svc.ctx, a), data.set_info(svc.ctx, b)
    return ia, ib


def heat_view(svc: Services, prefix: str, image: dict | None, path: Path | None, a: int | None, b: int | None,
              method: str, tap: str, head: str, target: str | None, tracked: dict | None) -> tuple:
    """Outputs of a page's heatmap callback: 3 figures, 3 data stores, 2 titles, progress, tracked, poll off."""
    tracked = dict(tracked or {})
    ia, ib = _backbones(svc, a, b)
    why = "Upload an image above" if image is None else "Pick embedding sets A and B above"
    blank = (empty_figure(why), empty_figure(why), empty_figure(why), None, None, None, "", "")
    if image is None or path is None or ia is None or ib is None:
        return (*blank, [], tracked, True)
    if retried_now(f"{prefix}-heat"):
        tracked = forget_failed(tracked, svc)
    requests = {role: heat_params(info.backbone, image, method, tap, head, target, ia.dataset)
                for role, info in (("a", ia), ("b", ib))}
    found, errors = request_maps(svc, "heatmap", requests, tracked, submit=True)
    label = "activation" if method == "mean" else "Grad-CAM"
    figs, stores, titles = three_figures(svc, path, found, label, f"heatmap-{method}")
    running = {r: j for r, j in found.items() if j.state != "done"}
    labels = {"a": f"heatmap A ({ia.backbone})", "b": f"heatmap B ({ib.backbone})"}
    progress = progress_view(f"{prefix}-heat", running, labels, errors)
    return (*figs, *stores, *titles, progress, tracked, not active(found))


def maskout_view(svc: Services, prefix: str, image: dict | None, path: Path | None, a: int | None, b: int | None,
                 size: Any, stride: Any, fill: str, mode: str, head: str, target: str | None, tracked: dict | None,
                 submit: bool) -> tuple:
    """Outputs of a page's mask-out callback (as :func:`heat_view`); jobs are queued only when ``submit``
    (the button), otherwise finished maps with these parameters are shown and running ones followed."""
    tracked = dict(tracked or {})
    ia, ib = _backbones(svc, a, b)
    why = ("Upload an image above" if image is None else "Pick embedding sets A and B above" if ia is None or ib is None
           else "Pick a target class above,<br>then press Compute mask-out maps")
    blank = (empty_figure(why), empty_figure(why), empty_figure(why), None, None, None, "", "")
    if image is None or path is None or ia is None or ib is None:
        return (*blank, [], tracked, True)
    if not target:
        hint = [html.Div("Mask-out follows one class: pick a target class above, then press Compute mask-out maps.",
                         className="fs-note")] if submit else []
        return (*blank, hint, tracked, True)
    if retried_now(f"{prefix}-mo"):
        tracked, submit = forget_failed(tracked, svc), True
    requests = {role: maskout_params(info.backbone, image, size, stride, fill, mode, head, target, ia.dataset)
                for role, info in (("a", ia), ("b", ib))}
    found, errors = request_maps(svc, "maskout", requests, tracked, submit=submit)
    figs, stores, titles = three_figures(svc, path, found, "probability", f"maskout-{target}", relative=True,
                                         idle="Press Compute mask-out maps<br>to make them")
    running = {r: j for r, j in found.items() if j.state != "done"}
    labels = {"a": f"mask-out A ({ia.backbone})", "b": f"mask-out B ({ib.backbone})"}
    progress = progress_view(f"{prefix}-mo", running, labels, errors)
    return (*figs, *stores, *titles, progress, tracked, not active(found))


def class_options(svc: Services, a: int | None, head: str) -> list:
    """Suggestions for the target: the classes of A's data set (the probe's classes)."""
    ia = data.set_info(svc.ctx, a)
    if ia is None:
        return []
    from featscope.workspace.datasets import get_dataset

    classes = list(get_dataset(svc.ctx, ia.dataset).classes or [])
    if head == "classifier":  # the backbone's own classes (ImageNet indices for torchvision models): typed
        return []
    return [html.Option(value=c) for c in classes]


def outputs(prefix: str, kind: str) -> list:
    """The Output list of a page's heatmap (``kind="heat"``) or mask-out (``"mo"``) callback."""
    from dash import Output

    figs = [f"{prefix}-{kind}-{r}" for r in ("a", "b", "diff")]
    return ([Output(f, "figure") for f in figs] + [Output({"type": "fs-figdata", "fig": f}, "data") for f in figs]
            + [Output(f"{prefix}-{kind}-a-title", "children"), Output(f"{prefix}-{kind}-b-title", "children"),
               Output(f"{prefix}-{kind}-progress", "children"), Output(f"{prefix}-{kind}-tracked", "data"),
               Output(f"{prefix}-{kind}-poll", "disabled")])
