"""Activation heatmaps and mask-out maps for a catalog image or any image file, cached as artifacts.

A map is keyed by the backbone's weights fingerprint, the image's bytes (sha256, so an upload and
the same file in a data set share it), the head (the backbone's own classifier or a kept probe's
artifact) and the parameters. The result carries the raw arrays, the map over the original image
and a PNG overlay drawn on the original image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from featscope.cache.store import content_key
from featscope.workspace.backbones import open_backbone
from featscope.workspace.context import Context
from featscope.workspace.map_requests import (FILLS, METHODS, SCALES, MapRequest, check_heatmap,  # noqa: F401
                                              check_maskout, probe_dataset_for, resolve_image)  # noqa: F401

log = logging.getLogger(__name__)

MAP_VERSION = 3  # 2: fp32 mask-out runs NCHW (closer to the plain network than channels_last); 3: bf16/fp16 heads in fp32
_DRAWING = ("cmap", "scale")  # how a map is drawn, not what it is: never part of its key


@dataclass(frozen=True)
class MapResult:
    """One map: ``heat`` (H, W) over the original image (NaN outside the network's crop), ``overlay``
    PNG bytes drawn on the original, ``arrays`` the raw maps, ``data`` what produced them."""

    kind: str  # "activation" or "maskout"
    backbone: str
    image: str
    params: dict[str, Any]
    data: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    overlay_png: bytes = field(repr=False)
    artifact_key: str = ""
    cached: bool = False
    legend: dict[str, Any] = field(default_factory=dict)  # what the overlay's colours mean (mask-out: its scale)

    @property
    def heat(self) -> np.ndarray:
        return self.arrays["heat"]

    def overlay(self) -> PILImage.Image:
        return PILImage.open(io.BytesIO(self.overlay_png)).convert("RGB")

    def save(self, out_dir: str | Path, stem: str) -> list[Path]:
        """Write ``STEM.png`` (overlay), ``STEM.npz`` (arrays) and ``STEM.json`` (data) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{stem}.png", out / f"{stem}.npz", out / f"{stem}.json"]
        paths[0].write_bytes(self.overlay_png)
        np.savez_compressed(paths[1], **self.arrays)
        paths[2].write_text(json.dumps({"kind": self.kind, "backbone": self.backbone, "image": self.image,
                                        "params": self.params, **self.data, "legend": self.legend}, indent=2,
                                       default=str))
        return paths


def _head(ctx: Context, row, probe_dataset: str | int | None, image_dataset: int | None,
          on_message: Callable[[str], None] | None) -> tuple[str, Any]:
    """The head's identity for the cache key, and the kept probe (``None`` for the backbone's own
    classifier), without loading the network: a cached map needs neither."""
    from featscope.workspace.analyze import load_probe

    ds = probe_dataset_for(row, probe_dataset, image_dataset)
    if ds is None:
        return "classifier", None
    probe = load_probe(ctx, row.id, ds, on_message=on_message)
    h = hashlib.sha256("\n".join(probe.classes).encode())
    for a in (probe.coef, probe.intercept, probe.scaler_mean, probe.scaler_scale):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return f"probe:{h.hexdigest()[:32]}", probe  # the head's own numbers


def _classifier(ctx: Context, row, probe):
    """(backbone, Classifier): the network with its own classifier, or with the probe as its head."""
    from featscope.extractors.heads import classifier_for, probe_linear

    bb = open_backbone(ctx, row.id)
    if probe is None:
        return bb, classifier_for(bb)
    head = probe_linear(probe.coef, probe.intercept, probe.scaler_mean, probe.scaler_scale)
    return bb, classifier_for(bb, head, probe.classes)


def _image_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(ctx: Context, kind: str, req: MapRequest, head_id: str) -> tuple[str, MapResult | None]:
    """The content key of a ``kind`` map and, when a sound copy is stored, its result (a corrupt one is dropped).
    How it is drawn (colour map, scale) is not part of the key: a stored map drawn another way is redrawn
    from its arrays."""
    keyed = {k: v for k, v in req.params.items() if k not in _DRAWING}
    key = content_key({"kind": "map", "map": kind, "backbone": req.row.fingerprint, "image": _image_sha(req.path),
                       "head": head_id, "params": keyed, "preprocess": req.row.preprocess, "version": MAP_VERSION})
    if not ctx.store.has("map", key):
        return key, None
    if ctx.store.verify("map", key):
        ctx.store.delete("map", key)
        return key, None
    png, legend, arrays, data = _drawn(ctx, key, req.path, req.params)
    return key, MapResult(kind, req.row.name, req.name, req.params, data, arrays, png, key, True, legend)


def _drawn(ctx: Context, key: str, image: Path | Callable[[], Path], params: dict[str, Any],
           verify: bool = False) -> tuple[bytes, dict, dict, dict]:
    """(overlay PNG, legend, arrays, data) of the stored map ``key`` drawn as ``params`` say; the stored PNG
    when it was drawn that way already. ``image`` (or a function finding it) is only read to redraw, so a
    stored overlay is served even when its image file has gone."""
    from featscope.datasets.images import load_rgb

    art = ctx.store.get("map", key, verify=verify)
    arrays = {n: art.array(n) for n in art.array_names}
    data, stored = art.meta["data"], art.meta["params"]
    kind = "maskout" if "probs" in arrays else "activation"
    params = {**stored, **{k: v for k, v in params.items() if v is not None}}
    drawing = {k: params.get(k) for k in _DRAWING}
    if kind == "maskout" and drawing["scale"] is None:
        drawing["scale"] = "relative"
    if all(stored.get(k) == v for k, v in drawing.items()):  # maps stored before scales existed are redrawn
        return art.blob("overlay.png"), _legend(kind, arrays, data, drawing), arrays, data
    png, legend = _draw(kind, load_rgb(image() if callable(image) else image), arrays, data, drawing)
    return png, legend, arrays, data


def redraw(ctx: Context, key: str, image: Path | Callable[[], Path], *, cmap: str | None = None,
           scale: str | None = None) -> bytes:
    """The overlay PNG of the stored map ``key`` over ``image``, in another colour map or scale if asked
    (``image`` may be a function finding the file: it is only called to redraw)."""
    return _drawn(ctx, key, image, {"cmap": cmap, "scale": scale}, verify=True)[0]


def _legend(kind: str, arrays: dict[str, np.ndarray], data: dict[str, Any], drawing: dict[str, Any]) -> dict[str, Any]:
    if kind != "maskout":
        return {}
    _, lo, hi, label = _maskout_values(arrays, data, drawing["scale"])
    return {"scale": drawing["scale"], "low": lo, "high": hi, "label": label, "cmap": drawing["cmap"]}


def _maskout_values(arrays: dict[str, np.ndarray], data: dict[str, Any],
                    scale: str) -> tuple[np.ndarray, float, float, str]:
    """(values over the original image, value at the colour map's low end, at its high end, legend label).

    ``absolute``: the probability on 0..1. ``relative``: the probability on this map's own range, so a map
    spanning 0.008..0.012 uses every colour. ``drop``: the unmasked probability minus the masked one (how much
    hiding each place costs the class), on its own range."""
    probs, heat = arrays["probs"], arrays["heat"]
    cls, unmasked = data["class_name"], float(data["unmasked_probability"])
    if scale == "absolute":
        return heat, 0.0, 1.0, f"p({cls}) with the mask there"
    if scale == "relative":
        return heat, float(probs.min()), float(probs.max()), f"p({cls}) with the mask there (this map's range)"
    return unmasked - heat, unmasked - float(probs.max()), unmasked - float(probs.min()), \
        f"drop in p({cls}) from {unmasked:.4g} unmasked"


def _draw(kind: str, rgb: PILImage.Image, arrays: dict[str, np.ndarray], data: dict[str, Any],
          drawing: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """(overlay PNG, legend): activation maps as they are normalised; mask-out maps on their scale with a
    colour bar that states its values."""
    from featscope.extractors.overlay import overlay, rescale, with_colorbar

    if kind != "maskout":
        return _png(overlay(rgb, arrays["heat"], cmap=drawing["cmap"])), {}
    values, lo, hi, label = _maskout_values(arrays, data, drawing["scale"])
    img = overlay(rgb, rescale(values, lo, hi), cmap=drawing["cmap"])
    return _png(with_colorbar(img, lo, hi, cmap=drawing["cmap"], label=label)), _legend(kind, arrays, data, drawing)


def _png(img: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def heatmap(ctx: Context, backbone: str | int, image: str | int | Path, *, tap: str = "conv5",
            method: str = "mean", target: str | int | None = None, top_channels: int = 0,
            probe_dataset: str | int | None = None, cmap: str = "jet", device: str | None = None,
            on_message: Callable[[str], None] | None = None) -> MapResult:
    """The tap's channel-mean activation (``method="mean"``) or a Grad-CAM-family map of ``target``
    (the backbone's classifier, or a probe for networks without one) over ``image``. Without a
    ``target`` a Grad-CAM map explains the top-scoring class; ``data["target_chosen"]`` says so."""
    from featscope.extractors.activations import activation_map, gradcam_map

    req = check_heatmap(ctx, backbone, image, tap=tap, method=method, target=target, top_channels=top_channels,
                        probe_dataset=probe_dataset, cmap=cmap)
    row = req.row
    head_id, probe = ("none", None) if method == "mean" else _head(ctx, row, probe_dataset, req.dataset_id,
                                                                  on_message)
    key, hit = _cached(ctx, "activation", req, head_id)
    if hit is not None:  # the network is only loaded on a miss
        return hit
    if method == "mean":
        m = activation_map(open_backbone(ctx, row.id), req.path, tap=tap, top_channels=top_channels,
                           device=device or ctx.settings.device)
        data: dict[str, Any] = {"channels": m.channels.tolist(), "geometry": m.geometry.to_dict()}
    else:
        bb, classifier = _classifier(ctx, row, probe)
        m = gradcam_map(classifier, bb, req.path, target, method=method, device=device or ctx.settings.device)
        data = {"target": m.target, "class_name": m.class_name, "target_chosen": m.target_chosen, "head": m.head,
                "score": m.score, "probability": m.probability, "geometry": m.geometry.to_dict()}
    return _store(ctx, "activation", req, key, m.image, m.arrays(), data)


def maskout(ctx: Context, backbone: str | int, image: str | int | Path, *, target: str | int, size: int = 60,
            stride: int = 8, fill: str = "zero", mean_pixel: tuple[float, float, float] | None = None,
            precision: str = "fp32", approx_margin: int | None = None, probe_dataset: str | int | None = None,
            cmap: str = "jet", scale: str = "relative", device: str | None = None, batch_size: int = 32,
            progress: Callable[[int, int], None] | None = None,
            on_message: Callable[[str], None] | None = None) -> MapResult:
    """Probability of ``target`` as a ``size`` x ``size`` blank mask slides over ``image`` with ``stride``
    (study Fig. 5), each position's value drawn at the mask centre. The head is the backbone's own
    classifier, or a linear probe trained on its pooled last-tap features for networks without one.
    ``scale`` (how the overlay is drawn, with a colour bar stating it): ``relative`` (the map's own range),
    ``absolute`` (0..1) or ``drop`` (the fall from the unmasked probability)."""
    from featscope.datasets.images import load_rgb
    from featscope.extractors.activations import CropGeometry
    from featscope.extractors.maskout import maskout_map

    req = check_maskout(ctx, backbone, image, target=target, size=size, stride=stride, fill=fill,
                        mean_pixel=mean_pixel, precision=precision, approx_margin=approx_margin,
                        probe_dataset=probe_dataset, cmap=cmap, scale=scale)
    row = req.row
    head_id, probe = _head(ctx, row, probe_dataset, req.dataset_id, on_message)
    key, hit = _cached(ctx, "maskout", req, head_id)
    if hit is not None:  # the network is only loaded on a miss
        return hit
    bb, classifier = _classifier(ctx, row, probe)
    target_index = classifier.class_index(target)
    rgb = load_rgb(req.path)
    pixel = req.params.get("mean_pixel")
    res = maskout_map(classifier, bb.preprocess.to_uint8(rgb), target_index, preprocess=bb.preprocess, size=size,
                      stride=stride, fill=fill, mean_pixel=tuple(pixel) if pixel else None, precision=precision,
                      approx_margin=approx_margin, device=device or ctx.settings.device, batch_size=batch_size,
                      progress=progress)
    geometry = CropGeometry.of(bb.preprocess, rgb.size)
    heat = np.clip(geometry.to_original(res.full), 0.0, 1.0)
    arrays = {"probs": res.probs, "tops_y": res.tops_y, "tops_x": res.tops_x, "centres_y": res.centres_y,
              "centres_x": res.centres_x, "full": res.full.astype(np.float32), "heat": heat,
              "box": np.asarray(geometry.box, dtype=np.float64)}
    data = {"target": res.target, "class_name": classifier.class_names[res.target], "head": classifier.source,
            "unmasked_probability": res.unmasked, "min_probability": float(res.probs.min()),
            "max_probability": float(res.probs.max()), "positions": int(res.probs.size), "engine": res.engine,
            "seconds": res.seconds, "geometry": geometry.to_dict()}
    return _store(ctx, "maskout", req, key, rgb, arrays, data)


def _store(ctx: Context, kind: str, req: MapRequest, key: str, rgb: PILImage.Image, arrays: dict[str, np.ndarray],
           data: dict[str, Any]) -> MapResult:
    data = json.loads(json.dumps(data))  # the form a cache hit returns
    png, legend = _draw(kind, rgb, arrays, data, {k: req.params.get(k) for k in _DRAWING})
    ctx.store.put("map", key, arrays, {"data": data, "params": req.params}, blobs={"overlay.png": png})
    return MapResult(kind, req.row.name, req.name, req.params, data, arrays, png, key, False, legend)


def compare_panel(a: MapResult, b: MapResult) -> PILImage.Image:
    """Two backbones' maps of one image side by side, with their signed difference (red: A higher).

    Mask-out maps are compared in probability; unless both are drawn on the absolute scale the difference
    is stretched to its own largest magnitude, with a colour bar stating it."""
    from featscope.extractors.overlay import difference, difference_panel, side_by_side, with_colorbar

    if a.heat.shape != b.heat.shape:
        raise ValueError("the two maps cover different images; compare maps of the same image")
    limit = 1.0
    if a.kind == "maskout" and "absolute" not in (a.legend.get("scale"), b.legend.get("scale")):
        d = difference(a.heat, b.heat)
        limit = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
        limit = limit if limit > 0 else 1.0
    diff = difference_panel(a.heat, b.heat, limit=limit)
    if a.kind == "maskout":
        diff = with_colorbar(diff, -limit, limit, cmap="RdBu_r", label=f"p({a.backbone}) - p({b.backbone})")
    return side_by_side([a.overlay(), b.overlay(), diff], [a.backbone, b.backbone, f"{a.backbone} - {b.backbone}"])
