"""Classification heads: errors first, then the probe fold and both heads against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from featscope.extractors.heads import Classifier, ClassifierNet, classifier_for, probe_linear
from featscope.extractors.types import Backbone, Preprocess


def _backbone(model: nn.Module, with_classifier: bool = True, names: list[str] | None = None) -> Backbone:
    return Backbone(spec="torchvision:resnet18", source="torchvision", arch="resnet18", model=model,
                    preprocess=Preprocess(resize=64, crop=64), fingerprint="test",
                    taps={f"layer{i}": f"layer{i}" for i in range(1, 5)},
                    classifier=model.fc if with_classifier else None, class_names=names)


def test_probe_linear_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError, match=r"probe arrays disagree.*expected \(C, D\), \(C,\), \(D,\), \(D,\)"):
        probe_linear(np.zeros((3, 4)), np.zeros(2), np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="scaler_scale must be positive"):
        probe_linear(np.zeros((3, 4)), np.zeros(3), np.zeros(4), np.array([1.0, 0.0, 1.0, 1.0]))


def test_classifier_for_errors(r18) -> None:
    with pytest.raises(ValueError, match=r"has no classifier; train a linear probe.*featscope analyze probe"):
        classifier_for(_backbone(r18, with_classifier=False))
    probe = nn.Linear(512, 3)
    with pytest.raises(ValueError, match="probe has 3 outputs but 2 class names"):
        classifier_for(_backbone(r18), probe=probe, probe_classes=["a", "b"])


def test_class_index_resolves_names_and_indices(r18) -> None:
    clf = classifier_for(_backbone(r18, names=[f"n{i}" for i in range(1000)]))
    assert clf.class_index("n7") == 7 and clf.class_index(7) == 7 and clf.class_index("12") == 12
    assert clf.class_index(np.int64(3)) == 3
    with pytest.raises(ValueError, match=r"unknown class 'camel'; the classifier knows 1000 classes: n0, n1.* \.\.\. "
                                         r"\(pass a class name or an index 0..999\)"):
        clf.class_index("camel")
    with pytest.raises(ValueError, match="unknown class 1000"):
        clf.class_index(1000)
    with pytest.raises(ValueError, match="unknown class -1"):
        clf.class_index(-1)


def test_probe_linear_equals_standardise_then_linear() -> None:
    rng = np.random.default_rng(0)
    coef, icpt = rng.normal(size=(4, 6)), rng.normal(size=4)
    mean, scale = rng.normal(size=6), rng.uniform(0.5, 2.0, size=6)
    f = rng.normal(size=(5, 6))
    want = ((f - mean) / scale) @ coef.T + icpt
    with torch.no_grad():
        got = probe_linear(coef, icpt, mean, scale)(torch.from_numpy(f).float()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_own_classifier_reproduces_the_model(r18, x64) -> None:
    clf = classifier_for(_backbone(r18))
    assert isinstance(clf, Classifier) and isinstance(clf.net, ClassifierNet) and clf.source == "classifier"
    assert clf.class_names[:2] == ["0", "1"] and len(clf.class_names) == 1000
    with torch.no_grad():
        np.testing.assert_allclose(clf.net(x64).numpy(), r18(x64).numpy(), rtol=1e-5, atol=1e-5)
    assert clf.net.head is not r18.fc  # a copy: the backbone's classifier is not shared


def test_probe_head_reads_pooled_conv5(r18, x64) -> None:
    probe = probe_linear(np.eye(3, 512), np.zeros(3), np.zeros(512), np.ones(512))
    clf = classifier_for(_backbone(r18, with_classifier=False), probe=probe, probe_classes=["a", "b", "c"])
    assert clf.source == "probe" and clf.class_index("c") == 2
    with torch.no_grad():
        h = r18.maxpool(r18.relu(r18.bn1(r18.conv1(x64))))
        pooled = r18.layer4(r18.layer3(r18.layer2(r18.layer1(h)))).mean((2, 3))
        np.testing.assert_allclose(clf.net(x64).numpy(), pooled[:, :3].numpy(), rtol=1e-5, atol=1e-5)
