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
from featscope.catalog import Dataset, Image
from featscope.workspace.backbones import get_backbone_row, open_backbone
from featscope.workspace.context import Context, NotFound

log = logging.getLogger(__name__)

MAP_VERSION = 2  # 2: fp32 mask-out runs NCHW (closer to the plain network than channels_last)
METHODS = ("mean", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")
FILLS = ("zero", "mean", "blur")


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
                                        "params": self.params, **self.data}, indent=2, default=str))
        return paths


def resolve_image(ctx: Context, image: str | int | Path) -> tuple[Path, str, int | None]:
    """(file, display name, catalog dataset id or None) for a catalog image id or a file path."""
    if isinstance(image, int) or (isinstance(image, str) and image.isdigit()):
        with ctx.session() as s:
            row = s.get(Image, int(image))
            if row is None:
                raise NotFound(f"no image {image} in the catalog; `featscope dataset images NAME` lists ids, or "
                               f"pass a path to an image file")
            if row.error is not None:
                raise ValueError(f"image {image} ({row.relpath}) could not be decoded when it was registered: "
                                 f"{row.error}")
            ds = s.get(Dataset, row.dataset_id)
            return Path(ds.root) / row.relpath, row.relpath, ds.id
    path = Path(image).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; pass an image file or a catalog image id")
    return path, path.name, None


def _head(ctx: Context, row, probe_dataset: str | int | None, image_dataset: int | None,
          on_message: Callable[[str], None] | None) -> tuple[str, Any]:
    """The head's identity for the cache key, and the kept probe (``None`` for the backbone's own
    classifier), without loading the network: a cached map needs neither."""
    from featscope.workspace.analyze import load_probe

    if probe_dataset is None and row.has_classifier:
        return "classifier", None
    ds = probe_dataset if probe_dataset is not None else image_dataset
    if ds is None:
        raise ValueError(f"backbone {row.name!r} has no classifier of its own; pass --probe-dataset NAME (a "
                         f"labelled data set it has {list(row.taps)[-1]}/avg embeddings of) so a linear probe "
                         f"trained on its features serves as the classification layer, as the study does")
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


def _cached(ctx: Context, kind: str, row, image_path: Path, name: str, head_id: str,
            params: dict[str, Any]) -> tuple[str, MapResult | None]:
    """The content key of a ``kind`` map and, when a sound copy is stored, its result (a corrupt one is dropped).
    The colour map is not part of the key: a stored map drawn in another one is redrawn from its arrays."""
    keyed = {k: v for k, v in params.items() if k != "cmap"}
    key = content_key({"kind": "map", "map": kind, "backbone": row.fingerprint, "image": _image_sha(image_path),
                       "head": head_id, "params": keyed, "preprocess": row.preprocess, "version": MAP_VERSION})
    if not ctx.store.has("map", key):
        return key, None
    if ctx.store.verify("map", key):
        ctx.store.delete("map", key)
        return key, None
    art = ctx.store.get("map", key, verify=False)
    arrays = {n: art.array(n) for n in art.array_names}
    png = art.blob("overlay.png")
    if art.meta["params"].get("cmap") != params.get("cmap"):
        from featscope.datasets.images import load_rgb
        from featscope.extractors.overlay import overlay

        png = _png(overlay(load_rgb(image_path), arrays["heat"], cmap=params["cmap"]))
    return key, MapResult(kind, row.name, name, params, art.meta["data"], arrays, png, key, True)


def _png(img: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def heatmap(ctx: Context, backbone: str | int, image: str | int | Path, *, tap: str = "conv5",
            method: str = "mean", target: str | int | None = None, top_channels: int = 0,
            probe_dataset: str | int | None = None, cmap: str = "jet", device: str | None = None,
            on_message: Callable[[str], None] | None = None) -> MapResult:
    """The tap's channel-mean activation (``method="mean"``) or a Grad-CAM-family map of ``target``
    (the backbone's classifier, or a probe for networks without one) over ``image``."""
    from featscope.extractors.activations import activation_map, gradcam_map
    from featscope.extractors.overlay import overlay

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "mean" and target is None:
        raise ValueError(f"method {method!r} explains one class: pass --target CLASS (a class name or index)")
    path, name, ds_id = resolve_image(ctx, image)
    row = get_backbone_row(ctx, backbone)
    params = {"tap": tap, "method": method, "target": None if target is None else str(target),
              "top_channels": int(top_channels), "cmap": cmap}
    head_id, probe = ("none", None) if method == "mean" else _head(ctx, row, probe_dataset, ds_id, on_message)
    key, hit = _cached(ctx, "activation", row, path, name, head_id, params)
    if hit is not None:  # the network is only loaded on a miss
        return hit
    if method == "mean":
        m = activation_map(open_backbone(ctx, row.id), path, tap=tap, top_channels=top_channels,
                           device=device or ctx.settings.device)
        data: dict[str, Any] = {"channels": m.channels.tolist(), "geometry": m.geometry.to_dict()}
    else:
        bb, classifier = _classifier(ctx, row, probe)
        m = gradcam_map(classifier, bb, path, target, method=method, device=device or ctx.settings.device)
        data = {"target": m.target, "class_name": m.class_name, "head": m.head, "score": m.score,
                "probability": m.probability, "geometry": m.geometry.to_dict()}
    arrays = m.arrays()
    png = _png(overlay(m.image, arrays["heat"], cmap=cmap))
    ctx.store.put("map", key, arrays, {"data": data, "params": params}, blobs={"overlay.png": png})
    return MapResult("activation", row.name, name, params, json.loads(json.dumps(data)), arrays, png, key, False)


def maskout(ctx: Context, backbone: str | int, image: str | int | Path, *, target: str | int, size: int = 60,
            stride: int = 8, fill: str = "zero", mean_pixel: tuple[float, float, float] | None = None,
            precision: str = "fp32", approx_margin: int | None = None, probe_dataset: str | int | None = None,
            cmap: str = "jet", device: str | None = None, batch_size: int = 32,
            progress: Callable[[int, int], None] | None = None,
            on_message: Callable[[str], None] | None = None) -> MapResult:
    """Probability of ``target`` as a ``size`` x ``size`` blank mask slides over ``image`` with ``stride``
    (study Fig. 5), each position's value drawn at the mask centre. The head is the backbone's own
    classifier, or a linear probe trained on its pooled last-tap features for networks without one."""
    from featscope.datasets.images import load_rgb
    from featscope.extractors.activations import CropGeometry
    from featscope.extractors.maskout import maskout_map
    from featscope.extractors.overlay import overlay

    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if fill == "mean":
        if mean_pixel is None or len(mean_pixel) != 3 or not all(0 <= float(v) <= 255 for v in mean_pixel):
            raise ValueError(f"fill='mean' needs mean_pixel=(R, G, B), the data set's mean pixel in 0..255 (got "
                             f"{mean_pixel!r}); fill='zero' already fills with the network's normalisation mean colour")
        mean_pixel = tuple(float(v) for v in mean_pixel)
    else:
        mean_pixel = None
    path, name, ds_id = resolve_image(ctx, image)
    row = get_backbone_row(ctx, backbone)
    head_id, probe = _head(ctx, row, probe_dataset, ds_id, on_message)
    params = {"target": str(target), "size": int(size), "stride": int(stride), "fill": fill, "precision": precision,
              "cmap": cmap}
    if mean_pixel is not None:
        params["mean_pixel"] = list(mean_pixel)
    if approx_margin is not None:
        params["approx_margin"] = approx_margin
    key, hit = _cached(ctx, "maskout", row, path, name, head_id, params)
    if hit is not None:  # the network is only loaded on a miss
        return hit
    bb, classifier = _classifier(ctx, row, probe)
    target_index = classifier.class_index(target)
    rgb = load_rgb(path)
    crop = bb.preprocess.crop
    if size > crop:
        raise ValueError(f"the mask ({size} px) is larger than the network's {crop} x {crop} input; "
                         f"use --size {crop // 4} or smaller")
    res = maskout_map(classifier, bb.preprocess.to_uint8(rgb), target_index, preprocess=bb.preprocess, size=size,
                      stride=stride, fill=fill, mean_pixel=mean_pixel, precision=precision, approx_margin=approx_margin,
                      device=device or ctx.settings.device,
                      batch_size=batch_size, progress=progress)
    geometry = CropGeometry.of(bb.preprocess, rgb.size)
    heat = np.clip(geometry.to_original(res.full), 0.0, 1.0)
    arrays = {"probs": res.probs, "tops_y": res.tops_y, "tops_x": res.tops_x, "centres_y": res.centres_y,
              "centres_x": res.centres_x, "full": res.full.astype(np.float32), "heat": heat,
              "box": np.asarray(geometry.box, dtype=np.float64)}
    data = {"target": res.target, "class_name": classifier.class_names[res.target], "head": classifier.source,
            "unmasked_probability": res.unmasked, "min_probability": float(res.probs.min()),
            "positions": int(res.probs.size), "engine": res.engine, "seconds": res.seconds,
            "geometry": geometry.to_dict()}
    png = _png(overlay(rgb, heat, cmap=cmap))
    ctx.store.put("map", key, arrays, {"data": data, "params": params}, blobs={"overlay.png": png})
    return MapResult("maskout", row.name, name, params, json.loads(json.dumps(data)), arrays, png, key, False)


def compare_panel(a: MapResult, b: MapResult) -> PILImage.Image:
    """Two backbones' maps of one image side by side, with their signed difference (red: A higher)."""
    from featscope.extractors.overlay import difference_panel, side_by_side

    if a.heat.shape != b.heat.shape:
        raise ValueError("the two maps cover different images; compare maps of the same image")
    img = a.overlay()
    diff = difference_panel(a.heat, b.heat)
    return side_by_side([img, b.overlay(), diff], [a.backbone, b.backbone, f"{a.backbone} - {b.backbone}"])
