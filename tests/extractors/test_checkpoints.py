"""Reading weight files: refusals first, then each format's names mapped exactly to torchvision's."""

from __future__ import annotations

import argparse
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from featscope.extractors.checkpoints import (
    FORMATS,
    CheckpointError,
    detect_format,
    load_exact,
    read_state_dict,
    save_checkpoint,
)
from featscope.extractors.types import Preprocess


class _Payload:
    """Pickles as a call to ``os.system``: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _FileWriter:
    """Pickles as ``pathlib.Path.write_text``-style call via builtins: another payload shape."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# --- refusals and errors ----------------------------------------------------------------------

def test_unknown_format_is_refused(tmp_path: Path, r18: nn.Module) -> None:
    path = tmp_path / "w.pth"
    torch.save(r18.state_dict(), path)
    with pytest.raises(ValueError, match="unknown weights format 'onnx'.*torchvision"):
        read_state_dict(path, "onnx")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")


def test_not_a_weight_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a weight file"):
        read_state_dict(path)


@pytest.mark.parametrize("payload", [_Payload, _FileWriter])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, payload: type, tiny: SimpleNamespace) -> None:
    marker = tmp_path / "pwned"
    path = tiny.write_pickle(tmp_path / "model_final.pkl",
                        {"model": {"stem.conv1.weight": np.zeros((1, 3, 7, 7), np.float32), "x": payload(marker)},
                         "__author__": "attacker"})
    with pytest.raises(CheckpointError, match=r"refusing to load .*model_final\.pkl.*never executes code"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="refusing"):
        detect_format(path)
    assert not marker.exists()


def test_torch_file_with_objects_is_refused(tmp_path: Path, r18: nn.Module) -> None:
    path = tmp_path / "train_ckpt.pth"
    torch.save({"model": r18.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"weights_only=True.*re-save just its weights"):
        read_state_dict(path)


def test_pickle_with_non_numeric_array_is_refused(tmp_path: Path, tiny: SimpleNamespace) -> None:
    path = tiny.write_pickle(tmp_path / "odd.pkl", {"model": {"stem.conv1.weight": np.array(["a", "b"])}})
    with pytest.raises(CheckpointError, match="not a numeric array"):
        read_state_dict(path)


def test_save_checkpoint_rejects_non_plain_extra(tmp_path: Path, r18: nn.Module) -> None:
    with pytest.raises(TypeError, match=r"extra\['when'\] is a \w*Path"):
        save_checkpoint(tmp_path / "c.pth", r18, "resnet18", Preprocess(), extra={"when": Path("/x")})
    with pytest.raises(ValueError, match="arch is required"):
        save_checkpoint(tmp_path / "c.pth", r18, "", Preprocess())
    assert not list(tmp_path.iterdir())


def test_load_exact_lists_missing_unexpected_and_shapes() -> None:
    model = torchvision.models.resnet18()
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4.")}
    sd["neck.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(CheckpointError) as err:
        load_exact(model, sd, source="f.pth", hint="pass --arch resnet34")
    msg = str(err.value)
    assert "missing (25): layer4.0.conv1.weight" in msg and "(+15 more)" in msg
    assert "unexpected (1): neck.weight" in msg
    assert "conv1.weight: file (64, 3, 3, 3) vs network (64, 3, 7, 7)" in msg
    assert "num_batches_tracked" not in msg
    assert msg.endswith("Likely fix: pass --arch resnet34")


def test_load_exact_allows_an_absent_optional_head_only_as_a_whole(tiny: SimpleNamespace) -> None:
    model = torchvision.models.resnet18()
    sd = tiny.body_state(model)
    assert load_exact(torchvision.models.resnet18(), sd, optional=("fc.",)) == ["fc."]
    sd["fc.weight"] = model.fc.weight.detach()
    with pytest.raises(CheckpointError, match=r"missing \(1\): fc\.bias"):
        load_exact(torchvision.models.resnet18(), sd, optional=("fc.",))


# --- each format, mapped exactly ----------------------------------------------------------------

def _assert_same(sd: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert sorted(sd) == sorted(ref)
    for k in ref:
        assert torch.equal(sd[k].to(ref[k].dtype), ref[k]), k


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module"])
def test_torchvision_containers(tmp_path: Path, r18: nn.Module, wrap: str) -> None:
    sd = r18.state_dict()
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd},
           "module": OrderedDict((f"module.{k}", v) for k, v in sd.items())}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    got, fmt, _ = read_state_dict(tmp_path / "w.pth")
    assert fmt == "torchvision"
    _assert_same(got, sd)


def test_featscope_round_trip(tmp_path: Path, r18: nn.Module) -> None:
    pre = Preprocess(resize=72, crop=64, interpolation="bicubic")
    path = save_checkpoint(tmp_path / "sub" / "c.pth", r18, "resnet18", pre, class_names=["cat", "dog"],
                           extra={"epochs": 3, "lr": [0.1, 0.01], "note": None})
    assert [p.name for p in path.parent.iterdir()] == ["c.pth"]  # no temporary left behind
    assert detect_format(path) == "featscope"
    sd, fmt, meta = read_state_dict(path)
    assert fmt == "featscope"
    _assert_same(sd, r18.state_dict())
    assert meta["arch"] == "resnet18" and meta["builder"] == "torchvision"
    assert Preprocess.from_dict(meta["preprocess"]) == pre
    assert meta["class_names"] == ["cat", "dog"] and meta["extra"] == {"epochs": 3, "lr": [0.1, 0.01], "note": None}


@pytest.mark.parametrize("prefix", ["backbone.", ""])
def test_torchvision_det_keeps_only_the_body(tmp_path: Path, r18: nn.Module, tiny: SimpleNamespace,
                                             prefix: str) -> None:
    sd = {f"{prefix}body.{k}": v for k, v in tiny.body_state(r18).items()}
    sd.update({f"{prefix}fpn.inner_blocks.0.0.weight": torch.zeros(1),
               "roi_heads.box_head.fc6.weight": torch.zeros(1)})
    torch.save({"model": sd}, tmp_path / "det.pth")
    got, fmt, meta = read_state_dict(tmp_path / "det.pth")
    assert fmt == "torchvision-det" and meta["dropped_keys"] == 2 and meta["frozen_bn"] is True
    _assert_same(got, tiny.body_state(r18))


def test_mmdet_strips_backbone_prefix_and_drops_neck_and_head(tmp_path: Path, r18: nn.Module) -> None:
    sd = {f"backbone.{k}": v for k, v in r18.state_dict().items() if not k.startswith("fc.")}
    sd.update({"neck.lateral_convs.0.conv.weight": torch.zeros(1), "bbox_head.cls.weight": torch.zeros(1)})
    torch.save({"meta": {"mmdet_version": "2.25.0", "CLASSES": ("a", "b"),
                         "config": "model = dict(style='pytorch')"},
                "state_dict": sd}, tmp_path / "mm.pth")
    got, fmt, meta = read_state_dict(tmp_path / "mm.pth")
    assert fmt == "mmdet" and meta["dropped_keys"] == 2 and "stride_in_1x1" not in meta
    _assert_same(got, {k: v for k, v in r18.state_dict().items() if not k.startswith("fc.")})


def test_mmdet_caffe_style_config_sets_caffe_conventions(tmp_path: Path, r18: nn.Module,
                                                         tiny: SimpleNamespace) -> None:
    sd = {f"backbone.{k}": v for k, v in tiny.body_state(r18).items()}
    meta = {"config": "backbone=dict(type='ResNet', style='caffe')"}
    torch.save({"meta": meta, "state_dict": sd}, tmp_path / "c.pth")
    _, _, meta = read_state_dict(tmp_path / "c.pth")
    pre = Preprocess.from_dict(meta["preprocess"])
    assert meta["stride_in_1x1"] is True and pre.channel_order == "BGR" and pre.pixel_scale == 255.0


@pytest.mark.parametrize("prefix", ["backbone.bottom_up.", "backbone.", ""])
def test_detectron2_pickle_maps_to_torchvision(tmp_path: Path, r18: nn.Module, prefix: str,
                                               tiny: SimpleNamespace) -> None:
    arrays = tiny.to_detectron2_names(r18.state_dict(), prefix)
    arrays.update({"backbone.fpn_lateral2.weight": np.zeros(1, np.float32),
                   "proposal_generator.rpn_head.conv.weight": np.zeros(1, np.float32)})
    path = tiny.write_pickle(tmp_path / "m.pkl",
                             {"model": arrays, "__author__": "torchvision", "matching_heuristics": True})
    assert detect_format(path) == "detectron2"
    got, fmt, meta = read_state_dict(path)
    assert fmt == "detectron2" and meta["dropped_keys"] == 2 and meta["frozen_bn"] is True
    assert meta["stride_in_1x1"] is False and Preprocess.from_dict(meta["preprocess"]) == Preprocess()
    assert "affine_bn" not in meta
    _assert_same(got, tiny.body_state(r18))


def test_detectron2_c4_res5_lives_in_roi_heads(tmp_path: Path, r18: nn.Module, tiny: SimpleNamespace) -> None:
    arrays = {("roi_heads." + k[len("backbone."):] if k.startswith("backbone.res5.") else k): v
              for k, v in tiny.to_detectron2_names(r18.state_dict(), "backbone.").items()}
    assert any(k.startswith("roi_heads.res5.") for k in arrays)
    arrays["roi_heads.box_predictor.cls_score.weight"] = np.zeros(1, np.float32)
    got, _, meta = read_state_dict(tiny.write_pickle(tmp_path / "c4.pkl", arrays))
    assert meta["dropped_keys"] == 1
    _assert_same(got, tiny.body_state(r18))


def test_detectron2_torch_file_with_pixel_stats(tmp_path: Path, r18: nn.Module, tiny: SimpleNamespace) -> None:
    sd = {k: torch.from_numpy(v) for k, v in tiny.to_detectron2_names(r18.state_dict()).items()}
    sd["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    sd["pixel_std"] = torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1)
    torch.save({"model": sd, "iteration": 5}, tmp_path / "model_final.pth")
    got, fmt, meta = read_state_dict(tmp_path / "model_final.pth")
    pre = Preprocess.from_dict(meta["preprocess"])
    assert fmt == "detectron2" and meta["stride_in_1x1"] is True
    assert pre.channel_order == "BGR" and pre.pixel_scale == 255.0
    assert pre.mean == pytest.approx((103.53, 116.28, 123.675))
    _assert_same(got, tiny.body_state(r18))


def test_detectron2_without_running_stats_fills_identity(tmp_path: Path, r18: nn.Module,
                                                         tiny: SimpleNamespace) -> None:
    arrays = {k: v for k, v in tiny.to_detectron2_names(r18.state_dict(), "").items() if "running_" not in k}
    got, _, meta = read_state_dict(tiny.write_pickle(tmp_path / "old.pkl", {"model": arrays}))
    assert len(meta["affine_bn"]) == 20 and "bn1" in meta["affine_bn"]  # 1 stem + 16 block + 3 shortcut norms
    assert torch.equal(got["layer2.0.downsample.1.running_var"], torch.ones(128))
    assert torch.equal(got["bn1.running_mean"], torch.zeros(64))
    assert meta["stride_in_1x1"] is True  # Detectron2's defaults when nothing says otherwise
    assert any("filled mean 0, var 1" in n for n in meta["notes"])


def test_caffe2_blob_names(tmp_path: Path, r18: nn.Module, tiny: SimpleNamespace) -> None:
    blobs = tiny.to_caffe2_names(r18.state_dict())
    blobs.update({"res2_0_branch2a_w_momentum": np.zeros(1, np.float32),
                  "fpn_inner_res5_2_sum_w": np.zeros(1, np.float32)})
    path = tiny.write_pickle(tmp_path / "R-18.pkl", {"blobs": blobs})
    assert detect_format(path) == "caffe2"
    got, fmt, meta = read_state_dict(path)
    assert fmt == "caffe2" and meta["dropped_keys"] == 2 and len(meta["affine_bn"]) == 20
    assert set(got) == set(tiny.body_state(r18)) | {"fc.weight", "fc.bias"}  # from pred_w / pred_b

    assert torch.equal(got["layer3.1.conv2.weight"], r18.layer3[1].conv2.weight.detach())
    assert torch.equal(got["fc.weight"], r18.fc.weight.detach())


def test_legacy_densenet_names_are_renamed(tmp_path: Path) -> None:
    torch.save({"features.denseblock1.denselayer1.norm.1.weight": torch.ones(2),
                "features.denseblock1.denselayer1.conv.2.weight": torch.ones(2),
                "features.norm5.weight": torch.ones(2)}, tmp_path / "densenet121-a639ec97.pth")
    got, _, _ = read_state_dict(tmp_path / "densenet121-a639ec97.pth")
    assert sorted(got) == ["features.denseblock1.denselayer1.conv2.weight",
                           "features.denseblock1.denselayer1.norm1.weight", "features.norm5.weight"]


def test_safetensors(tmp_path: Path, r18: nn.Module) -> None:
    st = pytest.importorskip("safetensors.torch")
    st.save_file({k: v.contiguous() for k, v in r18.state_dict().items()}, str(tmp_path / "w.safetensors"))
    got, fmt, _ = read_state_dict(tmp_path / "w.safetensors")
    assert fmt == "torchvision"
    _assert_same(got, r18.state_dict())


def test_forced_format_overrides_detection(tmp_path: Path, r18: nn.Module) -> None:
    torch.save(r18.state_dict(), tmp_path / "w.pth")
    assert set(FORMATS) >= {"torchvision", "featscope", "torchvision-det", "mmdet", "detectron2", "timm"}
    _, fmt, _ = read_state_dict(tmp_path / "w.pth", "timm")
    assert fmt == "timm"
    with pytest.raises(CheckpointError, match="holds no weights in torchvision-det naming"):
        read_state_dict(tmp_path / "w.pth", "torchvision-det")


def test_pickle_protocols_and_numpy_scalars(tmp_path: Path, r18: nn.Module, tiny: SimpleNamespace) -> None:
    arrays = tiny.to_detectron2_names(r18.state_dict(), "")
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        with path.open("wb") as f:
            pickle.dump({"model": OrderedDict(arrays), "iteration": np.int64(7)}, f, protocol=protocol)
        got, _, _ = read_state_dict(path)
        _assert_same(got, tiny.body_state(r18))
