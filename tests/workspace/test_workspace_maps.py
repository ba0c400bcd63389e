"""Heatmaps and mask-out maps through the workspace: same numbers as the extractor functions, cached,
drawn on the original image, with a probe head for networks without a classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from featscope.extractors.types import Preprocess
from featscope.workspace import NotFound

SMALL = Preprocess(resize=40, crop=32)


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, make_images):
    """A labelled folder, a ResNet-18 with its classifier, and a body-only ResNet-18 checkpoint (no classifier)."""
    from featscope.config import Settings
    from featscope.workspace import Workspace

    root = tmp_path_factory.mktemp("maps")
    ws = Workspace(Settings(data_dir=root / "data", num_workers=0, batch_size=8, shard_size=64))
    make_images(root / "imgs", {"a": 8, "b": 8, "c": 8}, size=36)
    ws.add_dataset(root / "imgs", name="shapes")
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=0, name="cls", preprocess=SMALL)
    torch.manual_seed(3)
    body = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    torch.save(body, root / "body.pth")
    ws.add_backbone(f"checkpoint:{root / 'body.pth'}", arch="resnet18", name="det", preprocess=SMALL)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(root / "wide.png")
    return ws, root


def test_mean_heatmap_equals_activation_map_and_is_cached(mapped, monkeypatch):
    from featscope.extractors.activations import activation_map
    from featscope.workspace import maps

    ws, root = mapped
    res = ws.heatmap("cls", root / "wide.png", top_channels=2)
    ref = activation_map(ws.load_backbone("cls"), root / "wide.png", top_channels=2)
    np.testing.assert_allclose(res.arrays["raw"], ref.raw, rtol=1e-6)
    assert res.heat.shape == (50, 80) and res.overlay().size == (80, 50)
    assert res.data["channels"] == ref.channels.tolist() and not res.cached
    def no_network(*args, **kwargs):
        raise AssertionError("a cache hit must not load the network")

    monkeypatch.setattr(maps, "open_backbone", no_network)
    again = ws.heatmap("cls", root / "wide.png", top_channels=2)
    assert again.cached and again.overlay_png == res.overlay_png
    # another colour map is the same map: redrawn from the stored arrays, not recomputed
    from featscope.datasets.images import load_rgb
    from featscope.extractors.overlay import overlay

    green = ws.heatmap("cls", root / "wide.png", top_channels=2, cmap="viridis")
    assert green.cached and green.params["cmap"] == "viridis" and green.artifact_key == res.artifact_key
    want = overlay(load_rgb(root / "wide.png"), res.heat, cmap="viridis")
    assert green.overlay_png != res.overlay_png and np.array_equal(np.asarray(green.overlay()), np.asarray(want))


def test_catalog_image_and_its_file_share_the_cached_map(mapped):
    ws, root = mapped
    img = ws.images("shapes", limit=1)[0]
    by_id = ws.heatmap("cls", img.id)
    by_path = ws.heatmap("cls", root / "imgs" / img.relpath)
    assert by_path.cached and by_path.artifact_key == by_id.artifact_key


def test_gradcam_uses_the_backbones_classifier(mapped):
    from featscope.extractors.activations import gradcam_map
    from featscope.extractors.heads import classifier_for

    ws, root = mapped
    res = ws.heatmap("cls", root / "wide.png", method="gradcam", target=7)
    bb = ws.load_backbone("cls")
    ref = gradcam_map(classifier_for(bb), bb, root / "wide.png", 7)
    np.testing.assert_allclose(res.arrays["raw"], ref.raw, rtol=1e-4, atol=1e-6)
    assert res.data["head"] == "classifier" and res.data["target"] == 7 and res.data["target_chosen"] == "given"
    with pytest.raises(ValueError, match="unknown method"):
        ws.heatmap("cls", root / "wide.png", method="occlusion")


def test_gradcam_without_a_target_explains_the_top_scoring_class(mapped):
    """As pytorch-grad-cam does without targets: the arg-max class, named in the result."""
    import torch

    from featscope.datasets.images import load_rgb
    from featscope.extractors.activations import gradcam_map
    from featscope.extractors.heads import classifier_for

    ws, root = mapped
    bb = ws.load_backbone("cls")
    clf = classifier_for(bb)
    with torch.no_grad():
        top = int(clf.net(bb.preprocess.normalize(bb.preprocess.to_uint8(load_rgb(root / "wide.png"))[None])).argmax())
    res = ws.heatmap("cls", root / "wide.png", method="gradcam")
    assert res.data["target"] == top and res.data["target_chosen"] == "top-scoring"
    assert res.data["class_name"] == str(top) and res.params["target"] is None
    ref = gradcam_map(clf, bb, root / "wide.png", top)
    np.testing.assert_allclose(res.arrays["raw"], ref.raw, rtol=1e-4, atol=1e-6)
    assert ws.heatmap("cls", root / "wide.png", method="gradcam").cached


def test_maskout_equals_the_extractor_and_draws_on_the_original(mapped):
    from featscope.datasets.images import load_rgb
    from featscope.extractors.heads import classifier_for
    from featscope.extractors.maskout import maskout_map

    ws, root = mapped
    res = ws.maskout("cls", root / "wide.png", target=3, size=8, stride=8)
    bb = ws.load_backbone("cls")
    ref = maskout_map(classifier_for(bb), bb.preprocess.to_uint8(load_rgb(root / "wide.png")), 3,
                      preprocess=bb.preprocess, size=8, stride=8)
    np.testing.assert_allclose(res.arrays["probs"], ref.probs, atol=1e-6)
    assert res.data["unmasked_probability"] == pytest.approx(ref.unmasked, abs=1e-6)
    assert res.heat.shape == (50, 80)
    inside = ~np.isnan(res.heat)
    assert inside.any() and (~inside).any()  # the crop of a wide image leaves its sides out
    assert ws.maskout("cls", root / "wide.png", target=3, size=8, stride=8).cached
    approx = ws.maskout("cls", root / "wide.png", target=3, size=8, stride=8, approx_margin=0)
    assert not approx.cached and approx.params["approx_margin"] == 0 and "approximate" in approx.data["engine"]


def test_maskout_scales_are_drawn_with_a_colour_bar_that_states_them(mapped, monkeypatch):
    """relative (default): the map's own probability range uses every colour; absolute: 0..1; drop: the fall
    from the unmasked probability. One stored map, redrawn per scale without the network."""
    from featscope.datasets.images import load_rgb
    from featscope.extractors.overlay import overlay, rescale
    from featscope.workspace import maps

    ws, root = mapped
    res = ws.maskout("cls", root / "wide.png", target=2, size=8, stride=8)
    probs, heat, u = res.arrays["probs"], res.heat, res.data["unmasked_probability"]
    assert res.params["scale"] == "relative" and np.ptp(probs) > 0
    assert (res.legend["low"], res.legend["high"]) == (float(probs.min()), float(probs.max()))
    drawn = np.asarray(res.overlay())
    assert drawn.shape[1] == 200 and drawn.shape[0] > 50 + 20  # the image, a colour bar below it
    want = overlay(load_rgb(root / "wide.png"), rescale(heat, probs.min(), probs.max()))
    assert np.array_equal(drawn[:50, :80], np.asarray(want))
    monkeypatch.setattr(maps, "open_backbone", lambda *a, **k: pytest.fail("a redraw must not load the network"))
    absolute = ws.maskout("cls", root / "wide.png", target=2, size=8, stride=8, scale="absolute")
    assert absolute.cached and absolute.artifact_key == res.artifact_key
    assert (absolute.legend["low"], absolute.legend["high"]) == (0.0, 1.0)
    assert np.array_equal(np.asarray(absolute.overlay())[:50, :80],
                          np.asarray(overlay(load_rgb(root / "wide.png"), heat)))
    drop = ws.maskout("cls", root / "wide.png", target=2, size=8, stride=8, scale="drop")
    assert drop.legend["low"] == pytest.approx(u - probs.max()) and drop.legend["high"] == pytest.approx(u - probs.min())
    assert "drop" in drop.legend["label"] and drop.overlay_png not in (res.overlay_png, absolute.overlay_png)
    with pytest.raises(ValueError, match="scale must be one of relative, absolute, drop"):
        ws.maskout("cls", root / "wide.png", target=2, size=8, stride=8, scale="log")


def test_mean_fill_uses_the_given_mean_pixel_through_a_caffe_preprocess(mapped):
    """fill='mean' fills with the caller's RGB mean pixel, normalised as the network's input is (here BGR,
    0..255 scale, Caffe means), and is keyed by it."""
    from featscope.datasets.images import load_rgb
    from featscope.extractors.heads import classifier_for
    from featscope.extractors.maskout import maskout_map
    from featscope.extractors.checkpoints import CAFFE_PREPROCESS

    ws, root = mapped
    # Caffe means, BGR, 0..255 inputs; a pixel std keeps this random net's logits unsaturated
    caffe = Preprocess(**{**CAFFE_PREPROCESS.to_dict(), "std": (57.375, 57.12, 58.395), "resize": 40, "crop": 32})
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=0, name="cls-caffe", preprocess=caffe)
    pixel = (200.0, 30.0, 90.0)
    bb = ws.load_backbone("cls-caffe")
    x = bb.preprocess.to_uint8(load_rgb(root / "wide.png"))
    with torch.no_grad():
        top = int(classifier_for(bb).net(bb.preprocess.normalize(x[None])).argmax())
    res = ws.maskout("cls-caffe", root / "wide.png", target=top, size=8, stride=8, fill="mean", mean_pixel=pixel)
    ref = maskout_map(classifier_for(bb), x, top, preprocess=bb.preprocess, size=8, stride=8, fill="mean",
                      mean_pixel=pixel)
    np.testing.assert_allclose(res.arrays["probs"], ref.probs, atol=1e-6)
    assert np.ptp(ref.probs) > 0.1 * ref.probs.max(), "a flat map would not show the fill"
    other = ws.maskout("cls-caffe", root / "wide.png", target=top, size=8, stride=8, fill="mean",
                       mean_pixel=(0.0, 0.0, 0.0))
    assert not other.cached and other.params["mean_pixel"] == [0.0, 0.0, 0.0]
    assert np.abs(other.arrays["probs"] - res.arrays["probs"]).max() > 1e-6
    with pytest.raises(ValueError, match="needs mean_pixel"):
        ws.maskout("cls-caffe", root / "wide.png", target=3, size=8, fill="mean")
    with pytest.raises(ValueError, match="needs mean_pixel"):
        ws.maskout("cls-caffe", root / "wide.png", target=3, size=8, fill="mean", mean_pixel=(300, 0, 0))


def test_maskout_bad_input_names_the_fix(mapped):
    ws, root = mapped
    with pytest.raises(ValueError, match="larger than the network"):
        ws.maskout("cls", root / "wide.png", target=3, size=40)
    with pytest.raises(ValueError, match="stride"):
        ws.maskout("cls", root / "wide.png", target=3, size=8, stride=0)
    with pytest.raises(ValueError, match="unknown class"):
        ws.maskout("cls", root / "wide.png", target="camel", size=8)
    with pytest.raises(ValueError, match="fill"):
        ws.maskout("cls", root / "wide.png", target=3, size=8, fill="noise")
    with pytest.raises(FileNotFoundError, match="image file"):
        ws.maskout("cls", root / "missing.png", target=3)


def test_network_without_classifier_gets_a_probe_head(mapped):
    ws, root = mapped
    assert not [b for b in ws.backbones() if b.name == "det"][0].has_classifier
    with pytest.raises(ValueError, match="--probe-dataset"):
        ws.maskout("det", root / "wide.png", target="a", size=8)
    with pytest.raises(NotFound, match="featscope extract"):
        ws.maskout("det", root / "wide.png", target="a", size=8, probe_dataset="shapes")
    ws.extract("det", "shapes")
    res = ws.maskout("det", root / "wide.png", target="b", size=8, stride=8, probe_dataset="shapes")
    probe = ws.load_probe("det", "shapes", train=False)
    assert res.data["head"] == "probe" and res.data["class_name"] == "b" and probe.classes == ["a", "b", "c"]
    # A catalog image brings its own data set: no --probe-dataset needed.
    img = ws.images("shapes", limit=1)[0]
    assert ws.maskout("det", img.id, target="b", size=8, stride=8).data["head"] == "probe"
    assert ws.heatmap("det", img.id, method="gradcam", target="c").data["head"] == "probe"


def test_cached_class_maps_do_not_load_the_network(mapped, monkeypatch):
    """Grad-CAM and mask-out hits (own classifier or probe head) are answered from the store alone."""
    from featscope.workspace import maps

    ws, root = mapped
    ws.extract("det", "shapes")
    calls = [lambda: ws.heatmap("cls", root / "wide.png", method="gradcam", target=5),
             lambda: ws.maskout("cls", root / "wide.png", target=5, size=8, stride=8),
             lambda: ws.maskout("det", root / "wide.png", target="a", size=8, stride=8, probe_dataset="shapes")]
    first = [call() for call in calls]

    def no_network(*args, **kwargs):
        raise AssertionError("a cache hit must not load the network")

    monkeypatch.setattr(maps, "open_backbone", no_network)
    for call, res in zip(calls, first):
        again = call()
        assert again.cached and again.artifact_key == res.artifact_key and again.data == res.data
    with pytest.raises(AssertionError, match="must not load"):  # a miss still needs it
        ws.maskout("cls", root / "wide.png", target=6, size=8, stride=8)
