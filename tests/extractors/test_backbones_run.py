"""The ``run:<id>`` backbone source: refusals, then a classification and a detection run's files loaded
with their taps, classifier and preprocessing, outputs equal to the networks that were saved."""

from __future__ import annotations

import pytest
import torch

from featscope.extractors.backbones import load_backbone, list_taps
from featscope.extractors.checkpoints import CheckpointError
from featscope.extractors.types import Preprocess
from featscope.training.models import build_classifier, build_detector, detector_to_tap_state
from featscope.training.runs import write_backbone_file

CFG = {"norm": "bn", "fpn": False, "roi_size": 4, "proj_channels": 8, "fc_dim": 16, "dilated_resolved": False}
PRE = Preprocess(resize=64, crop=64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    cls = build_classifier("resnet18", 3).eval()
    det = build_detector("resnet18", 2, frozen_bn=False, min_size=64, max_size=64, roi_size=4, proj_channels=8,
                         fc_dim=16).eval()
    write_backbone_file(root / "cls.pt", cls.state_dict(), run_id=7, task="cls", arch="resnet18", preprocess=PRE,
                        class_names=["a", "b", "c"], cfg=CFG)
    write_backbone_file(root / "det.pt", detector_to_tap_state(det), run_id=8, task="det", arch="resnet18",
                        preprocess=PRE, class_names=["x", "y"], cfg=CFG)
    return root, cls, det


def test_refusals(files):
    root = files[0]
    with pytest.raises(ValueError, match="write run:ID with the number of a training run"):
        load_backbone("run:latest", weights=root / "cls.pt")
    with pytest.raises(FileNotFoundError, match="featscope backbone add run:7"):
        load_backbone("run:7")
    with pytest.raises(ValueError, match="drop --random-init"):
        load_backbone("run:7", random_init=True)
    with pytest.raises(CheckpointError, match="is not the backbone file of training run 9"):
        load_backbone("run:9", weights=root / "cls.pt")
    with pytest.raises(ValueError, match="is a resnet18; drop --arch resnet50"):
        load_backbone("run:7", weights=root / "cls.pt", arch="resnet50")


def test_classification_run(files):
    root, cls, _ = files
    bb = load_backbone("run:7", weights=root / "cls.pt", arch="resnet18")
    assert bb.source == "run" and bb.class_names == ["a", "b", "c"] and bb.classifier is not None
    assert bb.preprocess == PRE and list(bb.taps) == ["layer1", "layer2", "layer3", "layer4"]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), cls(x))
    assert load_backbone("run:7", weights=root / "cls.pt").fingerprint == bb.fingerprint


def test_detection_run_offers_head_taps(files):
    root, _, det = files
    bb = load_backbone("run:8", weights=root / "det.pt")
    assert bb.classifier is None and bb.aliases["conv5"] == "layer4"
    shapes = {t.name: (t.channels, t.height, t.width) for t in list_taps(bb)}
    assert shapes == {"layer1": (64, 16, 16), "layer2": (128, 8, 8), "layer3": (256, 4, 4), "layer4": (512, 2, 2),
                      "convproj": (8, 4, 4), "fc1": (16, 1, 1), "fc2": (16, 1, 1)}
    body = {k: v for k, v in bb.model.state_dict().items() if not k.startswith("head.")}
    ref = det.backbone.body.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in body.items())


@pytest.mark.parametrize("spec, file", [("run:7", "cls.pt"), ("run:8", "det.pt")])
def test_a_registered_run_reopens_in_a_fresh_workspace(files, tmp_path, spec, file):
    """Registered in one workspace, opened in another on the same data dir (no shared network cache, as in
    another process): it reloads from the stored load arguments, same fingerprint, same outputs."""
    from featscope.config import Settings
    from featscope.workspace import Workspace

    root = files[0]
    first = Workspace(Settings(data_dir=tmp_path / "data"))
    info = first.add_backbone(spec, name="r", weights=root / file)
    original = first.load_backbone("r")
    again = Workspace(Settings(data_dir=tmp_path / "data")).load_backbone("r")
    assert again is not original and again.fingerprint == original.fingerprint == info.fingerprint
    assert again.source == "run" and list(again.taps) == list(original.taps)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), original.model(x))
