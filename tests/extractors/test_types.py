"""Preprocess against torchvision's own transforms: the same pixels and the same normalised input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from featscope.extractors.types import Backbone, Preprocess


def test_bad_preprocess_is_rejected_with_the_reason():
    with pytest.raises(ValueError, match="cannot exceed"):
        Preprocess(resize=100, crop=200)
    with pytest.raises(ValueError, match="positive"):
        Preprocess(resize=0, crop=0)
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=(1.0, 0.0, 1.0))


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (333, 517), (517, 333), (256, 256), (301, 299), (224, 900)])
def test_crop_is_pixel_identical_to_torchvision_resize_centercrop(size):
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    p = Preprocess(resize=256, crop=224)
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])(img)
    assert torch.equal(p.to_uint8(img), ref)


def test_normalize_equals_torchvision_normalize_and_bgr_scaling():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8))
    p = Preprocess()
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(p.mean, p.std)])(img)
    torch.testing.assert_close(p.normalize(p.to_uint8(img)[None])[0], ref, rtol=1e-5, atol=1e-5)

    caffe = Preprocess(mean=(103.53, 116.28, 123.675), std=(1.0, 1.0, 1.0), channel_order="BGR", pixel_scale=255.0)
    x = caffe.to_uint8(img)
    expected = x.flip(0).float() - torch.tensor(caffe.mean).view(3, 1, 1)
    torch.testing.assert_close(caffe.normalize(x[None])[0], expected)


def test_round_trip_through_dict_and_tap_resolution():
    p = Preprocess(resize=232, crop=224, interpolation="bicubic")
    assert Preprocess.from_dict(p.to_dict()) == p
    b = Backbone(spec="s", source="torchvision", arch="a", model=torch.nn.Identity(), preprocess=p, fingerprint="f",
                 taps={"layer4": "layer4"}, aliases={"conv5": "layer4"})
    assert b.resolve_tap("conv5") == "layer4" and b.resolve_tap("layer4") == "layer4"
    with pytest.raises(ValueError, match="backbone layers"):
        b.resolve_tap("conv6")
