"""Models: the study's head, project-then-pool exactness, head taps' shapes, one initial trunk for both tasks."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import MultiScaleRoIAlign

from featscope.extractors.detection_head import DETECTION_TAPS, detection_tap_model
from featscope.training.models import (build_classifier, build_detector, build_trunk, detector_to_tap_state,
                                       initial_trunk, load_trunk, trunk_state)

HEAD = dict(roi_size=7, proj_channels=32, fc_dim=64)


def test_refusals():
    with pytest.raises(ValueError, match="training supports"):
        build_trunk("vgg16")
    with pytest.raises(ValueError, match="cannot dilate"):
        build_detector("resnet18", 3, dilated=True)
    with pytest.raises(ValueError, match="dilated Conv5 or FPN"):
        build_detector("resnet50", 3, dilated=True, fpn=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_classifier("resnet18", 1)
    with pytest.raises(ValueError, match="does not fit"):
        load_trunk(build_classifier("resnet18", 3), trunk_state(build_trunk("resnet34")), "resnet34")


def test_head_is_the_studys_not_torchvisions():
    det = build_detector("resnet18", 3, min_size=64, max_size=64, **HEAD)
    head = det.roi_heads.box_head
    assert [type(m).__name__ for m in (head.convproj, head.fc1, head.fc2)] == ["Conv2d", "Linear", "Linear"]
    assert head.convproj.kernel_size == (1, 1) and head.convproj.in_channels == 512
    assert head.fc1.in_features == 32 * 7 * 7 and head.fc2.out_features == 64
    assert det.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    resnet50 = build_detector("resnet50", 3, min_size=64, max_size=64, **HEAD)
    layer4 = resnet50.backbone.body.layer4  # dilated Conv5 by default (stride 16)
    assert layer4[0].conv2.stride == (1, 1) and layer4[1].conv2.dilation == (2, 2)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_project_then_pool_equals_pool_then_project(arch):
    """ConvProj's weights before RoIAlign and its bias after give the study's head's output, boxes partly
    outside the image included."""
    torch.manual_seed(0)
    det = build_detector(arch, 3, min_size=96, max_size=96, **HEAD).eval()
    head = det.roi_heads.box_head
    with torch.no_grad():
        images, _ = det.transform(list(torch.rand(2, 3, 96, 96)))
        feats = det.backbone(images.tensors)
        boxes = [torch.tensor([[0.0, 0.0, 96.0, 96.0], [-10.0, 5.0, 60.0, 110.0]])] * 2
        pooled = MultiScaleRoIAlign(["0"], 7, 2)(feats, boxes, images.image_sizes)
        x = torch.relu(head.convproj(pooled))
        expected = head.relu_fc2(head.fc2(head.relu_fc1(head.fc1(x.flatten(1)))))
        got = head(det.roi_heads.box_roi_pool(feats, boxes, images.image_sizes))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("arch, dilated, c5", [("resnet18", False, (512, 2, 2)), ("resnet50", True, (2048, 4, 4))])
def test_head_taps_shapes_and_values(arch, dilated, c5):
    """Taps layer1..layer4, convproj (C, R, R), fc1, fc2 (D, 1, 1); fc2 is the detector's head on the whole image."""
    torch.manual_seed(0)
    det = build_detector(arch, 3, min_size=64, max_size=64, **HEAD).eval()
    model = detection_tap_model(arch, dilated=dilated, **HEAD)
    model.load_state_dict(detector_to_tap_state(det))
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        taps = create_feature_extractor(model, {v: k for k, v in DETECTION_TAPS.items()})(x * 1.0)
        images, _ = det.transform(list(x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
                                       + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)))
        whole = [torch.tensor([[0.0, 0.0, 64.0, 64.0]])] * 2
        ref = det.roi_heads.box_head(det.roi_heads.box_roi_pool(det.backbone(images.tensors), whole, images.image_sizes))
    assert tuple(taps["layer4"].shape[1:]) == c5
    assert tuple(taps["convproj"].shape) == (2, 32, 7, 7)
    assert tuple(taps["fc1"].shape) == (2, 64, 1, 1) and tuple(taps["fc2"].shape) == (2, 64, 1, 1)
    torch.testing.assert_close(taps["fc2"].flatten(1), ref, rtol=1e-4, atol=1e-5)


def test_classifier_and_detector_start_from_one_trunk():
    trunk = initial_trunk("resnet18", seed=3)
    cls, det = build_classifier("resnet18", 5), build_detector("resnet18", 2, min_size=64, max_size=64, **HEAD)
    load_trunk(cls, trunk, "seed 3")
    load_trunk(det, trunk, "seed 3")
    a, b = trunk_state(cls), trunk_state(det)  # the detector's FrozenBatchNorm has no num_batches_tracked
    a = {k: v for k, v in a.items() if not k.endswith("num_batches_tracked")}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(initial_trunk("resnet18", 4)["conv1.weight"], trunk["conv1.weight"])
