"""Activation maps (study Fig. 4) and Grad-CAM-family maps, drawn back onto the original image.

Two public functions: :func:`activation_map` (a tap's activation averaged over channels, plus its
strongest channels) and :func:`gradcam_map` (pytorch-grad-cam for a class of the backbone's own
classifier or of a linear probe). Both return a map at the tap's resolution, the same map upsampled
to the network's input crop, and the :class:`CropGeometry` that places the crop on the original
image, so overlays are drawn on the image the user gave, not on the crop.

Normalisation is min-max over the tap-resolution map: ``(m - min) / (max - min)``. Bilinear
upsampling only forms convex combinations, so upsampled and original-image maps stay in [0, 1].
A constant map (max - min within float32 rounding of its magnitude) carries no spatial information
and normalises to all zeros rather than dividing by zero.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from featscope.datasets.images import to_rgb, load_rgb
from featscope.extractors.heads import Classifier
from featscope.extractors.taps import pool, tap_model
from featscope.extractors.types import Backbone, Preprocess

__all__ = ["CAM_METHODS", "ActivationMap", "CropGeometry", "GradCamMap", "HeatMap", "activation_map", "gradcam_map"]

# featscope name -> pytorch-grad-cam class name. FullGrad (no target layer) and the methods
# that need a reshape for transformers are left out: they do not fit "one conv tap".
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}


@dataclass(frozen=True)
class CropGeometry:
    """Where the network's input crop lies in the original image.

    The preprocessing resizes the original (``original_size``, (W, H)) to ``resized_size`` (short
    side to ``resize``) and cuts a ``crop`` x ``crop`` square at ``offset`` (left, top) of the resized
    image. :meth:`to_original` resamples any map over the crop onto original-image pixels.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int]
    crop: int

    @classmethod
    def of(cls, preprocess: Preprocess, size: tuple[int, int]) -> "CropGeometry":
        """The geometry :meth:`Preprocess.to_uint8` applies to an image of ``size`` (W, H)."""
        w, h = size
        # Same arithmetic as Preprocess.to_uint8 (torchvision Resize(int) + CenterCrop).
        short, long = min(w, h), max(w, h)
        new_long = max(preprocess.crop, int(preprocess.resize * long / short))
        nw, nh = (preprocess.resize, new_long) if w <= h else (new_long, preprocess.resize)
        c = preprocess.crop
        left, top = int(round((nw - c) / 2.0)), int(round((nh - c) / 2.0))
        return cls(original_size=(w, h), resized_size=(nw, nh), offset=(left, top), crop=c)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The crop as (x0, y0, x1, y1) in original-image pixel coordinates (edges, not centres)."""
        (w, h), (nw, nh), (left, top) = self.original_size, self.resized_size, self.offset
        sx, sy = w / nw, h / nh
        return left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy

    def to_original(self, m: np.ndarray) -> np.ndarray:
        """A (h, w) map over the crop -> (H, W) float32 over the original image, NaN outside the crop.

        Bilinear, sampled at each original pixel's centre, with the same convention as
        ``F.interpolate(align_corners=False)``, so any map resolution (tap or crop) works."""
        (w, h), (nw, nh), (left, top) = self.original_size, self.resized_size, self.offset
        px = (np.arange(w) + 0.5) * (nw / w) - left  # pixel centres in crop pixel units
        py = (np.arange(h) + 0.5) * (nh / h) - top
        out = _resample(np.asarray(m, dtype=np.float64), py, px, self.crop)
        out[~((py >= 0) & (py <= self.crop)), :] = np.nan
        out[:, ~((px >= 0) & (px <= self.crop))] = np.nan
        return out.astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"original_size": self.original_size, "resized_size": self.resized_size,
                "offset": self.offset, "crop": self.crop, "box": self.box}


@dataclass
class HeatMap:
    """What every map carries: the tap-resolution map, its crop-resolution upsampling, its
    normalisation, and what is needed to draw it on the original image."""

    backbone: str
    tap: str
    raw: np.ndarray          # (h, w) float32 at the tap's resolution, not normalised
    upsampled: np.ndarray    # (crop, crop) float32, bilinear from ``raw``, not normalised
    normalized: np.ndarray   # (crop, crop) float32 in [0, 1] (min-max of ``raw``)
    geometry: CropGeometry
    image: Image.Image = field(repr=False)  # the RGB original the map is drawn on

    def heat(self) -> np.ndarray:
        """(H, W) float32 in [0, 1] over the original image; NaN where the network saw nothing."""
        return _normalise(self.geometry.to_original(self.raw), self.raw)

    def arrays(self) -> dict[str, np.ndarray]:
        """Raw arrays for ``.npz``: maps, the original-image heat and the crop box."""
        return {"raw": self.raw, "upsampled": self.upsampled, "normalized": self.normalized,
                "heat": self.heat(), "box": np.asarray(self.geometry.box, dtype=np.float64)}


@dataclass
class ActivationMap(HeatMap):
    """Channel-mean activation of a tap and its ``top_channels`` strongest channels.

    ``channels`` are tap channel indices ranked by spatial mean activation (``channel_scores``,
    descending; ties by index); ``channel_raw`` (N, h, w) their activations and ``channel_maps``
    (N, crop, crop) each upsampled and min-max normalised on its own."""

    channels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    channel_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    channel_raw: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    channel_maps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))

    def channel_heat(self, rank: int) -> np.ndarray:
        """Like :meth:`heat` for the ``rank``-th strongest channel (0 = strongest)."""
        if not 0 <= rank < len(self.channels):
            raise IndexError(f"rank {rank} out of range; this map holds {len(self.channels)} top channels "
                             f"(ask activation_map for more with top_channels=N)")
        raw = self.channel_raw[rank]
        return _normalise(self.geometry.to_original(raw), raw)

    def arrays(self) -> dict[str, np.ndarray]:
        return super().arrays() | {"channels": self.channels, "channel_scores": self.channel_scores,
                                   "channel_raw": self.channel_raw, "channel_maps": self.channel_maps}


@dataclass
class GradCamMap(HeatMap):
    """A Grad-CAM-family map for class ``target`` (``class_name``) of a classifier.

    ``raw`` is the method's map at the tap's resolution after ReLU, as pytorch-grad-cam computes it
    before its own resizing; ``score`` and ``probability`` are the class logit and softmax."""

    method: str = "gradcam"
    target: int = 0
    class_name: str = ""
    head: str = ""  # "classifier" or "probe"
    score: float = 0.0
    probability: float = 0.0
    target_chosen: str = "given"  # "given" (the caller's target) or "top-scoring" (none was given)

    def arrays(self) -> dict[str, np.ndarray]:
        return super().arrays() | {"target": np.asarray(self.target), "score": np.asarray(self.score),
                                   "probability": np.asarray(self.probability)}


# --- public functions ---------------------------------------------------------------------------

def activation_map(backbone: Backbone, image: Image.Image | str | os.PathLike[str], *, tap: str = "conv5",
                   top_channels: int = 0, device: str | torch.device | None = None) -> ActivationMap:
    """The tap's activation averaged over channels, over ``image`` as the backbone's preprocessing
    prepares it, plus its ``top_channels`` strongest channels (0 for none).

    ``image`` is a PIL image (used as it is; non-RGB modes converted like :func:`load_rgb`) or a
    path to any image file (decoded by :func:`load_rgb`, EXIF orientation applied)."""
    if isinstance(top_channels, bool) or not isinstance(top_channels, (int, np.integer)) or top_channels < 0:
        raise ValueError(f"top_channels must be an integer >= 0 (0 for none), got {top_channels!r}")
    tap_name = backbone.resolve_tap(tap)
    dev = _device(device)
    rgb = _as_rgb(image)
    geometry = CropGeometry.of(backbone.preprocess, rgb.size)
    x = backbone.preprocess.normalize(backbone.preprocess.to_uint8(rgb)[None].to(dev))
    model = tap_model(backbone, [tap_name]).to(dev)
    with torch.inference_mode():
        act = model(x)[tap_name][0].double().cpu().numpy()  # (C, h, w)
    if act.ndim != 3:
        raise ValueError(f"tap {tap!r} gives an activation of shape {act.shape}, not (C, h, w); "
                         f"activation maps need a convolutional tap")
    if top_channels > act.shape[0]:
        raise ValueError(f"top_channels={top_channels} exceeds the {act.shape[0]} channels of tap {tap!r}; "
                         f"ask for at most {act.shape[0]}")
    raw = act.mean(axis=0).astype(np.float32)
    scores = act.mean(axis=(1, 2))
    order = np.lexsort((np.arange(len(scores)), -scores))[:top_channels]  # descending, ties by index
    channel_raw = act[order].astype(np.float32)
    upsampled = _upsample(raw, geometry.crop)
    return ActivationMap(
        backbone=backbone.spec, tap=tap, raw=raw, upsampled=upsampled,
        normalized=_normalise(upsampled, raw), geometry=geometry, image=rgb,
        channels=order.astype(np.int64), channel_scores=scores[order].astype(np.float32),
        channel_raw=channel_raw,
        channel_maps=np.stack([_normalise(_upsample(c, geometry.crop), c) for c in channel_raw])
        if len(order) else np.zeros((0, geometry.crop, geometry.crop), np.float32))


def gradcam_map(classifier: Classifier, backbone: Backbone, image: Image.Image | str | os.PathLike[str],
                target: str | int | None = None, *, method: str = "gradcam", eigen_smooth: bool = False,
                device: str | torch.device | None = None) -> GradCamMap:
    """A Grad-CAM-family map (``method``, one of :data:`CAM_METHODS`) of class ``target`` at the
    classifier's tap (the backbone's last tap, Conv5 for ResNets). ``target`` None explains the
    top-scoring class, as pytorch-grad-cam does without targets; ``target_chosen`` then says so.

    ``classifier`` comes from :func:`featscope.extractors.heads.classifier_for` (the backbone's own
    classifier or a probe head). The network runs with gradients on but its parameters frozen; its
    train/eval state, ``requires_grad`` flags and ``.grad`` are restored afterwards. ``device``
    None runs where the classifier lives; another device runs on a copy moved there."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    index = None if target is None else classifier.class_index(target)
    net = classifier.net
    here = next(net.parameters()).device
    dev = here if device is None else _device(device)
    if dev != here:
        net = copy.deepcopy(net).to(dev)
    rgb = _as_rgb(image)
    geometry = CropGeometry.of(backbone.preprocess, rgb.size)
    cam_net = _CamNet(net)
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = _capturing(getattr(pytorch_grad_cam, CAM_METHODS[method]))
    with _grad_ready(net), torch.inference_mode(False), torch.enable_grad():
        x = backbone.preprocess.normalize(backbone.preprocess.to_uint8(rgb)[None].to(dev))
        cam = cls(model=cam_net, target_layers=[cam_net.at_tap])
        try:
            # The input carries the gradient so the tap does even when every parameter is frozen.
            cam(input_tensor=x.clone().requires_grad_(True),
                targets=None if index is None else [ClassifierOutputTarget(index)], eigen_smooth=eigen_smooth)
            logits = cam.outputs.detach()[0].double().cpu()
        finally:
            cam.activations_and_grads.release()
    if not cam.raw_cams:
        raise RuntimeError(f"{method} produced no map: the tap {net.tap!r} was not reached")
    chosen = "given"
    if index is None:  # what pytorch-grad-cam explained without targets: the arg-max of the same logits
        index, chosen = int(torch.argmax(logits)), "top-scoring"
    raw = np.maximum(np.asarray(cam.raw_cams[-1], dtype=np.float64)[0], 0).astype(np.float32)
    upsampled = _upsample(raw, geometry.crop)
    return GradCamMap(
        backbone=backbone.spec, tap=net.tap, raw=raw, upsampled=upsampled, normalized=_normalise(upsampled, raw),
        geometry=geometry, image=rgb, method=method, target=index, class_name=classifier.class_names[index],
        head=classifier.source, score=float(logits[index]), probability=float(torch.softmax(logits, 0)[index]),
        target_chosen=chosen)


# --- helpers ------------------------------------------------------------------------------------

class _CamNet(nn.Module):
    """The classifier with an identity module on its tap, for pytorch-grad-cam to hook.

    The classifier's body is an FX graph module (create_feature_extractor inlines ``layer4``, so
    a hook on that submodule never fires) or a hook-based wrapper; the identity sits on the tap's
    output in both cases, so it sees exactly the activation the head reads."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.at_tap = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(pool(self.at_tap(self.net.features(x)), "avg"))


def _capturing(cls: type) -> type:
    """A subclass of a pytorch-grad-cam class that keeps each map before the library resizes it."""

    class Capturing(cls):  # type: ignore[misc, valid-type]
        raw_cams: list[np.ndarray]

        def get_cam_image(self, *args, **kwargs):
            out = super().get_cam_image(*args, **kwargs)
            self.raw_cams = [*getattr(self, "raw_cams", []), out]
            return out

    Capturing.__name__ = cls.__name__
    Capturing.raw_cams = []
    return Capturing


@contextmanager
def _grad_ready(net: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; training flags, requires_grad and .grad restored."""
    modes = [(m, m.training) for m in net.modules()]
    params = [(p, p.requires_grad, p.grad) for p in net.parameters()]
    try:
        net.eval()
        for p, _, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires, grad in params:
            p.requires_grad_(requires)
            p.grad = grad


def _as_rgb(image: Image.Image | str | os.PathLike[str]) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ValueError(f"image has no pixels ({image.width}x{image.height})")
        return image if image.mode == "RGB" else to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(Path(image))  # ImageDecodeError says what is wrong with the file
    raise TypeError(f"image must be a PIL image or a path to an image file, got {type(image).__name__}")


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU; use device=None or 'cpu'")
    return dev


def _upsample(m: np.ndarray, size: int) -> np.ndarray:
    """(h, w) -> (size, size) bilinear, as ``F.interpolate(align_corners=False)``."""
    centres = np.arange(size) + 0.5
    return _resample(np.asarray(m, dtype=np.float64), centres, centres, size).astype(np.float32)


def _resample(m: np.ndarray, ys: np.ndarray, xs: np.ndarray, extent: float) -> np.ndarray:
    """Bilinear samples of ``m`` (covering [0, extent]^2) at positions ``ys`` x ``xs`` (separable)."""
    return _weights(ys, m.shape[0], extent) @ m @ _weights(xs, m.shape[1], extent).T


def _weights(pos: np.ndarray, n: int, extent: float) -> np.ndarray:
    """(len(pos), n) linear-interpolation weights for edge-based positions in [0, extent]; the border
    value extends past the first and last sample centres."""
    s = np.clip(pos * (n / extent) - 0.5, 0.0, n - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = s - i0
    w = np.zeros((len(pos), n))
    rows = np.arange(len(pos))
    np.add.at(w, (rows, i0), 1.0 - frac)
    np.add.at(w, (rows, i1), frac)
    return w


def _normalise(m: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Min-max by ``ref``'s range; all zeros (NaN kept) when ``ref`` is constant."""
    lo, hi = float(np.min(ref)), float(np.max(ref))
    span = hi - lo
    if not np.isfinite(span) or span <= np.finfo(np.float32).eps * max(1.0, abs(lo), abs(hi)):
        return np.where(np.isnan(m), np.nan, 0.0).astype(np.float32)
    return np.clip((m - lo) / span, 0.0, 1.0).astype(np.float32)
