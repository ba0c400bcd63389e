"""Activation and Grad-CAM maps: argument errors first, then each map against a hand computation,
the crop geometry against the preprocessing's own pixels, and state restoration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from featscope.datasets.images import ImageDecodeError, load_rgb
from featscope.extractors.activations import CAM_METHODS, CropGeometry, activation_map, gradcam_map
from featscope.extractors.heads import classifier_for, probe_linear
from featscope.extractors.taps import pool, tap_model
from featscope.extractors.types import Backbone, Preprocess

PRE = Preprocess(resize=72, crop=64)


@pytest.fixture(scope="module")
def backbone(tiny) -> Backbone:
    m = tiny.make_resnet("resnet18", seed=5)
    return Backbone(spec="torchvision:resnet18", source="torchvision", arch="resnet18", model=m, preprocess=PRE,
                    fingerprint="test", taps={f"layer{i}": f"layer{i}" for i in range(1, 5)},
                    aliases={f"conv{i + 1}": f"layer{i}" for i in range(1, 5)}, classifier=m.fc)


@pytest.fixture(scope="module")
def classifier(backbone):
    return classifier_for(backbone)


def photo(w: int = 100, h: int = 60, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pix = rng.normal(120, 50, (h, w, 3)) + np.linspace(0, 90, w)[None, :, None]
    return Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8))


def network_input(backbone: Backbone, image: Image.Image) -> torch.Tensor:
    return backbone.preprocess.normalize(backbone.preprocess.to_uint8(image)[None])


# --- errors ---------------------------------------------------------------------------------------

def test_unknown_tap_lists_the_taps(backbone):
    with pytest.raises(ValueError, match=r"no tap 'conv9'.*layer4.*featscope backbone layers"):
        activation_map(backbone, photo(), tap="conv9")


@pytest.mark.parametrize("n", [-1, 1.5, True, "3"])
def test_bad_top_channels(backbone, n):
    with pytest.raises(ValueError, match="top_channels must be an integer >= 0"):
        activation_map(backbone, photo(), top_channels=n)


def test_more_top_channels_than_the_tap_has(backbone):
    with pytest.raises(ValueError, match="top_channels=513 exceeds the 512 channels of tap 'conv5'"):
        activation_map(backbone, photo(), top_channels=513)


def test_unknown_method_and_class(backbone, classifier):
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+\+\+'; choose one of gradcam, gradcam\+\+"):
        gradcam_map(classifier, backbone, photo(), 0, method="gradcam+++")
    with pytest.raises(ValueError, match=r"unknown class 'zebra'.*index 0..999"):
        gradcam_map(classifier, backbone, photo(), "zebra")


def test_unreadable_images(backbone, tmp_path: Path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="not an image.*check the file"):
        activation_map(backbone, text)
    with pytest.raises(ImageDecodeError, match="file not found.*check the path"):
        activation_map(backbone, tmp_path / "missing.png")
    with pytest.raises(TypeError, match="PIL image or a path"):
        activation_map(backbone, np.zeros((8, 8, 3), np.uint8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(backbone):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        activation_map(backbone, photo(), device="cuda")


# --- activation maps ------------------------------------------------------------------------------

def test_mean_map_is_the_channel_mean_of_the_tap(backbone, tiny):
    img = photo()
    a = activation_map(backbone, img, device="cpu")
    act = tiny.resnet_layer4(backbone.model, network_input(backbone, img))[0].double()  # (512, 2, 2)
    raw = act.mean(0)
    np.testing.assert_allclose(a.raw, raw.numpy(), rtol=1e-5, atol=1e-6)
    up = F.interpolate(raw[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(a.upsampled, up, rtol=1e-5, atol=1e-6)
    lo, hi = raw.min().item(), raw.max().item()
    np.testing.assert_allclose(a.normalized, (up - lo) / (hi - lo), atol=1e-5)
    assert a.normalized.min() >= 0 and a.normalized.max() <= 1
    assert a.tap == "conv5" and a.backbone == "torchvision:resnet18" and a.channels.shape == (0,)


def test_earlier_tap_resolution(backbone):
    a = activation_map(backbone, photo(), tap="layer2")
    assert a.raw.shape == (8, 8) and a.upsampled.shape == (64, 64)


def test_top_channels_are_the_strongest(backbone):
    img = photo(seed=2)
    a = activation_map(backbone, img, top_channels=5)
    with torch.no_grad():
        act = tap_model(backbone, ["conv5"])(network_input(backbone, img))["conv5"][0].double().numpy()
    scores = act.mean(axis=(1, 2))
    expected = np.argsort(-scores, kind="stable")[:5]
    np.testing.assert_array_equal(a.channels, expected)
    np.testing.assert_allclose(a.channel_scores, scores[expected], rtol=1e-5)
    assert np.all(np.diff(a.channel_scores) <= 0)
    np.testing.assert_allclose(a.channel_raw, act[expected], rtol=1e-5, atol=1e-6)
    assert a.channel_maps.shape == (5, 64, 64)
    for k in range(5):
        c = act[expected[k]]
        up = F.interpolate(torch.from_numpy(c)[None, None], size=(64, 64), mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        if c.max() > c.min():
            np.testing.assert_allclose(a.channel_maps[k], (up - c.min()) / (c.max() - c.min()), atol=1e-5)
        heat = a.channel_heat(k)
        assert heat.shape == (60, 100) and np.nanmin(heat) >= 0 and np.nanmax(heat) <= 1
    with pytest.raises(IndexError, match="holds 5 top channels"):
        a.channel_heat(5)


def test_crop_geometry_of_a_non_square_image():
    g = CropGeometry.of(PRE, (100, 60))
    # short side 60 -> 72, long side int(72 * 100 / 60) = 120; crop 64 at ((120-64)/2, (72-64)/2)
    assert g.resized_size == (120, 72) and g.offset == (28, 4) and g.crop == 64
    np.testing.assert_allclose(g.box, (28 * 100 / 120, 4 * 60 / 72, 92 * 100 / 120, 68 * 60 / 72))
    heat = g.to_original(np.ones((2, 2)))
    assert heat.shape == (60, 100)
    cols, rows = np.flatnonzero(~np.isnan(heat[30])), np.flatnonzero(~np.isnan(heat[:, 50]))
    assert (cols[0], cols[-1], rows[0], rows[-1]) == (23, 76, 3, 56)  # pixel centres inside the box
    assert np.isnan(heat).sum() == 100 * 60 - 54 * 54 and np.all(heat[~np.isnan(heat)] == 1)


@pytest.mark.parametrize("size", [(100, 60), (60, 100), (333, 41), (64, 64)])
def test_crop_maps_back_onto_the_original_pixels(size):
    """The network's own crop, drawn back with to_original, lands on the original image's pixels."""
    w, h = size
    xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ramp = np.stack([xs * 200 / w, ys * 200 / h, np.zeros_like(xs)], axis=-1)
    img = Image.fromarray(np.rint(ramp).astype(np.uint8))
    crop = PRE.to_uint8(img).double().numpy()  # (3, 64, 64)
    g = CropGeometry.of(PRE, size)
    x0, y0, x1, y1 = g.box
    margin_x, margin_y = 2 * w / g.resized_size[0] + 1, 2 * h / g.resized_size[1] + 1  # skip bilinear borders
    inner = ((xs > x0 + margin_x) & (xs < x1 - margin_x) & (ys > y0 + margin_y) & (ys < y1 - margin_y))
    for c in range(2):
        back = g.to_original(crop[c])
        assert np.isnan(back[(xs < x0) | (xs > x1) | (ys < y0) | (ys > y1)]).all()
        np.testing.assert_allclose(back[inner], ramp[..., c][inner], atol=2.0)


def test_heat_is_normalised_in_original_coordinates(backbone):
    a = activation_map(backbone, photo(), top_channels=2)
    heat = a.heat()
    assert heat.shape == (60, 100) and heat.dtype == np.float32
    inside = heat[~np.isnan(heat)]
    assert inside.min() >= 0 and inside.max() <= 1
    arrays = a.arrays()
    assert set(arrays) >= {"raw", "upsampled", "normalized", "heat", "box", "channels", "channel_maps"}


def _constant_backbone() -> Backbone:
    conv = nn.Conv2d(3, 4, 3, stride=4)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, 3.0, 2.0, 3.0]))
    model = nn.Sequential(conv).eval()
    return Backbone(spec="test:constant", source="test", arch="const", model=model, preprocess=PRE,
                    fingerprint="c", taps={"out": "0"})


def test_constant_map_normalises_to_zeros_not_nan():
    a = activation_map(_constant_backbone(), photo(), tap="out", top_channels=4)
    np.testing.assert_allclose(a.raw, 2.25)
    assert np.all(a.normalized == 0) and np.all(a.channel_maps == 0)
    heat = a.heat()
    assert np.all(heat[~np.isnan(heat)] == 0) and np.isnan(heat).any()
    np.testing.assert_array_equal(a.channels, [1, 3, 2, 0])  # ties by channel index


def test_any_image_mode_matches_its_rgb_decoding(backbone, tmp_path: Path):
    rng = np.random.default_rng(3)
    grey16 = Image.fromarray(rng.integers(0, 65535, (50, 90), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 255, (70, 40, 4), dtype=np.uint8), mode="RGBA")
    for img in (grey16, rgba, photo().convert("L"), photo().convert("CMYK")):
        path = tmp_path / f"{img.mode.replace(';', '_')}.{'tif' if img.mode == 'CMYK' else 'png'}"
        img.save(path)
        reference = activation_map(backbone, load_rgb(path), tap="conv2")
        from_pil = activation_map(backbone, img, tap="conv2")
        np.testing.assert_allclose(from_pil.raw, reference.raw, rtol=1e-6)
        assert from_pil.image.mode == "RGB" and from_pil.heat().shape == (img.height, img.width)
    from_path = activation_map(backbone, path, tap="conv2")  # the CMYK TIFF, decoded by load_rgb
    np.testing.assert_allclose(from_path.raw, reference.raw, rtol=1e-6)


# --- Grad-CAM -------------------------------------------------------------------------------------

def hand_gradcam(net: nn.Module, x: torch.Tensor, k: int) -> np.ndarray:
    """Grad-CAM by its definition: class-k logit's gradients at the tap, channel weights = their spatial
    mean, ReLU of the weighted channel sum."""
    with torch.enable_grad():
        act = net.features(x).detach().requires_grad_(True)
        logit = net.head(pool(act, "avg"))[0, k]
        (grad,) = torch.autograd.grad(logit, act)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * act).sum(1))[0].detach().double().numpy()


def test_gradcam_matches_the_hand_computation(backbone, classifier):
    img = photo(seed=4)
    g = gradcam_map(classifier, backbone, img, 7)
    x = network_input(backbone, img)
    expected = hand_gradcam(classifier.net, x, 7)
    assert g.raw.shape == (2, 2)
    np.testing.assert_allclose(g.raw, expected, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        logits = classifier.net(x)[0].double()
    assert g.target == 7 and g.class_name == "7" and g.head == "classifier" and g.method == "gradcam"
    assert g.score == pytest.approx(logits[7].item(), rel=1e-5)
    assert g.probability == pytest.approx(torch.softmax(logits, 0)[7].item(), rel=1e-5)
    up = F.interpolate(torch.from_numpy(expected)[None, None], size=(64, 64), mode="bilinear",
                       align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(g.upsampled, up, rtol=1e-4, atol=1e-6)
    assert g.heat().shape == (60, 100)


def test_gradcam_with_a_probe_head_and_class_names(backbone):
    rng = np.random.default_rng(0)
    probe = probe_linear(rng.normal(size=(3, 512)), rng.normal(size=3), rng.normal(size=512), rng.random(512) + 0.5)
    clf = classifier_for(backbone, probe=probe, probe_classes=["cat", "dog", "camel"])
    img = photo(seed=6)
    g = gradcam_map(clf, backbone, img, "camel")
    np.testing.assert_allclose(g.raw, hand_gradcam(clf.net, network_input(backbone, img), 2), rtol=1e-4, atol=1e-6)
    assert g.target == 2 and g.class_name == "camel" and g.head == "probe"


class _Untraceable(nn.Module):
    """FX cannot trace data-dependent control flow, so its tap model is the hook-based wrapper."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        if h.sum() > 0:
            h = h * 1.0
        return self.stage(h)


def test_gradcam_through_a_hook_based_body():
    torch.manual_seed(0)
    b = Backbone(spec="test:hooks", source="test", arch="untraceable", model=_Untraceable().eval(),
                 preprocess=PRE, fingerprint="h", taps={"stage": "stage"})
    clf = classifier_for(b, probe=nn.Linear(16, 4))
    assert not isinstance(clf.net.body, torch.fx.GraphModule)
    img = photo(seed=8)
    g = gradcam_map(clf, b, img, 1)
    assert g.raw.shape == (16, 16)
    np.testing.assert_allclose(g.raw, hand_gradcam(clf.net, network_input(b, img), 1), rtol=1e-4, atol=1e-6)


def test_gradcam_restores_the_network_state(backbone):
    clf = classifier_for(backbone)
    net = clf.net
    net.train()
    params = list(net.parameters())
    params[0].requires_grad_(False)
    marker = torch.ones_like(params[1])
    params[1].grad = marker
    with torch.inference_mode():
        gradcam_map(clf, backbone, photo(), 3)
    assert all(m.training for m in net.modules())
    assert not params[0].requires_grad and all(p.requires_grad for p in params[1:])
    assert params[1].grad is marker and all(p.grad is None for p in params[2:])


@pytest.mark.parametrize("method", ["gradcam++", "hirescam", "xgradcam", "layercam", "eigencam"])
def test_other_methods_give_maps(backbone, classifier, method):
    assert method in CAM_METHODS
    g = gradcam_map(classifier, backbone, photo(), 1, method=method)
    assert g.method == method and g.raw.shape == (2, 2) and (g.raw >= 0).all()
    assert 0 <= g.normalized.min() and g.normalized.max() <= 1


def test_hirescam_matches_its_definition(backbone, classifier):
    """HiResCAM: ReLU of the channel sum of gradient * activation (no spatial averaging)."""
    img = photo(seed=9)
    x = network_input(backbone, img)
    net = classifier.net
    with torch.enable_grad():
        act = net.features(x).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net.head(pool(act, "avg"))[0, 5], act)
    expected = torch.relu((grad * act).sum(1))[0].detach().numpy()
    g = gradcam_map(classifier, backbone, img, 5, method="hirescam")
    np.testing.assert_allclose(g.raw, expected, rtol=1e-4, atol=1e-6)
