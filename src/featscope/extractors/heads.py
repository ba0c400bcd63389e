"""Classification heads on a backbone: its own classifier or a linear probe, as one image -> logits network.

The study replaces a detection network's head by a linear classifier trained on its pooled Conv5
features (a probe) and keeps a classification network's own classifier. Both become the same
thing here: the body up to the last tap, average pooling, and a ``Linear`` on the pooled vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from featscope.extractors.taps import pool, tap_model
from featscope.extractors.types import Backbone


def probe_linear(coef: np.ndarray, intercept: np.ndarray, scaler_mean: np.ndarray,
                 scaler_scale: np.ndarray) -> nn.Linear:
    """A ``Linear`` equal to a standardise-then-linear probe: ``((f - mean) / scale) @ coef.T + intercept``.

    The standardisation is folded into the weights (W = coef / scale, b = intercept - W @ mean), so
    the probe costs one matrix product on the device."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64).ravel()
    mean = np.asarray(scaler_mean, dtype=np.float64).ravel()
    scale = np.asarray(scaler_scale, dtype=np.float64).ravel()
    if coef.ndim != 2 or intercept.shape != (coef.shape[0],) or mean.shape != (coef.shape[1],) \
            or scale.shape != (coef.shape[1],):
        raise ValueError(f"probe arrays disagree: coef {coef.shape}, intercept {intercept.shape}, "
                         f"scaler_mean {mean.shape}, scaler_scale {scale.shape}; expected (C, D), (C,), (D,), (D,)")
    if not (scale > 0).all():
        raise ValueError("scaler_scale must be positive everywhere")
    w = coef / scale
    linear = nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.copy_(torch.from_numpy(intercept - w @ mean))
    return linear.eval()


class ClassifierNet(nn.Module):
    """Normalised image batch (B, 3, H, W) -> class logits (B, C): body to ``tap``, average pool, ``head``."""

    def __init__(self, body: nn.Module, tap: str, head: nn.Module) -> None:
        super().__init__()
        self.body, self.tap, self.head = body, tap, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The tap's activation map (B, C, h, w)."""
        return self.body(x)[self.tap]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pool(self.features(x), "avg"))


@dataclass
class Classifier:
    """A classification network built on a backbone, with its class names and where its head came from."""

    net: ClassifierNet
    class_names: list[str]
    source: str  # "classifier" (the backbone's own) or "probe"

    def class_index(self, target: str | int) -> int:
        """Index of ``target`` (a class name, or an index as int or digit string); a clear error otherwise."""
        if isinstance(target, str) and target in self.class_names:
            return self.class_names.index(target)
        if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.isdigit()):
            i = int(target)
            if 0 <= i < len(self.class_names):
                return i
        shown = ", ".join(self.class_names[:20]) + (" ..." if len(self.class_names) > 20 else "")
        raise ValueError(f"unknown class {target!r}; the {self.source} knows {len(self.class_names)} classes: {shown} "
                         f"(pass a class name or an index 0..{len(self.class_names) - 1})")


def classifier_for(backbone: Backbone, probe: nn.Linear | None = None,
                   probe_classes: Sequence[str] | None = None) -> Classifier:
    """The backbone's own classifier, or (for a network without one, or when given) a probe head.

    The head reads the average-pooled last tap (Conv5 for ResNets), as both the backbone's own
    classifier and featscope's probes on ``conv5``/``avg`` do."""
    tap = list(backbone.taps)[-1]
    if probe is not None:
        names = [str(c) for c in (probe_classes if probe_classes is not None else range(probe.out_features))]
        if len(names) != probe.out_features:
            raise ValueError(f"probe has {probe.out_features} outputs but {len(names)} class names")
        head, source = probe, "probe"
    elif backbone.classifier is not None:
        head, source = backbone.classifier, "classifier"
        n = backbone.classifier.out_features
        names = list(backbone.class_names) if backbone.class_names else [str(i) for i in range(n)]
    else:
        raise ValueError(
            f"backbone {backbone.spec!r} has no classifier; train a linear probe on its {tap}/avg features first "
            f"(`featscope analyze probe EMBEDDING_SET`, POST /api/v1/analyses/probe) and use it as the head")
    import copy

    net = ClassifierNet(tap_model(backbone, [tap]), tap, copy.deepcopy(head).eval()).eval()
    return Classifier(net=net, class_names=names, source=source)
