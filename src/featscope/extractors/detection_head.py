"""The study's detection head and a detection network as a backbone with head taps.

Public names: :class:`StudyBoxHead`, :class:`ProjectedRoIPool`, :class:`DetectionTapModel`, :data:`DETECTION_TAPS`,
:func:`detection_tap_model`.

The head is the study's: RoIAlign on Conv5 -> **ConvProj** (1x1 conv, 256) -> **FC1** (1024) ->
**FC2** (1024), each followed by a ReLU (written here because torchvision's ``TwoMLPHead`` has no
ConvProj). :class:`DetectionTapModel` runs a trained detector's trunk and head with the whole image
as the one RoI, so ``convproj``, ``fc1`` and ``fc2`` become taps like ``layer4`` (the study's Table 5).
It lives with the extractors because loading a ``run:`` backbone builds it; training builds the
detector around the same :class:`StudyBoxHead`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StudyBoxHead(nn.Module):
    """RoI features (N, C, R, R) -> ConvProj (1x1 conv to ``proj_channels``) -> FC1 -> FC2 (each + ReLU).

    Computed as *project, then pool*: :meth:`project` applies ConvProj's weights to the whole feature
    map, RoIAlign pools the projected map, and :meth:`forward` adds ConvProj's bias and goes on. This is
    the same function (a 1x1 conv is linear per pixel and RoIAlign is a weighted average, so they
    commute; the bias and ReLU come after both), but RoIAlign then moves 256 channels instead of
    Conv5's 512-2048, and the 1x1 conv runs once per image instead of once per RoI: on a 2-core CPU,
    ResNet-18 at 128 px, this halved RoIAlign's backward, the largest single cost of a training step.
    The ReLUs are modules so the taps ``convproj``, ``fc1``, ``fc2`` can name their outputs.
    """

    def __init__(self, in_channels: int, roi_size: int = 14, proj_channels: int = 256, fc_dim: int = 1024) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.convproj = nn.Conv2d(in_channels, proj_channels, kernel_size=1)
        self.relu_convproj = nn.ReLU(inplace=False)
        self.fc1 = nn.Linear(proj_channels * roi_size * roi_size, fc_dim)
        self.relu_fc1 = nn.ReLU(inplace=False)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.relu_fc2 = nn.ReLU(inplace=False)
        self.out_channels = fc_dim

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """ConvProj's weights (no bias) over a whole feature map, before RoIAlign."""
        return F.conv2d(features, self.convproj.weight)

    def activate(self, pooled: torch.Tensor) -> torch.Tensor:
        """ConvProj's output from pooled projected features: bias, then ReLU."""
        return self.relu_convproj(pooled + self.convproj.bias.view(1, -1, 1, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled *projected* RoI features (N, proj_channels, R, R) -> FC2 output (N, fc_dim)."""
        x = self.activate(pooled)
        x = self.relu_fc1(self.fc1(x.flatten(1)))
        return self.relu_fc2(self.fc2(x))


class ProjectedRoIPool(nn.Module):
    """The detector's RoI pooler for a :class:`StudyBoxHead`: ConvProj's weights over every feature
    level, then torchvision's ``MultiScaleRoIAlign``. Holds the head without registering it (its
    parameters belong to the box head, once)."""

    def __init__(self, pool: nn.Module, head: StudyBoxHead) -> None:
        super().__init__()
        self.pool = pool
        self._head = [head]

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        head = self._head[0]
        projected = {k: head.project(v) for k, v in features.items()}
        return self.pool(projected, proposals, image_shapes)


@torch.fx.wrap
def _whole_image_rois(images: torch.Tensor) -> torch.Tensor:
    """One RoI per image covering all of it: (B, 5) rows ``[batch index, 0, 0, W, H]``."""
    b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    rois = torch.zeros(b, 5, dtype=images.dtype, device=images.device)
    rois[:, 0] = torch.arange(b, dtype=images.dtype, device=images.device)
    rois[:, 3], rois[:, 4] = float(w), float(h)
    return rois


@torch.fx.wrap
def _roi_scale(features: torch.Tensor, images: torch.Tensor) -> float:
    """The feature map's scale as torchvision's ``MultiScaleRoIAlign`` infers it (a power of two)."""
    return 2.0 ** round(math.log2(features.shape[-1] / images.shape[-1]))


class _WholeImageRoIAlign(nn.Module):
    """RoIAlign of the whole image on a feature map, exactly as the detector pools a proposal."""

    def __init__(self, output_size: int, sampling_ratio: int = 2) -> None:
        super().__init__()
        self.output_size, self.sampling_ratio = output_size, sampling_ratio

    def forward(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        rois = _whole_image_rois(images).to(features.dtype)
        return roi_align(features, rois, self.output_size, _roi_scale(features, images), self.sampling_ratio)


class DetectionTapModel(nn.Module):
    """A detection run's network as a featscope backbone: the ResNet trunk (taps ``layer1``..``layer4``)
    and the study's head over the whole image as the RoI (taps ``convproj`` (C, R, R), ``fc1`` and ``fc2``
    as (D, 1, 1) maps). State-dict keys: the trunk's torchvision names and ``head.*``."""

    def __init__(self, trunk: nn.Module, head: StudyBoxHead) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(trunk, name))
        self.head = head
        self.roi_align = _WholeImageRoIAlign(head.roi_size)
        self.fc1_map = nn.Unflatten(1, (head.fc1.out_features, 1, 1))
        self.fc2_map = nn.Unflatten(1, (head.fc2.out_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.layer4(self.layer3(self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))))
        proj = self.head.activate(self.roi_align(self.head.project(c5), x))
        f1 = self.fc1_map(self.head.relu_fc1(self.head.fc1(proj.flatten(1))))
        f2 = self.head.relu_fc2(self.head.fc2(f1.flatten(1)))
        return self.fc2_map(f2)


DETECTION_TAPS = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4",
                  "convproj": "head.relu_convproj", "fc1": "fc1_map", "fc2": "fc2_map"}


def detection_tap_model(arch: str, *, dilated: bool, roi_size: int, proj_channels: int, fc_dim: int,
                        frozen_bn: bool = False) -> DetectionTapModel:
    """An empty :class:`DetectionTapModel` shaped like a C5 detector of ``arch`` (fill it with ``load_state_dict``)."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    kwargs = {"replace_stride_with_dilation": [False, False, True]} if dilated else {}
    if frozen_bn:
        kwargs["norm_layer"] = FrozenBatchNorm2d
    trunk = torchvision.models.get_model(arch, weights=None, **kwargs)
    head = StudyBoxHead(trunk.fc.in_features, roi_size, proj_channels, fc_dim)
    return DetectionTapModel(trunk, head)
