"""Build networks by name without touching the network, infer ResNets from their keys, find taps.

Public names: :data:`DETECTORS`, :func:`torchvision_names`, :func:`builder_for`, :func:`build`,
:func:`is_resnet_name`, :func:`infer_arch`,
:func:`discover_taps`, :func:`find_classifier`, :func:`check_not_transformer`.

Builders never receive a torchvision ``weights=`` enum nor timm ``pretrained=True``: every
network starts random and is filled from a local file by the caller.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping

import torch
from torch import nn

# torchvision detectors whose body is a ResNet-50 -> whether their pretrained body runs
# FrozenBatchNorm2d (the v1 builders) or BatchNorm2d in eval (the v2 builders).
DETECTORS = {
    "fasterrcnn_resnet50_fpn": True, "fasterrcnn_resnet50_fpn_v2": False,
    "retinanet_resnet50_fpn": True, "retinanet_resnet50_fpn_v2": False,
    "fcos_resnet50_fpn": True,
    "maskrcnn_resnet50_fpn": True, "maskrcnn_resnet50_fpn_v2": False,
    "keypointrcnn_resnet50_fpn": True,
}

# (block, blocks per stage, groups, width per group) -> torchvision name
_RESNETS = {
    ("basic", (2, 2, 2, 2), 1, 64): "resnet18",
    ("basic", (3, 4, 6, 3), 1, 64): "resnet34",
    ("bottleneck", (3, 4, 6, 3), 1, 64): "resnet50",
    ("bottleneck", (3, 4, 23, 3), 1, 64): "resnet101",
    ("bottleneck", (3, 8, 36, 3), 1, 64): "resnet152",
    ("bottleneck", (3, 4, 6, 3), 1, 128): "wide_resnet50_2",
    ("bottleneck", (3, 4, 23, 3), 1, 128): "wide_resnet101_2",
    ("bottleneck", (3, 4, 6, 3), 32, 4): "resnext50_32x4d",
    ("bottleneck", (3, 4, 23, 3), 32, 8): "resnext101_32x8d",
    ("bottleneck", (3, 4, 23, 3), 64, 4): "resnext101_64x4d",
}
_NOT_CONVOLUTIONAL = ("vit_", "swin_", "maxvit_")
_HEADS = {"fc", "classifier", "head", "avgpool", "dropout", "aux1", "aux2", "AuxLogits"}


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Names of torchvision's classification models."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def builder_for(arch: str, prefer: str | None = None,
                state_dict: Mapping[str, torch.Tensor] | None = None) -> str:
    """'torchvision' or 'timm': which zoo builds ``arch`` (``prefer`` wins when both can).

    Without a preference, a name both zoos know (``efficientnet_b0``, ``convnext_tiny``) goes to the
    zoo whose module names ``state_dict`` has; torchvision when both fit (ResNets: same names)."""
    import timm

    in_tv, in_timm = arch in torchvision_names(), timm.is_model(arch)
    if in_timm and (prefer == "timm" or not in_tv):
        return "timm"
    if in_tv:
        if in_timm and prefer is None and state_dict is not None and not _keys_fit(arch, "torchvision", state_dict) \
                and _keys_fit(arch, "timm", state_dict):
            return "timm"
        return "torchvision"
    raise ValueError(f"unknown architecture {arch!r}: pass --arch (REST: arch) with a torchvision classification name "
                     f"(torchvision.models.list_models()) or a timm name (timm.list_models())")


def build(arch: str, builder: str, *, frozen_bn: bool = False, stride_in_1x1: bool = False,
          timm_name: str | None = None) -> nn.Module:
    """A randomly initialised ``arch`` from ``builder``; optionally FrozenBatchNorm / Caffe strides.

    ``timm_name`` builds a timm model by another name timm understands (``local-dir:FOLDER`` for a
    folder with timm's config.json, so the model carries that folder's pretrained_cfg).
    Seed torch first for a reproducible initialisation.
    """
    if builder == "timm":
        import timm

        if frozen_bn or stride_in_1x1:
            raise ValueError("frozen BN / stride-in-1x1 variants are only built for torchvision ResNets")
        model = timm.create_model(timm_name or arch, pretrained=False)
    else:
        import torchvision
        from torchvision.ops import FrozenBatchNorm2d

        kwargs = {"norm_layer": FrozenBatchNorm2d} if frozen_bn else {}
        if kwargs and not is_resnet_name(arch):
            raise ValueError(f"{arch} is not a ResNet; detection-style (frozen BN) weights need a ResNet arch")
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
        if stride_in_1x1:
            _move_stride_to_1x1(model)
    return model.eval()


def _keys_fit(arch: str, builder: str, state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` names exactly ``arch``'s tensors as ``builder`` builds it (its classifier may be
    absent). Built on the meta device: no memory, no initialisation cost."""
    try:
        with torch.device("meta"):
            model = build(arch, builder)
    except Exception:  # noqa: BLE001 - a zoo that cannot build the name does not fit
        return False
    head = find_classifier(model, arch)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    have = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    body = {k for k in expected if not (head and k.startswith(f"{head[0]}."))}
    return have <= expected and body <= have


def is_resnet_name(arch: str) -> bool:
    """Whether ``arch`` is a torchvision ResNet-family name (ResNet, ResNeXt, Wide ResNet)."""
    return arch.startswith(("resnet", "resnext", "wide_resnet"))


def _move_stride_to_1x1(model: nn.Module) -> None:
    """MSRA/Caffe ResNets stride in a bottleneck's first 1x1 conv, torchvision in its 3x3 conv."""
    from torchvision.models.resnet import Bottleneck

    for block in model.modules():
        if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The torchvision ResNet-family name whose keys and shapes ``state_dict`` has, else None.

    Block type from ``conv3`` (bottleneck) vs none (basic), depth from the block indices per
    stage, wide/ResNeXt from the grouped 3x3 conv of the first bottleneck.
    """
    blocks = []
    for stage in range(1, 5):
        idx = {int(m.group(1)) for k in state_dict if (m := re.match(rf"layer{stage}\.(\d+)\.conv1\.weight$", k))}
        if not idx or idx != set(range(len(idx))):
            return None
        blocks.append(len(idx))
    if "conv1.weight" not in state_dict:
        return None
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    groups, per_group = 1, 64
    if kind == "bottleneck":
        conv2 = state_dict.get("layer1.0.conv2.weight")
        if conv2 is None or conv2.ndim != 4 or conv2.shape[1] == 0:
            return None
        width, in_per_group = int(conv2.shape[0]), int(conv2.shape[1])
        groups = width // in_per_group
        per_group = width // groups
    return _RESNETS.get((kind, tuple(blocks), groups, per_group))


def discover_taps(model: nn.Module, builder: str, input_size: int = 64) -> tuple[dict[str, str], dict[str, str]]:
    """(taps, aliases) for ``model``: tap name -> module name, and conv2..conv5 -> tap.

    ResNets: ``layer1``..``layer4``. timm: the modules of ``model.feature_info``. Other torchvision
    CNNs: the stages of their trunk that output (B, C, H, W) maps, found by one small forward pass;
    the aliases name the last stage at each stride 4, 8, 16, 32.
    """
    if builder == "timm" and getattr(model, "feature_info", None):
        taps = {fi["module"]: fi["module"] for fi in model.feature_info}
        names = list(taps)
        return taps, _conv_aliases(names[-4:] if len(names) >= 4 else [])
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        taps = {f"layer{i}": f"layer{i}" for i in range(1, 5)}
        return taps, _conv_aliases(list(taps))
    return _probe_taps(model, input_size)


def _conv_aliases(last_four: list[str]) -> dict[str, str]:
    return {f"conv{i + 2}": tap for i, tap in enumerate(last_four)}


def _probe_taps(model: nn.Module, input_size: int) -> tuple[dict[str, str], dict[str, str]]:
    trunk = next((n for n in ("features", "trunk_output", "layers")
                  if isinstance(getattr(model, n, None), nn.Sequential)), None)
    if trunk is not None:
        candidates = [f"{trunk}.{n}" for n, _ in getattr(model, trunk).named_children()]
        if trunk == "trunk_output" and hasattr(model, "stem"):
            candidates.insert(0, "stem")
    else:
        candidates = [n for n, _ in model.named_children() if n not in _HEADS]
    shapes = _output_shapes(model, candidates, input_size)
    taps = {n: n for n in candidates if n in shapes}
    if not taps:
        raise ValueError(f"found no convolutional stages to tap in {type(model).__name__}; "
                         f"featscope taps need (B, C, H, W) feature maps")
    by_stride: dict[int, str] = {}
    for name in taps:
        stride = 2 ** round(math.log2(input_size / shapes[name][-1]))
        by_stride[stride] = name  # the last stage at each stride
    aliases = {f"conv{i + 2}": by_stride[s] for i, s in enumerate((4, 8, 16, 32)) if s in by_stride}
    return taps, aliases


def _output_shapes(model: nn.Module, names: list[str], input_size: int) -> dict[str, tuple[int, ...]]:
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def store(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                shapes[name] = tuple(out.shape)
        return store

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes


def find_classifier(model: nn.Module, arch: str) -> tuple[str, nn.Linear] | None:
    """(module name, layer) of the network's final Linear, or None when it has none."""
    if arch.startswith(_NOT_CONVOLUTIONAL):
        return None
    get = getattr(model, "get_classifier", None)  # timm
    if callable(get):
        head = get()
        name = next((n for n, m in model.named_modules() if m is head), None)
        return (name, head) if isinstance(head, nn.Linear) and name else None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def check_not_transformer(arch: str) -> None:
    """Refuse vision transformers early: their activations are token sequences, not (C, H, W) maps."""
    if arch.startswith(_NOT_CONVOLUTIONAL):
        raise ValueError(f"{arch} is a vision transformer; featscope taps convolutional feature maps "
                         f"(B, C, H, W). Pick a CNN (resnet50, convnext_tiny, efficientnet_b0, ...)")
