"""The two value types every extractor shares: how images are prepared, and a loaded backbone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize (short side), centre-crop, normalise: the part of a backbone that travels with it.

    The CPU side (:meth:`to_uint8`) stops at a uint8 CHW tensor so loader workers ship 4x less
    data and normalisation runs batched on the device (:meth:`normalize`).
    ``pixel_scale`` is 1.0 for networks fed [0, 1] pixels (torchvision, timm) and 255.0 for
    networks fed [0, 255] (Detectron2's Caffe2-style weights); ``channel_order`` "BGR" likewise.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: Literal["RGB", "BGR"] = "RGB"
    pixel_scale: float = 1.0
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    def __post_init__(self) -> None:
        if self.resize < 1 or self.crop < 1:
            raise ValueError(f"resize and crop must be positive, got resize={self.resize}, crop={self.crop}")
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) cannot exceed resize ({self.resize}); lower crop or raise resize")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need three values each, std all positive")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")

    def to_uint8(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 tensor (3, crop, crop): short side to ``resize``, centre crop."""
        # Same arithmetic as torchvision's Resize(int) + CenterCrop on PIL images (long side
        # truncated, crop offset rounded), so crops are pixel-identical to the standard pipeline.
        w, h = image.size
        short, long = min(w, h), max(w, h)
        new_long = max(self.crop, int(self.resize * long / short))
        nw, nh = (self.resize, new_long) if w <= h else (new_long, self.resize)
        image = image.resize((nw, nh), _INTERPOLATIONS[self.interpolation])
        left, top = int(round((nw - self.crop) / 2.0)), int(round((nh - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        t = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(self.crop, self.crop, 3)
        return t.permute(2, 0, 1).contiguous()

    def normalize(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (B, 3, H, W) RGB on any device -> normalised float input in the network's channel order."""
        x = batch.to(dtype=torch.float32)
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x * (self.pixel_scale / 255.0) - mean) / std
        return x.to(dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


@dataclass
class Backbone:
    """A loaded network ready for extraction, with everything needed to key its caches.

    ``model`` is in eval mode; ``taps`` maps each public tap name (``layer1``..``layer4`` for
    ResNets) to the node name inside ``model`` that ``torchvision.models.feature_extraction``
    understands; ``aliases`` maps the study's names (``conv2``..``conv5``) onto taps.
    ``classifier`` maps the average-pooled last tap to logits when the network has one
    (classification nets); detection bodies have none.
    """

    spec: str
    source: str
    arch: str
    model: nn.Module
    preprocess: Preprocess
    fingerprint: str
    taps: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)
    classifier: nn.Module | None = None
    class_names: list[str] | None = None
    weights: str | None = None
    weights_format: str | None = None

    def resolve_tap(self, name: str) -> str:
        """Public tap name for ``name`` (an alias or a tap), or a ValueError that lists the choices."""
        if name in self.taps:
            return name
        if name in self.aliases:
            return self.aliases[name]
        choices = ", ".join(list(self.taps) + [f"{a} (={t})" for a, t in self.aliases.items()])
        raise ValueError(
            f"backbone {self.spec!r} has no tap {name!r}; it offers: {choices}. "
            f"`featscope backbone layers NAME` (GET /api/v1/backbones/NAME/taps) lists them."
        )
