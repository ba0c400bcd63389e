"""The networks featscope trains: a ResNet classifier, a Faster R-CNN with the study's box head, and a
DeepLabV3 segmenter.

Public names: :func:`build_trunk`, :func:`initial_trunk`, :func:`build_classifier`, :func:`build_detector`,
:func:`build_segmenter`, :func:`segmenter_stride`, :func:`trunk_state`, :func:`load_trunk`,
:func:`detector_to_tap_state`.

The detector is torchvision's ``FasterRCNN`` (RPN, RoIAlign, losses, post-processing); only the box
head is written here, because the study's head is not torchvision's: RoIAlign on Conv5 (14x14) ->
**ConvProj** (1x1 conv to 256) -> **FC1** (1024) -> **FC2** (1024) -> class scores and box
regression (torchvision's ``TwoMLPHead`` flattens the RoI straight into its first FC, and
``FastRCNNConvFCHead`` uses 3x3 convs); it lives in :mod:`featscope.extractors.detection_head`. The body is the same torchvision ResNet the classifier uses,
so the two runs start from one initialisation and their trunks have the same state-dict keys
(``conv1``, ``bn1``, ``layer1``..``layer4``): the trunk of either run loads into a plain torchvision
ResNet. ResNet-50/101 detectors dilate Conv5 (stride 16, the study's 2048x14x14 maps); ResNet-18/34
cannot (torchvision's BasicBlock has no dilation) and keep plain C5 (stride 32). ``fpn=True``
puts torchvision's FPN on ``layer1``..``layer4`` instead (the head then reads 256-channel levels).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from featscope.extractors.detection_head import ProjectedRoIPool, StudyBoxHead

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_BOTTLENECK = ("resnet50", "resnet101")
TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def check_arch(arch: str) -> None:
    """Refuse architectures the training code does not build."""
    if arch not in RESNETS:
        raise ValueError(f"training supports {', '.join(RESNETS)}; got arch={arch!r}")


def can_dilate(arch: str) -> bool:
    """Whether Conv5 of ``arch`` can be dilated (bottleneck ResNets only)."""
    return arch in _BOTTLENECK


def build_trunk(arch: str, *, num_classes: int = 1000, dilated: bool = False, frozen_bn: bool = False) -> nn.Module:
    """A randomly initialised torchvision ResNet (seed torch first for a reproducible one).

    ``dilated``: Conv5 keeps stride 16 with dilation 2 (ResNet-50/101 only). ``frozen_bn``:
    ``FrozenBatchNorm2d`` as in torchvision's detectors (for small per-device batches).
    """
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    check_arch(arch)
    if dilated and not can_dilate(arch):
        raise ValueError(f"{arch} cannot dilate Conv5 (torchvision's BasicBlock has no dilation); "
                         f"set dilated=False or use resnet50/resnet101")
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if dilated:
        kwargs["replace_stride_with_dilation"] = [False, False, True]
    if frozen_bn:
        kwargs["norm_layer"] = FrozenBatchNorm2d
    return torchvision.models.get_model(arch, weights=None, **kwargs)


def initial_trunk(arch: str, seed: int, *, zero_init_residual: bool = True) -> dict[str, torch.Tensor]:
    """The seeded random trunk both pre-training runs start from (the same tensors for a classifier
    and a detector: a classifier's ``fc`` draws its random numbers after the trunk's, a detector has none).

    ``zero_init_residual``: each residual block's last BatchNorm starts at zero (Goyal et al. 2017), so
    every block starts as the identity; this kept the first hundred iterations from scratch stable where
    the default initialisation sent the loss far above chance. Only for trainable BatchNorm: a
    FrozenBatchNorm's scale never moves, so its blocks would stay switched off.
    """
    import torchvision

    check_arch(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return trunk_state(torchvision.models.get_model(arch, weights=None, zero_init_residual=zero_init_residual))


def trunk_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trunk tensors (``conv1``..``layer4``) of a ResNet, a detector, a segmenter or a DDP wrapper,
    torchvision names."""
    model = _trunk_of(getattr(model, "module", model))
    return {k: v for k, v in model.state_dict().items() if k.startswith(TRUNK_PREFIXES)}


def load_trunk(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Fill the trunk of ``model`` (a ResNet or a detector) from ``state``, exactly: a missing or
    mis-shaped tensor is an error naming it. FrozenBatchNorm has no ``num_batches_tracked``."""
    target = _trunk_of(model)
    own = {k: v for k, v in target.state_dict().items() if k.startswith(TRUNK_PREFIXES)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k.startswith(TRUNK_PREFIXES) and k not in own
             and not k.endswith("num_batches_tracked")]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"shape mismatch at {bad[:3]}")
        raise ValueError(f"the trunk of {source} does not fit this network ({detail}); initialise from a "
                         f"backbone of the same architecture")
    target.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _trunk_of(model: nn.Module) -> nn.Module:
    """The module holding the trunk's tensors: a detector's ``backbone.body``, a segmenter's ``backbone``
    (an ``IntermediateLayerGetter``, same names), or the ResNet itself."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return model
    return getattr(backbone, "body", backbone)


def build_classifier(arch: str, num_classes: int, *, frozen_bn: bool = False) -> nn.Module:
    """ResNet + linear classifier on the average-pooled Conv5 (torchvision's own ``fc``)."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    return build_trunk(arch, num_classes=num_classes, frozen_bn=frozen_bn)


class _C5(nn.Module):
    """The detector's body: the ResNet trunk up to Conv5, as a one-level feature dict ``{"0": C5}``."""

    def __init__(self, resnet: nn.Module, out_channels: int) -> None:
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter

        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.body(x)


def _freeze(resnet: nn.Module, trainable_layers: int) -> None:
    """Leave only the last ``trainable_layers`` stages of (conv1, layer1..layer4) trainable, as torchvision does."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5, got {trainable_layers}")
    keep = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        keep.append("bn1")
    for name, p in resnet.named_parameters():
        if all(not name.startswith(k) for k in keep):
            p.requires_grad_(False)


def build_detector(arch: str, num_classes: int, *, dilated: bool | None = None, fpn: bool = False,
                   frozen_bn: bool = True, trainable_layers: int = 5, roi_size: int = 14, proj_channels: int = 256,
                   fc_dim: int = 1024, min_size: int = 800, max_size: int = 1333,
                   anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
                   aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), **frcnn: Any) -> nn.Module:
    """torchvision ``FasterRCNN`` over ``num_classes`` object classes (plus background) with the study's head.

    ``dilated=None``: dilated Conv5 where the architecture allows it (ResNet-50/101). ``frcnn``:
    any other ``FasterRCNN`` argument (``rpn_batch_size_per_image``, ``box_batch_size_per_image``
    = RoIs per image, ``rpn_post_nms_top_n_train``, ...).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    if num_classes < 1:
        raise ValueError(f"a detector needs at least one object class, got {num_classes}")
    dilated = can_dilate(arch) and not fpn if dilated is None else dilated
    if dilated and fpn:
        raise ValueError("choose dilated Conv5 or FPN, not both")
    resnet = build_trunk(arch, dilated=dilated, frozen_bn=frozen_bn)
    _freeze(resnet, trainable_layers)
    c5 = resnet.fc.in_features
    if fpn:
        widths = [c5 // 8, c5 // 4, c5 // 2, c5]
        body: nn.Module = BackboneWithFPN(resnet, {f"layer{i + 1}": str(i) for i in range(4)}, widths, 256)
        levels = ["0", "1", "2", "3"]
        sizes = tuple((s,) for s in anchor_sizes)
        anchors = AnchorGenerator(sizes, (tuple(aspect_ratios),) * len(sizes))
        head_in = 256
    else:
        body = _C5(resnet, c5)
        levels = ["0"]
        anchors = AnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),))
        head_in = c5
    head = StudyBoxHead(head_in, roi_size, proj_channels, fc_dim)
    pool = MultiScaleRoIAlign(levels, output_size=roi_size, sampling_ratio=2)
    model = FasterRCNN(body, num_classes=None, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
                       box_roi_pool=pool, box_head=head, box_predictor=FastRCNNPredictor(fc_dim, num_classes + 1),
                       **frcnn)
    model.roi_heads.box_roi_pool = ProjectedRoIPool(pool, head)  # after FasterRCNN's type check of the pooler
    return model


def detector_to_tap_state(detector: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a C5 detector a :class:`DetectionTapModel` holds: trunk + ``head.*``."""
    detector = getattr(detector, "module", detector)
    state = trunk_state(detector)
    state.update({f"head.{k}": v for k, v in detector.roi_heads.box_head.state_dict().items()})
    return state


def segmenter_stride(arch: str, output_stride: int | None) -> int:
    """The output stride a segmenter of ``arch`` gets: ``None`` is 16 for ResNet-50/101 (Conv5 dilated, as
    torchvision's DeepLabV3 at stride 16) and 32 for ResNet-18/34, whose BasicBlocks cannot dilate."""
    if output_stride is None:
        return 16 if can_dilate(arch) else 32
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if output_stride < 32 and not can_dilate(arch):
        raise ValueError(f"{arch} cannot dilate (torchvision's BasicBlock has no dilation), so its output stride "
                         f"is 32; set output_stride to 32 (or leave it out) or use resnet50/resnet101")
    return output_stride


def build_segmenter(arch: str, num_classes: int, *, output_stride: int | None = None, frozen_bn: bool = False,
                    trainable_layers: int = 5) -> nn.Module:
    """torchvision ``DeepLabV3``: ``DeepLabHead`` (ASPP at rates 12/24/36, 256 channels) on the ResNet trunk.

    ``output_stride`` 16 dilates Conv5, 8 dilates Conv4 and Conv5 (ResNet-50/101; see
    :func:`segmenter_stride`). ``forward`` returns ``{"out": logits}`` upsampled bilinearly to the input's
    size. No auxiliary head. The head's own BatchNorm always trains (``frozen_bn`` is the trunk's), so a
    training batch needs at least 2 images per process (its image-pooling branch sees one value per image).
    """
    import torchvision
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.ops import FrozenBatchNorm2d

    if num_classes < 2:
        raise ValueError(f"a segmenter needs at least 2 classes (background and one more), got {num_classes}")
    stride = segmenter_stride(arch, output_stride)
    kwargs: dict[str, Any] = {"replace_stride_with_dilation": [False, stride == 8, stride <= 16]} \
        if can_dilate(arch) else {}
    if frozen_bn:
        kwargs["norm_layer"] = FrozenBatchNorm2d
    resnet = torchvision.models.get_model(arch, weights=None, **kwargs)
    _freeze(resnet, trainable_layers)
    body = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
    return DeepLabV3(body, DeepLabHead(resnet.fc.in_features, num_classes), None)
