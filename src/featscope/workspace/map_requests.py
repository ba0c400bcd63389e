"""Checking a map request without running a network: what a server does before it queues the job.

Every check here reads only the catalog (the backbone's recorded taps, classes and input size, the
data sets, the embedding sets), so a bad request is refused at once, with a 4xx from the REST API,
instead of failing in a worker later. :func:`featscope.workspace.maps.heatmap` and ``maskout`` run the
same checks first, so the CLI and the Python API refuse the same requests with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from featscope.catalog import Backbone as BackboneRow, Dataset, EmbeddingSet, Image
from featscope.workspace.backbones import get_backbone_row, recorded_classes, recorded_taps, tap_choices
from featscope.workspace.context import Context, NotFound
from featscope.workspace.datasets import get_dataset

METHODS = ("mean", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")
FILLS = ("zero", "mean", "blur")
PRECISIONS = ("fp32", "bf16", "fp16", "mixed")
SCALES = ("relative", "absolute", "drop")


@dataclass(frozen=True)
class MapRequest:
    """A checked request: the backbone's row, the image file, its display name and catalog data set, the
    parameters as they key the map (``target`` a string or None)."""

    row: BackboneRow
    path: Path
    name: str
    dataset_id: int | None
    params: dict[str, Any]


def resolve_image(ctx: Context, image: str | int | Path) -> tuple[Path, str, int | None]:
    """(file, display name, catalog dataset id or None) for a catalog image id or a file path."""
    if isinstance(image, int) or (isinstance(image, str) and image.isdigit()):
        with ctx.session() as s:
            row = s.get(Image, int(image))
            if row is None:
                raise NotFound(f"no image {image} in the catalog; `featscope dataset images NAME` (GET "
                               f"/api/v1/images?dataset=NAME) lists ids, or pass an image file")
            if row.error is not None:
                raise ValueError(f"image {image} ({row.relpath}) could not be decoded when it was registered: "
                                 f"{row.error}")
            ds = s.get(Dataset, row.dataset_id)
            return Path(ds.root) / row.relpath, row.relpath, ds.id
    path = Path(image).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; pass an image file or a catalog image id")
    return path, path.name, None


def check_heatmap(ctx: Context, backbone: str | int, image: str | int | Path, *, tap: str = "conv5",
                  method: str = "mean", target: str | int | None = None, top_channels: int = 0,
                  probe_dataset: str | int | None = None, cmap: str = "jet") -> MapRequest:
    """Check a heatmap request; ``target`` None with a Grad-CAM method explains the top-scoring class."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(top_channels, bool) or not isinstance(top_channels, int) or top_channels < 0:
        raise ValueError(f"top_channels must be an integer >= 0 (0 for none), got {top_channels!r}")
    _check_cmap(cmap)
    row = get_backbone_row(ctx, backbone)
    channels = _check_tap(row, tap)
    if channels is not None and top_channels > channels:
        raise ValueError(f"top_channels={top_channels} exceeds the {channels} channels of tap {tap!r}; "
                         f"ask for at most {channels}")
    path, name, ds_id = resolve_image(ctx, image)
    if method != "mean":
        _check_head(ctx, row, probe_dataset, ds_id, target)
    params = {"tap": tap, "method": method, "target": None if target is None else str(target),
              "top_channels": int(top_channels), "cmap": cmap}
    return MapRequest(row, path, name, ds_id, params)


def check_maskout(ctx: Context, backbone: str | int, image: str | int | Path, *, target: str | int, size: int = 60,
                  stride: int = 8, fill: str = "zero", mean_pixel: tuple[float, float, float] | None = None,
                  precision: str = "fp32", approx_margin: int | None = None, probe_dataset: str | int | None = None,
                  cmap: str = "jet", scale: str = "relative") -> MapRequest:
    """Check a mask-out request: mask size against the backbone's input, fill, precision, head and target."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if fill == "mean":
        if mean_pixel is None or len(mean_pixel) != 3 or not all(0 <= float(v) <= 255 for v in mean_pixel):
            raise ValueError(f"fill='mean' needs mean_pixel=(R, G, B), the data set's mean pixel in 0..255 (got "
                             f"{mean_pixel!r}); fill='zero' already fills with the network's normalisation mean colour")
        mean_pixel = tuple(float(v) for v in mean_pixel)
    else:
        mean_pixel = None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if approx_margin is not None and (isinstance(approx_margin, bool) or not isinstance(approx_margin, int)
                                      or approx_margin < 0):
        raise ValueError(f"approx_margin must be omitted (exact) or a number of cells >= 0, got {approx_margin!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    _check_cmap(cmap)
    for what, value in (("size (the mask's side in pixels)", size), ("stride (pixels between mask positions)", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if target is None or str(target) == "":
        raise ValueError("a mask-out map follows one class: give its name or index as the target")
    row = get_backbone_row(ctx, backbone)
    path, name, ds_id = resolve_image(ctx, image)
    crop = int(row.preprocess["crop"])
    if size > crop:
        raise ValueError(f"the mask ({size} px) is larger than the network's {crop} x {crop} input; "
                         f"give a size of at most {crop} (the study masks 60 of 224 px: about {max(1, round(crop * 60 / 224))} "
                         f"here)")
    _check_head(ctx, row, probe_dataset, ds_id, target)
    params = {"target": str(target), "size": int(size), "stride": int(stride), "fill": fill, "precision": precision,
              "cmap": cmap, "scale": scale}
    if mean_pixel is not None:
        params["mean_pixel"] = list(mean_pixel)
    if approx_margin is not None:
        params["approx_margin"] = approx_margin
    return MapRequest(row, path, name, ds_id, params)


def probe_dataset_for(row: BackboneRow, probe_dataset: str | int | None, image_dataset: int | None) -> str | int | None:
    """The data set whose probe is the head, or None when the backbone's own classifier is."""
    if probe_dataset is None and row.has_classifier:
        return None
    if probe_dataset is not None:
        return probe_dataset
    if image_dataset is None:
        raise ValueError(f"backbone {row.name!r} has no classifier of its own; give a labelled data set it has "
                         f"{_last_tap(row)}/avg embeddings of as the probe data set (--probe-dataset NAME, REST: "
                         f"probe_dataset), so a linear probe trained on its features serves as the classification "
                         f"layer, as the study does")
    return image_dataset


def _check_head(ctx: Context, row: BackboneRow, probe_dataset: str | int | None, image_dataset: int | None,
                target: str | int | None) -> None:
    ds_ref = probe_dataset_for(row, probe_dataset, image_dataset)
    if ds_ref is None:
        classes, what = recorded_classes(row), f"the classifier of {row.name!r}"
    else:
        ds = get_dataset(ctx, ds_ref)
        if not ds.classes:
            raise ValueError(f"data set {ds.name!r} has no class labels, so no probe can be trained on it; give a "
                             f"labelled data set (an ImageFolder, a CSV with labels, COCO or VOC) as the probe data set")
        tap = _last_tap(row)
        with ctx.session() as s:
            found = s.scalars(select(EmbeddingSet.id).where(
                EmbeddingSet.backbone_id == row.id, EmbeddingSet.dataset_id == ds.id, EmbeddingSet.tap == tap,
                EmbeddingSet.pooling == "avg")).first()
        if found is None:
            raise NotFound(f"backbone {row.name!r} has no {tap}/avg embeddings of {ds.name!r} to train its probe "
                           f"head on; extract them first (`featscope extract -b {row.name} -d {ds.name} -t {tap} "
                           f"-p avg`, or POST /api/v1/embedding-sets/extract with taps [\"{tap}\"])")
        classes, what = list(ds.classes), f"the probe on {ds.name!r}"
    if target is None or classes is None:
        return
    if str(target) in classes:
        return
    if (isinstance(target, int) or str(target).isdigit()) and 0 <= int(target) < len(classes):
        return
    shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
    raise ValueError(f"unknown class {target!r}; {what} knows {len(classes)} classes: {shown} "
                     f"(give a class name or an index 0..{len(classes) - 1})")


def _check_tap(row: BackboneRow, tap: str) -> int | None:
    """Refuse a tap the backbone does not have; its channel count when recorded."""
    names, aliases = tap_choices(row)
    if tap not in names and tap not in aliases:
        choices = ", ".join(names + [f"{a} (={t})" if t else a for a, t in aliases.items()])
        raise ValueError(f"backbone {row.name!r} has no tap {tap!r}; it offers: {choices}")
    name = aliases.get(tap) or tap
    return next((t.channels for t in recorded_taps(row) or [] if t.name == name), None)


def _last_tap(row: BackboneRow) -> str:
    return list(row.taps)[-1]


def _check_cmap(cmap: str) -> None:
    from featscope.extractors.overlay import colormap

    colormap([0.0], cmap)  # ValueError naming the choices for an unknown map
