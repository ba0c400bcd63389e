"""Layer taps: pull intermediate activations out of a backbone and pool them to vectors.

Two public names: :func:`pool` and :func:`tap_model`. A tap model is built with
``torchvision.models.feature_extraction`` (FX), which also truncates the network after the
last requested tap; models FX cannot trace fall back to forward hooks that are always removed.
"""

from __future__ import annotations

from collections.abc import Sequence
import copy

import torch
import torch.nn.functional as F
from torch import nn

from featscope.extractors.types import Backbone

POOLINGS = ("avg", "max", "grid2", "grid4", "none")


def pool(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, H, W) activation -> (B, D) vectors.

    ``avg``/``max``: global pooling, D = C. ``grid2``/``grid4``: adaptive average pooling to a
    2x2 / 4x4 grid, flattened channel-major (D = C*4 / C*16), as the study's ConvProj probes.
    ``none``: the full map flattened (D = C*H*W).
    """
    if x.ndim != 4:
        raise ValueError(f"pool expects a (B, C, H, W) activation, got shape {tuple(x.shape)}")
    if pooling == "avg":
        return x.mean(dim=(2, 3))
    if pooling == "max":
        return x.amax(dim=(2, 3))
    if pooling in ("grid2", "grid4"):
        g = 2 if pooling == "grid2" else 4
        return F.adaptive_avg_pool2d(x, g).flatten(1)
    if pooling == "none":
        return x.flatten(1)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def pooled_dim(channels: int, height: int, width: int, pooling: str) -> int:
    """Length of the vector :func:`pool` makes from a (C, H, W) activation."""
    sizes = {"avg": channels, "max": channels, "grid2": channels * 4, "grid4": channels * 16,
             "none": channels * height * width}
    if pooling not in sizes:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return sizes[pooling]


class _HookTaps(nn.Module):
    """Fallback for models FX cannot trace: run the whole model, catch taps with forward hooks."""

    def __init__(self, model: nn.Module, nodes: dict[str, str]) -> None:
        super().__init__()
        self.model = model
        self.nodes = nodes  # node (module name) -> tap name
        modules = dict(model.named_modules())
        missing = [n for n in nodes if n not in modules]
        if missing:
            raise ValueError(f"model has no module(s) {missing}; tap nodes must be module names")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        handles = []
        try:
            for node, tap in self.nodes.items():
                handles.append(modules[node].register_forward_hook(_store(out, tap)))
            self.model(x)
        finally:
            for h in handles:
                h.remove()
        return out


def _store(out: dict[str, torch.Tensor], tap: str):
    def hook(_module: nn.Module, _inputs, output) -> None:
        # Copy: a later in-place op (e.g. DenseNet's relu(inplace=True) after norm5) would alter it.
        out[tap] = output.clone()

    return hook


def tap_model(backbone: Backbone, taps: Sequence[str]) -> nn.Module:
    """A module mapping a normalised input batch to ``{tap: activation}`` for the given taps.

    Tap names may be aliases (``conv5``); the returned dict is keyed by the names as given.
    The tap model works on its own copy of the network (FX graph modules share submodules with
    the traced model), so it is in eval mode while the backbone's model keeps its state.
    """
    if not taps:
        raise ValueError("ask for at least one tap; `featscope backbone layers NAME` (GET /api/v1/backbones/NAME/taps) lists them")
    nodes: dict[str, str] = {}
    for name in taps:
        nodes[backbone.taps[backbone.resolve_tap(name)]] = name
    if len(nodes) != len(taps):
        raise ValueError(f"taps {list(taps)} name the same layer more than once")
    from torchvision.models.feature_extraction import create_feature_extractor

    model = copy.deepcopy(backbone.model).eval()
    try:
        extractor = create_feature_extractor(model, return_nodes=dict(nodes))
    except Exception:  # noqa: BLE001 - any FX tracing failure means "use hooks instead"
        extractor = _HookTaps(model, nodes)
    return extractor.eval()
