"""Loading backbones: refusals first, then every source and format against the original network."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.transforms._presets import ImageClassification

from featscope.extractors import backbones
from featscope.extractors.backbones import SOURCES, list_sources, list_taps, load_backbone, parse_spec
from featscope.extractors.checkpoints import CheckpointError, save_checkpoint
from featscope.extractors.taps import POOLINGS, pool, tap_model
from featscope.extractors.types import Backbone, Preprocess


def layer4(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return tap_model(backbone, ["conv5"])(x)["conv5"]


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["resnet50", "torch:resnet50", "torchvision:", "", ":x"])
def test_bad_spec(spec: str) -> None:
    with pytest.raises(ValueError, match=r"bad backbone spec.*torchvision, torchvision-det, timm, checkpoint, run.*"
                                         r"for example torchvision:resnet50"):
        parse_spec(spec)


def test_run_source_is_not_there_yet() -> None:
    with pytest.raises(ValueError, match="training runs arrive with the training issue"):
        load_backbone("run:abc123")


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown weights format"):
        load_backbone("torchvision:resnet18", weights_format="onnx")
    with pytest.raises(ValueError, match=r"either a weights file \(--weights FILE.*or --random-init"):
        load_backbone("torchvision:resnet18", weights=tmp_path / "w.pth", random_init=True)
    with pytest.raises(ValueError, match="already names the architecture; drop --arch resnet50"):
        load_backbone("torchvision:resnet18", arch="resnet50", random_init=True)
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        load_backbone("torchvision:resnet19", random_init=True)
    with pytest.raises(ValueError, match="vision transformer"):
        load_backbone("torchvision:vit_b_16", random_init=True)
    with pytest.raises(ValueError, match="supports the ResNet-50 detectors"):
        load_backbone("torchvision-det:ssd300_vgg16", random_init=True)
    with pytest.raises(ValueError, match="not a timm model"):
        load_backbone("timm:no_such_net", random_init=True)
    with pytest.raises(TypeError, match="Preprocess"):
        load_backbone("torchvision:resnet18", random_init=True, preprocess={"crop": 64})


def test_no_local_weights_names_every_fix(empty_hub: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_backbone("torchvision:resnet50")
    msg = str(err.value)
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in msg
    assert str(empty_hub / "checkpoints") in msg
    assert "--weights FILE" in msg and "--random-init" in msg
    with pytest.raises(FileNotFoundError, match="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"):
        load_backbone("torchvision-det:fasterrcnn_resnet50_fpn")


def test_timm_without_weights_names_the_fix() -> None:
    with pytest.raises(FileNotFoundError, match=r"--weights FILE.*--random-init"):
        load_backbone("timm:resnet18")


def test_corrupt_official_file_is_refused(empty_hub: Path) -> None:
    (empty_hub / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match=r"does not match the checksum.*fetch https://download"):
        load_backbone("torchvision:resnet18")


def test_wrong_arch_lists_keys_and_suggests_the_right_one(tmp_path: Path, tiny: SimpleNamespace) -> None:
    torch.save(tiny.make_resnet("resnet34").state_dict(), tmp_path / "r34.pth")
    with pytest.raises(CheckpointError) as err:
        load_backbone(f"checkpoint:{tmp_path / 'r34.pth'}", arch="resnet18")
    msg = str(err.value)
    assert "unexpected (" in msg and "layer1.2.conv1.weight" in msg and "more)" in msg
    assert "pass --arch resnet34" in msg


def test_missing_tensors_are_never_filled_at_random(tmp_path: Path, r18: nn.Module) -> None:
    holes = ("layer3.1.conv2.weight", "layer2.0.bn1.running_var")
    torch.save({k: v for k, v in r18.state_dict().items() if k not in holes}, tmp_path / "holey.pth")
    with pytest.raises(CheckpointError,
                       match=r"missing \(2\): layer2\.0\.bn1\.running_var, layer3\.1\.conv2\.weight"):
        load_backbone(f"checkpoint:{tmp_path / 'holey.pth'}", arch="resnet18")


def test_shape_mismatch_is_reported(tmp_path: Path, r18: nn.Module) -> None:
    sd = dict(r18.state_dict())
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(sd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): layer1\.0\.conv1\.weight: "
                                              r"file \(64, 64, 1, 1\) vs network \(64, 64, 3, 3\)"):
        load_backbone(f"checkpoint:{tmp_path / 'odd.pth'}")


def test_fine_tuned_head_keeps_its_class_count(tmp_path: Path, r18: nn.Module, x64: torch.Tensor) -> None:
    sd = dict(r18.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.randn(10, 512), torch.randn(10)
    model = torchvision.models.resnet18(num_classes=10).eval()
    model.load_state_dict(sd)
    save_checkpoint(tmp_path / "ft.pth", model, "resnet18", Preprocess(), class_names=[str(i) for i in range(10)])
    b = load_backbone(f"checkpoint:{tmp_path / 'ft.pth'}")
    assert b.classifier is not None and b.classifier.out_features == 10 and b.class_names[-1] == "9"
    with torch.no_grad():
        assert torch.allclose(b.classifier(pool(layer4(b, x64), "avg")), model(x64), rtol=1e-5, atol=1e-5)


def test_uninferable_arch_asks_for_arch(tmp_path: Path) -> None:
    torch.save({"stem.0.weight": torch.zeros(3), "head.weight": torch.zeros(3)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="could not infer the architecture.*pass --arch NAME"):
        load_backbone(f"checkpoint:{tmp_path / 'odd.pth'}")
    with pytest.raises(ValueError, match="unknown architecture 'nonet'"):
        load_backbone(f"checkpoint:{tmp_path / 'odd.pth'}", arch="nonet")


def test_checkpoint_spec_takes_no_weights_or_random_init(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already names the weights file"):
        load_backbone(f"checkpoint:{tmp_path / 'a.pth'}", random_init=True)
    with pytest.raises(FileNotFoundError):
        load_backbone(f"checkpoint:{tmp_path / 'a.pth'}")


# --- every format, exactly ---------------------------------------------------------------------

def _write_all_formats(tmp_path: Path, model: nn.Module, tiny: SimpleNamespace) -> dict[str, Path]:
    """The same ResNet-18 written in every format; body-only formats carry no classifier."""
    sd = model.state_dict()
    body = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    paths = {k: tmp_path / f"{k}.pth" for k in ("torchvision", "timm", "body", "mmdet")}
    torch.save(sd, paths["torchvision"])
    torch.save({"state_dict": sd, "epoch": 90}, paths["timm"])
    torch.save(body, paths["body"])
    paths["featscope"] = save_checkpoint(tmp_path / "fs.pth", model, "resnet18", Preprocess(resize=80, crop=64),
                                         class_names=[f"c{i}" for i in range(1000)])
    mm = {f"backbone.{k}": v for k, v in body.items()}
    mm.update({"neck.fpn_convs.0.conv.weight": torch.randn(4, 4, 3, 3), "rpn_head.rpn_cls.bias": torch.zeros(3)})
    torch.save({"meta": {"mmdet_version": "2.28.2", "CLASSES": ("person", "car"), "epoch": 12}, "state_dict": mm},
               paths["mmdet"])
    d2 = tiny.to_detectron2_names(sd)
    d2["backbone.fpn_output5.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    paths["detectron2"] = tiny.write_pickle(tmp_path / "model_final.pkl",
                                            {"model": d2, "__author__": "torchvision", "matching_heuristics": True})
    return paths


def test_every_format_gives_the_same_network(tmp_path: Path, r18: nn.Module, x64: torch.Tensor,
                                             tiny: SimpleNamespace) -> None:
    paths = _write_all_formats(tmp_path, r18, tiny)
    want = tiny.resnet_layer4(r18, x64)
    want_frozen = tiny.resnet_layer4(tiny.frozen_copy(r18), x64)
    loaded = {fmt: load_backbone(f"checkpoint:{p}", weights_format="timm" if fmt == "timm" else "auto")
              for fmt, p in paths.items()}
    for fmt, b in loaded.items():
        assert b.arch == "resnet18" and b.source == "checkpoint" and not b.model.training, fmt
        expect_fmt = {"body": "torchvision"}.get(fmt, fmt)
        assert b.weights_format == expect_fmt and b.weights == str(paths[fmt])
        assert torch.equal(layer4(b, x64), want_frozen if fmt == "detectron2" else want), fmt
    with_head = ("torchvision", "featscope", "timm")
    assert len({loaded[f].fingerprint for f in with_head}) == 1
    assert len({loaded[f].fingerprint for f in ("body", "mmdet", "detectron2")}) == 1
    assert loaded["torchvision"].fingerprint != loaded["body"].fingerprint
    for f in with_head:
        assert loaded[f].classifier is not None
    for f in ("body", "mmdet", "detectron2"):
        assert loaded[f].classifier is None and isinstance(loaded[f].model.fc, nn.Identity)
    assert loaded["timm"].model.__class__.__module__.startswith("timm.")
    fs = loaded["featscope"]
    assert fs.preprocess == Preprocess(resize=80, crop=64) and fs.class_names[:2] == ["c0", "c1"]
    assert loaded["detectron2"].preprocess == Preprocess()  # __author__ torchvision


def test_different_weights_different_fingerprint(tmp_path: Path, tiny: SimpleNamespace) -> None:
    a, b = tiny.make_resnet("resnet18", seed=5), tiny.make_resnet("resnet18", seed=6)
    torch.save(a.state_dict(), tmp_path / "a.pth")
    torch.save(b.state_dict(), tmp_path / "b.pth")
    fa = load_backbone(f"checkpoint:{tmp_path / 'a.pth'}").fingerprint
    fb = load_backbone(f"checkpoint:{tmp_path / 'b.pth'}").fingerprint
    assert fa != fb and len(fa) == 64


def test_classifier_is_fc_on_avg_pooled_last_tap(tmp_path: Path, r18: nn.Module, x64: torch.Tensor) -> None:
    torch.save(r18.state_dict(), tmp_path / "w.pth")
    b = load_backbone("torchvision:resnet18", weights=tmp_path / "w.pth")
    assert b.classifier is b.model.fc and b.source == "torchvision"
    with torch.no_grad():
        logits = b.classifier(pool(layer4(b, x64), "avg"))
        assert torch.allclose(logits, r18(x64), rtol=1e-5, atol=1e-5)


def test_detectron2_msra_resnet50_strides_in_1x1_and_reads_bgr(tmp_path: Path, x64: torch.Tensor,
                                                               tiny: SimpleNamespace) -> None:
    r50 = tiny.make_resnet("resnet50", seed=3)
    path = tiny.write_pickle(tmp_path / "R-50.pkl", {"model": tiny.to_detectron2_names(r50.state_dict(), "")})
    b = load_backbone(f"checkpoint:{path}")
    assert b.arch == "resnet50"
    assert b.model.layer2[0].conv1.stride == (2, 2) and b.model.layer2[0].conv2.stride == (1, 1)
    assert b.preprocess.channel_order == "BGR" and b.preprocess.pixel_scale == 255.0
    ref = tiny.frozen_copy(r50)
    for layer in (ref.layer2, ref.layer3, ref.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    assert torch.equal(layer4(b, x64), tiny.resnet_layer4(ref, x64))
    torch.save(tiny.body_state(r50), tmp_path / "r50_body.pth")  # same tensors, torchvision strides
    assert load_backbone(f"checkpoint:{tmp_path / 'r50_body.pth'}").fingerprint != b.fingerprint


def test_caffe2_affine_channels_are_exact(tmp_path: Path, r18: nn.Module, x64: torch.Tensor,
                                          tiny: SimpleNamespace) -> None:
    blobs = tiny.to_caffe2_names(r18.state_dict())
    b = load_backbone(f"checkpoint:{tiny.write_pickle(tmp_path / 'R-18.pkl', {'blobs': blobs})}")
    ref = tiny.frozen_copy(r18)
    for name, m in ref.named_modules():
        if isinstance(m, torchvision.ops.FrozenBatchNorm2d):
            c2 = dict(b.model.named_modules())[name]
            m.weight.copy_(c2.weight), m.bias.copy_(c2.bias), m.running_mean.zero_(), m.running_var.fill_(1.0)
            m.eps = 0.0
    assert b.classifier is not None  # pred_w / pred_b
    assert torch.equal(layer4(b, x64), tiny.resnet_layer4(ref, x64))
    assert torch.allclose(layer4(b, x64), tiny.resnet_layer4(r18, x64), rtol=1e-4, atol=1e-4)


def test_torchvision_det_fasterrcnn_resnet18_body(tmp_path: Path, x64: torch.Tensor, tiny: SimpleNamespace) -> None:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    torch.manual_seed(0)
    trunk = tiny.randomize_bn(torchvision.models.resnet18(norm_layer=torchvision.ops.FrozenBatchNorm2d), seed=9)
    detector = FasterRCNN(_resnet_fpn_extractor(trunk, 5), num_classes=3).eval()
    torch.save(detector.state_dict(), tmp_path / "frcnn_r18.pth")
    b = load_backbone(f"checkpoint:{tmp_path / 'frcnn_r18.pth'}")
    assert b.weights_format == "torchvision-det" and b.arch == "resnet18" and b.classifier is None
    with torch.no_grad():
        want = detector.backbone.body(x64)["3"]
    assert torch.equal(layer4(b, x64), want)


def test_torchvision_det_real_fasterrcnn_resnet50_fpn(tmp_path: Path, x64: torch.Tensor,
                                                      tiny: SimpleNamespace) -> None:
    torch.manual_seed(0)
    det = torchvision.models.get_model("fasterrcnn_resnet50_fpn", weights=None, weights_backbone=None)
    tiny.randomize_bn(det, seed=4)
    # The official file comes from a FrozenBatchNorm body: no num_batches_tracked.
    sd = {k: v for k, v in det.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "frcnn.pth")
    b = load_backbone("torchvision-det:fasterrcnn_resnet50_fpn", weights=tmp_path / "frcnn.pth")
    assert b.arch == "resnet50" and b.source == "torchvision-det" and b.classifier is None
    assert isinstance(b.model.bn1, torchvision.ops.FrozenBatchNorm2d)
    body = tiny.frozen_copy(det.backbone.body)
    with torch.no_grad():
        assert torch.equal(layer4(b, x64), body(x64)["3"])
    same = load_backbone(f"checkpoint:{tmp_path / 'frcnn.pth'}")
    assert same.weights_format == "torchvision-det" and same.fingerprint == b.fingerprint
    sd.pop("roi_heads.box_head.fc6.weight")
    torch.save(sd, tmp_path / "holey.pth")
    with pytest.raises(CheckpointError, match=r"missing \(1\): roi_heads\.box_head\.fc6\.weight"):
        load_backbone("torchvision-det:fasterrcnn_resnet50_fpn", weights=tmp_path / "holey.pth")


def test_official_weights_from_the_hub_cache(empty_hub: Path, monkeypatch: pytest.MonkeyPatch, r18: nn.Module,
                                             x64: torch.Tensor, tiny: SimpleNamespace) -> None:
    staging = empty_hub / "staging.pth"
    torch.save(r18.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    cached = empty_hub / "checkpoints" / f"resnet18-{digest}.pth"
    staging.rename(cached)
    entry = SimpleNamespace(url=f"https://download.pytorch.org/models/{cached.name}",
                            meta={"categories": [f"class{i}" for i in range(1000)]},
                            transforms=functools.partial(ImageClassification, crop_size=64, resize_size=72))
    monkeypatch.setattr(backbones, "_official_entries", lambda name: [entry])
    b = load_backbone("torchvision:resnet18")
    assert b.weights == str(cached) and b.class_names[999] == "class999"
    assert b.preprocess == Preprocess(resize=72, crop=64)
    assert torch.equal(layer4(b, x64), tiny.resnet_layer4(r18, x64))


def test_timm_weights_file(tmp_path: Path, x64: torch.Tensor, tiny: SimpleNamespace) -> None:
    torch.manual_seed(0)
    model = tiny.randomize_bn(timm.create_model("resnet18", pretrained=False)).eval()
    torch.save(model.state_dict(), tmp_path / "timm_r18.pth")
    b = load_backbone("timm:resnet18", weights=tmp_path / "timm_r18.pth")
    assert b.source == "timm" and b.weights_format == "timm" and isinstance(b.classifier, nn.Linear)
    with torch.no_grad():
        assert torch.equal(layer4(b, x64), model.forward_features(x64))
        assert torch.allclose(b.classifier(pool(layer4(b, x64), "avg")), model(x64), rtol=1e-5, atol=1e-5)
    assert b.taps["layer4"] == "layer4" and b.aliases["conv5"] == "layer4" and "act1" in b.taps
    assert b.preprocess.interpolation == "bicubic" and b.preprocess.resize >= b.preprocess.crop
    st = pytest.importorskip("safetensors.torch")
    st.save_file(model.state_dict(), str(tmp_path / "timm_r18.safetensors"))
    again = load_backbone("timm:resnet18", weights=tmp_path / "timm_r18.safetensors")
    assert again.fingerprint == b.fingerprint


# A pretrained_cfg unlike timm's resnet18 default (a1_in1k: bicubic, crop_pct 0.95), so it shows where it came from.
_TIMM_CFG = {"input_size": [3, 64, 64], "interpolation": "bilinear", "crop_pct": 0.8, "crop_mode": "center",
             "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "num_classes": 5, "classifier": "fc", "tag": "toy"}


def test_checkpoint_of_a_timm_folder_uses_its_pretrained_cfg(tmp_path: Path, x64: torch.Tensor,
                                                             tiny: SimpleNamespace) -> None:
    """timm's hub layout (weights + config.json): `checkpoint:` builds the timm model with the config's
    pretrained_cfg and preprocesses as it says, exactly as `timm:NAME --weights FILE` does."""
    torch.manual_seed(0)
    model = tiny.randomize_bn(timm.create_model("resnet18", pretrained=False, num_classes=5)).eval()
    path = tiny.write_timm_folder(tmp_path / "hub", model, "resnet18", _TIMM_CFG, list("abcde"))
    want = Preprocess(resize=80, crop=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bilinear")
    ck = load_backbone(f"checkpoint:{path}")
    named = load_backbone("timm:resnet18", weights=path)
    for b in (ck, named):
        assert b.preprocess == want and b.class_names == list("abcde") and b.weights_format == "timm"
        assert b.model.__class__.__module__.startswith("timm.") and b.model.pretrained_cfg["tag"] == "toy"
        with torch.no_grad():
            assert torch.equal(layer4(b, x64), model.forward_features(x64))
            assert torch.allclose(b.classifier(pool(layer4(b, x64), "avg")), model(x64), rtol=1e-5, atol=1e-5)
    assert ck.fingerprint == named.fingerprint and ck.arch == "resnet18"


def test_checkpoint_of_a_timm_file_gets_timm_preprocessing(tmp_path: Path, tiny: SimpleNamespace) -> None:
    """A timm state dict without config: named as timm's (--weights-format timm), or with keys only timm's
    variant of a name both zoos know has, it is built by timm and preprocessed by its pretrained_cfg."""
    torch.manual_seed(0)
    r18 = tiny.randomize_bn(timm.create_model("resnet18", pretrained=False)).eval()
    torch.save(r18.state_dict(), tmp_path / "timm_r18.pth")
    forced = load_backbone(f"checkpoint:{tmp_path / 'timm_r18.pth'}", weights_format="timm")
    named = load_backbone("timm:resnet18", weights=tmp_path / "timm_r18.pth")
    assert forced.preprocess == named.preprocess and forced.preprocess.interpolation == "bicubic"
    assert forced.model.__class__.__module__.startswith("timm.") and forced.fingerprint == named.fingerprint
    # same keys as torchvision's ResNet-18: without a hint it stays torchvision's (documented)
    assert load_backbone(f"checkpoint:{tmp_path / 'timm_r18.pth'}").preprocess == Preprocess()

    eff = timm.create_model("efficientnet_b0", pretrained=False).eval()  # torchvision has efficientnet_b0 too
    torch.save(eff.state_dict(), tmp_path / "timm_eff.pth")
    b = load_backbone(f"checkpoint:{tmp_path / 'timm_eff.pth'}", arch="efficientnet_b0")
    assert b.model.__class__.__module__.startswith("timm.") and b.weights_format == "timm"
    assert b.preprocess == load_backbone("timm:efficientnet_b0", weights=tmp_path / "timm_eff.pth").preprocess
    tv = torchvision.models.efficientnet_b0().eval()
    torch.save(tv.state_dict(), tmp_path / "tv_eff.pth")
    assert load_backbone(f"checkpoint:{tmp_path / 'tv_eff.pth'}", arch="efficientnet_b0").model.__class__.__module__ \
        .startswith("torchvision.")


def test_an_official_file_passed_by_hand_brings_its_classes_and_transform(empty_hub: Path, monkeypatch, r18: nn.Module,
                                                                        tmp_path: Path) -> None:
    """`--weights resnet18-<hash>.pth` (the official file, anywhere) loads as it does from the hub cache."""
    staging = tmp_path / "staging.pth"
    torch.save(r18.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    official = tmp_path / f"resnet18-{digest}.pth"
    staging.rename(official)
    entry = SimpleNamespace(url=f"https://download.pytorch.org/models/{official.name}",
                            meta={"categories": [f"class{i}" for i in range(1000)]},
                            transforms=functools.partial(ImageClassification, crop_size=64, resize_size=72))
    monkeypatch.setattr(backbones, "_official_entries", lambda name: [entry])
    b = load_backbone("torchvision:resnet18", weights=official)
    assert b.class_names[5] == "class5" and b.preprocess == Preprocess(resize=72, crop=64)
    renamed = tmp_path / "mine.pth"
    official.rename(renamed)
    plain = load_backbone("torchvision:resnet18", weights=renamed)
    assert plain.class_names is None and plain.preprocess == Preprocess() and plain.fingerprint == b.fingerprint
    (tmp_path / official.name).write_bytes(renamed.read_bytes()[:-1] + b"x")  # official name, other bytes
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_backbone("torchvision:resnet18", weights=tmp_path / official.name)


def test_random_init_is_seeded_and_fingerprinted() -> None:
    state = torch.get_rng_state()
    a = load_backbone("torchvision:resnet18", random_init=True, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    b = load_backbone("torchvision:resnet18", random_init=True, seed=3)
    c = load_backbone("torchvision:resnet18", random_init=True, seed=4)
    assert a.fingerprint == hashlib.sha256(b"random-init:3:resnet18").hexdigest() == b.fingerprint != c.fingerprint
    assert torch.equal(a.model.conv1.weight, b.model.conv1.weight)
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)
    assert a.preprocess == Preprocess() and a.weights is None and a.class_names is None


def test_preprocess_override_wins(tmp_path: Path, r18: nn.Module) -> None:
    pre = Preprocess(resize=64, crop=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    b = load_backbone("torchvision:resnet18", random_init=True, preprocess=pre)
    assert b.preprocess is pre


# --- taps ---------------------------------------------------------------------------------------

def test_sources() -> None:
    assert list_sources() == list(SOURCES) == ["torchvision", "torchvision-det", "timm", "checkpoint", "run"]
    assert parse_spec("checkpoint:/path/f.pth") == ("checkpoint", "/path/f.pth")
    assert parse_spec("torchvision:resnet50") == ("torchvision", "resnet50")


@pytest.mark.parametrize(("arch", "channels"),
                         [("resnet18", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048))])
def test_resnet_taps_have_documented_shapes(arch: str, channels: tuple[int, ...]) -> None:
    b = load_backbone(f"torchvision:{arch}", random_init=True)
    assert b.taps == {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    assert b.aliases == {"conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}
    infos = list_taps(b)
    assert [(t.name, t.aliases, t.channels, t.height, t.width) for t in infos] == [
        (f"layer{i + 1}", [f"conv{i + 2}"], c, s, s) for i, (c, s) in enumerate(zip(channels, (56, 28, 14, 7)))]
    last = infos[-1]
    assert last.dims == {"avg": channels[-1], "max": channels[-1], "grid2": 4 * channels[-1],
                         "grid4": 16 * channels[-1], "none": 49 * channels[-1]}
    assert set(last.dims) == set(POOLINGS)


def test_list_taps_input_size(r18: nn.Module) -> None:
    b = load_backbone("torchvision:resnet18", random_init=True)
    assert [(t.height, t.width) for t in list_taps(b, input_size=64)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(ValueError, match="positive int"):
        list_taps(b, input_size=0)

