"""Tiny-model fixtures for the extractor tests, and independent writers for foreign weight formats.

The writers here re-implement each framework's naming from its documentation, separately from
featscope's readers, so a round trip checks the reader against the format, not against itself.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every norm layer non-trivial affine parameters and running stats, so BN matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.numel()
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def make_resnet(arch: str = "resnet18", seed: int = 0) -> nn.Module:
    """A randomly initialised torchvision ResNet with randomised BN, in eval mode."""
    torch.manual_seed(seed)
    return randomize_bn(torchvision.models.get_model(arch, weights=None), seed + 1).eval()


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm2d layers are FrozenBatchNorm2d with the same values."""
    model = copy.deepcopy(model)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for buf in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, buf).copy_(getattr(child, buf).detach())
                setattr(parent, name, frozen)
            else:
                swap(child)

    swap(model)
    return model.eval()


def resnet_layer4(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer4 output of a torchvision-style ResNet, computed by hand from its modules."""
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        return model.layer4(model.layer3(model.layer2(model.layer1(h))))


def body_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the classifier and without num_batches_tracked."""
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def to_detectron2_names(sd: dict[str, torch.Tensor], prefix: str = "backbone.bottom_up.") -> dict[str, np.ndarray]:
    """torchvision ResNet names -> Detectron2 names (stem/resN/convK.norm/shortcut), numpy arrays."""
    out = {}
    for key, value in sd.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "conv1":
            name = "stem.conv1.weight"
        elif parts[0] == "bn1":
            name = f"stem.conv1.norm.{parts[1]}"
        else:
            stage, block, module = int(parts[0][len("layer"):]) + 1, parts[1], parts[2]
            head = f"res{stage}.{block}"
            if module.startswith("conv"):
                name = f"{head}.{module}.weight"
            elif module.startswith("bn"):
                name = f"{head}.conv{module[2:]}.norm.{parts[3]}"
            elif parts[3] == "0":
                name = f"{head}.shortcut.weight"
            else:
                name = f"{head}.shortcut.norm.{parts[4]}"
        out[prefix + name] = value.detach().numpy().copy()
    return out


def to_caffe2_names(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """torchvision ResNet -> Caffe2 blob names with BN folded into scale/bias (AffineChannel)."""
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        if not key.endswith(".weight") or key.endswith("num_batches_tracked"):
            continue
        mod = key[: -len(".weight")]
        parts = mod.split(".")
        if mod == "fc":
            out["pred_w"], out["pred_b"] = value.numpy().copy(), sd["fc.bias"].numpy().copy()
            continue
        if mod == "conv1":
            out["conv1_w"] = value.numpy().copy()
            continue
        if mod == "bn1":
            c2 = "res_conv1_bn"
        else:
            head = f"res{int(parts[0][5:]) + 1}_{parts[1]}"
            if parts[2].startswith("conv"):
                out[f"{head}_branch2{'abc'[int(parts[2][4:]) - 1]}_w"] = value.numpy().copy()
                continue
            if parts[2] == "downsample" and parts[3] == "0":
                out[f"{head}_branch1_w"] = value.numpy().copy()
                continue
            bn = parts[2].startswith("bn")
            c2 = f"{head}_branch2{'abc'[int(parts[2][2:]) - 1]}_bn" if bn else f"{head}_branch1_bn"
        w, b = sd[f"{mod}.weight"], sd[f"{mod}.bias"]
        scale = w / torch.sqrt(sd[f"{mod}.running_var"] + 1e-5)
        out[f"{c2}_s"] = scale.numpy().copy()
        out[f"{c2}_b"] = (b - sd[f"{mod}.running_mean"] * scale).numpy().copy()
    return out


def write_pickle(path: Path, obj: object) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f)
    return path


def write_timm_folder(folder: Path, model: nn.Module, architecture: str, pretrained_cfg: dict,
                      label_names: list[str] | None = None) -> Path:
    """A timm model as timm's ``push_to_hf_hub`` lays it out: ``model.safetensors`` + ``config.json``
    (``architecture``, ``num_classes``, ``num_features``, ``pretrained_cfg``, ``label_names``)."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = {"architecture": architecture, "num_classes": model.num_classes, "num_features": model.num_features,
           "pretrained_cfg": pretrained_cfg}
    if label_names is not None:
        cfg["label_names"] = label_names
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder / "model.safetensors"


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """The helpers above, as a fixture: test modules must not import conftest (two exist)."""
    return SimpleNamespace(randomize_bn=randomize_bn, make_resnet=make_resnet, frozen_copy=frozen_copy,
                           resnet_layer4=resnet_layer4, body_state=body_state,
                           to_detectron2_names=to_detectron2_names, to_caffe2_names=to_caffe2_names,
                           write_pickle=write_pickle, write_timm_folder=write_timm_folder)


@pytest.fixture(scope="session")
def r18() -> nn.Module:
    """A ResNet-18 with random weights and BN stats; shared, so tests must not modify it."""
    return make_resnet("resnet18", seed=0)


@pytest.fixture(scope="session")
def x64() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(123))


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so no official weights are found."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub
