"""Mask-out maps: errors first, then both engines against a naive loop and against Captum's Occlusion."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from featscope.extractors.heads import classifier_for, probe_linear
from featscope.extractors.maskout import maskout_map
from featscope.extractors.types import Backbone, Preprocess

PRE = Preprocess(resize=64, crop=64)
SIZE, STRIDE = 16, 8


@pytest.fixture(scope="module")
def net(tiny) -> nn.Module:
    """ResNet-18 whose classifier is sharpened so probabilities span a useful range (not all ~1/1000)."""
    m = tiny.make_resnet("resnet18", seed=0)
    with torch.no_grad():
        m.fc.weight.mul_(5.0)  # top logits ~25, as confident as a trained ImageNet net
    return m.eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
    img[:, 20:44, 10:40] = torch.tensor([200, 40, 90], dtype=torch.uint8).view(3, 1, 1)  # an "object"
    return img


@pytest.fixture(scope="module")
def target(net, image) -> int:
    with torch.no_grad():
        return int(net(PRE.normalize(image[None])).argmax())


def naive(model: nn.Module, image: torch.Tensor, target: int, size: int, stride: int,
          fill: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """One full forward pass per position on the whole image with the window set to ``fill`` (default 0)."""
    x = PRE.normalize(image[None])
    fill = torch.zeros(1, 3, 1, 1) if fill is None else fill
    tops = list(range(0, x.shape[2] - size + 1, stride))
    if tops[-1] != x.shape[2] - size:
        tops.append(x.shape[2] - size)
    out = np.zeros((len(tops), len(tops)))
    with torch.no_grad():
        p0 = float(torch.softmax(model(x), 1)[0, target])
        for i, y in enumerate(tops):
            for j, z in enumerate(tops):
                m = x.clone()
                m[:, :, y:y + size, z:z + size] = fill if fill.shape[2] == 1 else fill[:, :, y:y + size, z:z + size]
                out[i, j] = float(torch.softmax(model(m), 1)[0, target])
    return out, p0


def _backbone(model: nn.Module) -> Backbone:
    return Backbone(spec="torchvision:resnet18", source="torchvision", arch="resnet18", model=model, preprocess=PRE,
                    fingerprint="test", taps={f"layer{i}": f"layer{i}" for i in range(1, 5)},
                    classifier=model.fc, class_names=[f"c{i}" for i in range(1000)])


# --- errors -----------------------------------------------------------------------------------

def test_bad_input_errors_name_the_fix(net, image) -> None:
    def run(**kw):
        args = dict(preprocess=PRE, size=SIZE, stride=STRIDE) | kw
        return maskout_map(args.pop("model", net), args.pop("image", image), args.pop("target", 0), **args)

    with pytest.raises(ValueError, match=r"image \(64x64\) is smaller than the 80x80 mask.*smaller size.*to_uint8"):
        run(size=80)
    with pytest.raises(ValueError, match=r"stride must be a positive number of pixels, got 0; e.g. stride=8"):
        run(stride=0)
    with pytest.raises(ValueError, match="stride must be a positive"):
        run(stride=-4)
    with pytest.raises(ValueError, match="size .* must be a positive int, got 0"):
        run(size=0)
    with pytest.raises(ValueError, match="unknown fill 'grey'; choose one of zero, mean, blur"):
        run(fill="grey")
    with pytest.raises(ValueError, match="fill='mean' needs mean_pixel"):
        run(fill="mean")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, mixed, got .int8."):
        run(precision="int8")
    with pytest.raises(ValueError, match="uint8 tensor .*to_uint8"):
        run(image=image.float())
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        run(batch_size=0)
    with pytest.raises(ValueError, match=r"unknown class 1000: the network has 1000 outputs \(pass an index 0..999\)"):
        run(target=1000)
    with pytest.raises(ValueError, match="class index for a plain module; wrap the network with classifier_for"):
        run(target="camel")
    clf = classifier_for(_backbone(net))
    with pytest.raises(ValueError, match=r"unknown class 'camel'; the classifier knows 1000 classes: c0, c1"):
        run(model=clf, target="camel")


def test_grid_centres_and_full_map(net, image, target) -> None:
    r = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=10, reuse=False)
    assert r.tops_y.tolist() == [0, 10, 20, 30, 40, 48] and r.tops_x.tolist() == r.tops_y.tolist()  # 48 = 64 - 16
    r2 = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=10, cover_border=False, reuse=False)
    assert r2.tops_y.tolist() == [0, 10, 20, 30, 40]  # steps only, no border position
    np.testing.assert_allclose(r2.probs, r.probs[:5, :5], atol=1e-6)
    assert np.allclose(r.centres_y, r.tops_y + 7.5) and r.probs.shape == (6, 6) and r.full.shape == (64, 64)
    # an odd mask puts centres on pixels: there the full map holds each position's value
    r3 = maskout_map(net, image, target, preprocess=PRE, size=17, stride=10, reuse=False)
    cy, cx = r3.centres_y.astype(int), r3.centres_x.astype(int)
    assert np.array_equal(cy, r3.tops_y + 8)
    np.testing.assert_allclose(r3.full[np.ix_(cy, cx)], r3.probs, atol=1e-6)
    assert r.full[0, 0] == pytest.approx(r.probs[0, 0], abs=1e-6)


# --- exactness ----------------------------------------------------------------------------------

@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("channels_last", [None, True])
def test_exact_mode_equals_naive_loop(net, image, target, reuse, channels_last) -> None:
    want, p0 = naive(net, image, target, SIZE, STRIDE)
    assert want.max() - want.min() > 0.05, "test model gives a flat map; it would not catch much"
    before = copy.deepcopy(net.state_dict())
    calls = []
    r = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE, reuse=reuse, batch_size=10,
                    channels_last=channels_last, progress=lambda d, n: calls.append((d, n)))
    assert r.engine.startswith("reuse") if reuse else r.engine.startswith("batched")
    # fp32 keeps the network's NCHW layout unless channels_last is asked for
    assert r.engine.endswith(", channels_last") == bool(channels_last)
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)
    assert r.unmasked == pytest.approx(p0, abs=1e-5)
    assert calls[-1] == (49, 49) and len(calls) == 5
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # a copy ran


@pytest.mark.parametrize("fill", ["mean", "blur"])
def test_fills_agree_across_engines_and_with_naive(net, image, target, fill) -> None:
    kw = dict(preprocess=PRE, size=SIZE, stride=STRIDE, fill=fill, mean_pixel=(120, 110, 100), blur_sigma=3.0)
    a = maskout_map(net, image, target, reuse=True, **kw)
    b = maskout_map(net, image, target, reuse=False, **kw)
    assert a.engine.startswith("reuse")
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-5)
    if fill == "mean":
        want, _ = naive(net, image, target, SIZE, STRIDE, PRE.normalize(torch.tensor([120.0, 110, 100]).view(1, 3, 1, 1)))
        np.testing.assert_allclose(a.probs, want, rtol=0, atol=1e-5)
    else:  # a blurred window differs from a blank one
        assert np.abs(a.probs - maskout_map(net, image, target, **kw | {"fill": "zero"}).probs).max() > 1e-3


def test_strided_mask_at_odd_size_is_exact(net, image, target) -> None:
    """A 13x13 mask with stride 5: windows off the stride grid, border position appended."""
    want, _ = naive(net, image, target, 13, 5)
    r = maskout_map(net, image, target, preprocess=PRE, size=13, stride=5, reuse=True)
    assert r.engine.startswith("reuse") and r.tops_y[-1] == 51
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)


def test_windowed_segments_deep_into_the_network_are_exact(net) -> None:
    """A larger, non-square image: the planner cuts the first layers into several windowed segments (windows
    on each cut's own tensor, clipped at the borders); every position equals the plain batched pass and a
    naive loop."""
    g = torch.Generator().manual_seed(3)
    img = torch.randint(0, 256, (3, 120, 88), dtype=torch.uint8, generator=g)
    img[:, 30:80, 20:60] = torch.tensor([30, 200, 60], dtype=torch.uint8).view(3, 1, 1)
    x = PRE.normalize(img[None])
    with torch.no_grad():
        t = int(net(x).argmax())
    a = maskout_map(net, img, t, preprocess=PRE, size=20, stride=12, reuse=True)
    b = maskout_map(net, img, t, preprocess=PRE, size=20, stride=12, reuse=False)
    segments = int(a.engine.split(" segments")[0].rsplit(" ", 1)[1])
    assert a.engine.startswith("reuse") and segments >= 4, a.engine
    assert list(a.tops_y) == [0, 12, 24, 36, 48, 60, 72, 84, 96, 100] and list(a.tops_x) == [0, 12, 24, 36, 48, 60, 68]
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-6)
    want = np.zeros_like(a.probs)
    with torch.no_grad():
        for i, y in enumerate(a.tops_y):
            for j, z in enumerate(a.tops_x):
                m = x.clone()
                m[:, :, y:y + 20, z:z + 20] = 0.0
                want[i, j] = float(torch.softmax(net(m), 1)[0, t])
    assert want.max() - want.min() > 0.05
    np.testing.assert_allclose(a.probs, want, rtol=0, atol=1e-5)


def test_in_place_add_with_other_readers_stops_the_planner(image) -> None:
    """``a.add_(b)`` changes ``a`` for conv3 too, which the graph's edges do not show: no windows past it."""
    class Aliasing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2)
            self.conv3, self.head = nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.Linear(8, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv1(x)
            a.add_(self.conv2(a))
            return self.head(torch.relu(self.conv3(a)).mean(dim=(2, 3))) * 20

    model = Aliasing().eval()
    with torch.no_grad():
        t = int(model(PRE.normalize(image[None])).argmax())
    want, _ = naive(model, image, t, SIZE, STRIDE)
    assert want.max() - want.min() > 0.01
    r = maskout_map(model, image, t, preprocess=PRE, size=SIZE, stride=STRIDE, reuse=True)
    assert "to node 'conv1'" in r.engine  # conv1 is cut cleanly; the in-place add runs on whole tensors
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)


def test_end_to_end_self_check_catches_a_wrong_paste(net, image, target, monkeypatch) -> None:
    """Unmasked windows cannot see a broken paste; the masked end-to-end check does, and the plain path runs."""
    from featscope.extractors import maskout

    monkeypatch.setattr(maskout, "_paste", lambda *args: None)
    want, _ = naive(net, image, target, SIZE, STRIDE)
    r = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE, reuse=True)
    assert r.engine == "batched (reuse self-check failed)"
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)


def test_approximate_reuse_is_opt_in_and_exact_when_its_margin_does_not_bind(net, image, target) -> None:
    kw = dict(preprocess=PRE, size=SIZE, stride=STRIDE)
    exact = maskout_map(net, image, target, **kw)
    wide = maskout_map(net, image, target, approx_margin=1000, **kw)
    assert "approximate" in wide.engine and "approximate" not in exact.engine
    np.testing.assert_allclose(wide.probs, exact.probs, rtol=0, atol=1e-6)
    tight = maskout_map(net, image, target, approx_margin=0, **kw)  # the mask's footprint only, at every layer
    assert "approximate: changes beyond 0 cells" in tight.engine
    assert 1e-4 < np.abs(tight.probs - exact.probs).max() < 1 and tight.unmasked == exact.unmasked
    for bad, reuse in ((-1, "auto"), ("2", "auto"), (True, "auto"), (2, False)):
        with pytest.raises(ValueError, match="approx_margin"):
            maskout_map(net, image, target, approx_margin=bad, reuse=reuse, **kw)


def test_matches_captum_occlusion(net, image, target) -> None:
    from captum.attr import Occlusion

    def prob(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(x), 1)

    x = PRE.normalize(image[None])
    occ = Occlusion(prob)
    with torch.no_grad():
        # Non-overlapping windows: each pixel's attribution is p0 - p(its window).
        attr = occ.attribute(x, sliding_window_shapes=(3, SIZE, SIZE), strides=(3, SIZE, SIZE), target=target,
                             baselines=0.0)[0, 0]
        # Overlapping windows (stride 8): attribution is p0 minus the mean over the windows covering the pixel.
        attr8 = occ.attribute(x, sliding_window_shapes=(3, SIZE, SIZE), strides=(3, STRIDE, STRIDE), target=target,
                              baselines=0.0, perturbations_per_eval=16)[0, 0].numpy()
    r = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=SIZE)
    np.testing.assert_allclose(r.probs, r.unmasked - attr[::SIZE, ::SIZE].numpy(), atol=1e-5)

    r8 = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE)
    total, count = np.zeros((64, 64)), np.zeros((64, 64))
    for i, y in enumerate(r8.tops_y):
        for j, z in enumerate(r8.tops_x):
            total[y:y + SIZE, z:z + SIZE] += r8.unmasked - r8.probs[i, j]
            count[y:y + SIZE, z:z + SIZE] += 1
    np.testing.assert_allclose(attr8, total / count, atol=1e-5)


def test_bf16_is_close_to_fp32(net, image, target) -> None:
    a = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE)
    b = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE, precision="bf16")
    assert b.engine.startswith("reuse") and b.engine.endswith(", channels_last") and b.precision == "bf16"
    assert "; bf16, fp32 head after node 'layer4_1_relu_1'" in b.engine and "fp32 to node" not in b.engine
    assert np.abs(a.probs - b.probs).max() < 0.05


def _piece_dtypes(engine) -> tuple[dict[int, torch.dtype], list, list]:
    """Hooks recording the output dtype of every piece (by id) of the whole network and of each segment:
    (the record, the staged modules [whole, *segments], the hook handles)."""
    seen: dict[int, torch.dtype] = {}
    staged = [engine.module] + [seg.module for seg in engine.segments or []]
    handles = [p.register_forward_hook(lambda m, i, o: seen.__setitem__(id(m), o.dtype))
               for st in staged for p in st.pieces]
    return seen, staged, handles


def test_mixed_precision_runs_front_and_head_in_fp32_the_rest_in_bf16(net, image, target) -> None:
    """The switch points: fp32 to the end of layer2 (stride 8, the last clean cut there) and for the head
    from the global pool on (its input, layer4's output, is the last bf16 value); bf16 autocast between. Checked on
    the pieces' output dtypes during a real masked batch, for the whole network and for the windowed
    segments; and the map is close to fp32's."""
    from featscope.extractors.maskout import _Engine, _grid, _Precision

    x = PRE.normalize(image[None])
    ys = xs = _grid(64, SIZE, STRIDE, True)
    with torch.inference_mode():
        engine = _Engine.build(net, x, SIZE, ys, xs, "auto", _Precision("cpu", torch.bfloat16, mixed=True),
                               torch.channels_last)
        assert "; mixed: fp32 to node 'layer2_1_relu_1', bf16 from there" in engine.description
        assert "fp32 head after node 'layer4_1_relu_1'" in engine.description and engine.segments is not None
        seen, staged, handles = _piece_dtypes(engine)
        fill = torch.zeros(1, 3, 1, 1)
        out = engine.masked(x, fill, [(0, 0), (16, 24)], SIZE)
        full = engine.full(x)
        for h in handles:
            h.remove()
    assert out.dtype == torch.float32 and full.dtype == torch.float32
    assert [seen[id(p)] for p in staged[0].pieces] == [torch.float32, torch.bfloat16, torch.float32]
    windowed = [[seen[id(p)] for p in st.pieces] for st in staged[1:-1]]
    # every windowed segment ends at or before layer2's end here: all fp32; the last one switches as the whole
    assert windowed and all(d == [torch.float32] for d in windowed), windowed
    assert [seen[id(p)] for p in staged[-1].pieces][-2:] == [torch.bfloat16, torch.float32]
    a = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE)
    m = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=STRIDE, precision="mixed")
    assert m.precision == "mixed" and m.engine.startswith("reuse")
    assert np.abs(a.probs - m.probs).max() < 0.05 and abs(a.unmasked - m.unmasked) < 0.05


def test_mixed_precision_windowed_segments_switch_at_the_cut(net) -> None:
    """With reuse forced deep into the network, the chain of windowed segments is cut where the
    precision switches: segments up to layer2's end run in fp32, the ones after in bf16; still exact
    geometry (the fp32 self-check passes, so reuse is kept)."""
    from featscope.extractors.maskout import _Engine, _grid, _Precision

    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(3))  # layer3 at 10x10: worth windows
    ys = xs = _grid(160, 8, 8, True)
    with torch.inference_mode():
        engine = _Engine.build(net, x, 8, ys, xs, True, _Precision("cpu", torch.bfloat16, mixed=True),
                               torch.channels_last, margin=0)
        assert engine.segments is not None and "layer2_1_relu_1" in engine.cuts, engine.cuts
        assert engine.cuts.index("layer2_1_relu_1") < len(engine.cuts) - 1  # the chain goes on past it
        seen, staged, handles = _piece_dtypes(engine)
        engine.masked(x, torch.zeros(1, 3, 1, 1), [(8, 8), (80, 72)], 8)
        for h in handles:
            h.remove()
    dtypes = [seen[id(p)] for st in staged[1:] for p in st.pieces]
    assert dtypes[0] == torch.float32 and dtypes[-1] == torch.float32 and torch.bfloat16 in dtypes
    switch = dtypes.index(torch.bfloat16)
    assert switch == engine.cuts.index("layer2_1_relu_1") + 1 and all(d == torch.float32 for d in dtypes[:switch])


class _Toy(nn.Module):
    """Four stride-2 convs (strides 2..16), a parameter read mid-way (a get_attr node, as ConvNeXt's layer
    scales), a mean over H, W (no pooling module) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 8, 8, 3, 2, 1) for i in range(4))
        self.scale = nn.Parameter(torch.full((8, 1, 1), 0.5))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x)) * (self.scale if i == 0 else 1.0)
        return self.fc(x.mean((2, 3)))


def _zone_casts(model: nn.Module, px: int, mixed: bool) -> tuple[list[bool], str]:
    from featscope.extractors.maskout import _Engine, _grid, _Precision

    g = _grid(px, 16, 16, True)
    with torch.inference_mode():
        e = _Engine.build(model.eval(), torch.randn(1, 3, px, px), 16, g, g, False,
                          _Precision("cpu", torch.bfloat16, mixed), torch.channels_last)
    return [c is not None for c in e.module.casts], e.description


def test_zones_read_the_trunk_only_parameters_and_a_mean_head() -> None:
    casts, how = _zone_casts(_Toy(), 64, mixed=True)
    # fp32 through the stride-8 conv (convs_2, relu_2, the * 1.0: mul_2), bf16 for the stride-16 one, fp32 mean and fc
    assert casts == [False, True, False] and "mixed: fp32 to node 'mul_2'" in how and "head after node 'mul_3'" in how
    assert _zone_casts(_Toy(), 64, mixed=False)[0] == [True, False]


@pytest.mark.parametrize("arch,px", [("mobilenet_v3_small", 96), ("convnext_tiny", 64)])
def test_zones_of_other_families_have_an_fp32_front_bf16_middle_and_fp32_head(arch, px) -> None:
    """Squeeze-excitation side branches (MobileNetV3) and NHWC permutes and layer-scale parameters
    (ConvNeXt) do not stop the search: three zones, the bf16 one in the middle."""
    import torchvision

    casts, how = _zone_casts(torchvision.models.get_model(arch, weights=None), px, mixed=True)
    assert casts == [False, True, False] and "no clean cut" not in how and "head ran" not in how, how


def test_low_precision_on_a_cpu_without_native_kernels_says_it_is_slower(net, image, target, monkeypatch,
                                                                          caplog) -> None:
    from featscope.extractors import extract

    monkeypatch.setattr(extract, "_WARNED", set())
    warned = []
    for native in (True, False, False):  # the log says it once, the map's engine note every time
        monkeypatch.setattr(extract, "_native_cpu_kernels", lambda dtype, native=native: native)
        caplog.clear()
        r = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=32, precision="mixed", reuse=False)
        slow = "(this CPU has no native bf16 kernels, so bf16 is emulated and slower than fp32 here"
        assert (slow in r.engine) is not native, r.engine
        warned.append(slow[1:] in caplog.text)
        exact = maskout_map(net, image, target, preprocess=PRE, size=SIZE, stride=32, reuse=False)
        assert "native" not in exact.engine
    assert warned == [False, True, False]
    assert extract.slow_low_precision(torch.device("cuda"), torch.bfloat16) is None


class _Branchy(nn.Module):
    """``inner`` behind a data-dependent branch, which FX cannot trace."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) if bool(x.sum() != 12345.0) else self.inner(x) * 2


def test_untraceable_network_in_mixed_precision_runs_fp32(net, image, target) -> None:
    want, _ = naive(net, image, target, SIZE, STRIDE)
    r = maskout_map(_Branchy(net), image, target, preprocess=PRE, size=SIZE, stride=STRIDE, precision="mixed",
                    channels_last=False)
    assert r.engine == "batched (network not traceable: mixed precision ran in fp32)"
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)


def test_probe_head_classifier(net, image) -> None:
    """A backbone without a classifier, read by a probe_linear head: the ClassifierNet path."""
    rng = np.random.default_rng(0)
    coef, icpt = rng.normal(size=(5, 512)) * 0.5, rng.normal(size=5)
    mean, scale = rng.normal(size=512) * 0.1, rng.uniform(0.5, 2.0, size=512)
    bb = _backbone(net)
    bb.classifier, bb.class_names = None, None
    clf = classifier_for(bb, probe=probe_linear(coef, icpt, mean, scale), probe_classes=list("abcde"))
    r = maskout_map(clf, image, "c", preprocess=PRE, size=SIZE, stride=STRIDE)
    assert r.target == 2 and r.engine.startswith("reuse")
    want, p0 = naive(clf.net, image, 2, SIZE, STRIDE)
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)
    assert r.unmasked == pytest.approx(p0, abs=1e-5)
    # low precision folds conv-BN, which needs eval mode: a deep copy of the feature extractor is in train mode
    low = maskout_map(clf, image, "c", preprocess=PRE, size=SIZE, stride=STRIDE, precision="mixed")
    assert low.engine.startswith("reuse") and "; mixed: fp32 to node" in low.engine, low.engine
    assert np.abs(low.probs - want).max() < 0.05


def test_untraceable_network_falls_back_to_batched(net, image, target) -> None:
    want, _ = naive(net, image, target, SIZE, STRIDE)
    r = maskout_map(_Branchy(net), image, target, preprocess=PRE, size=SIZE, stride=STRIDE)
    assert r.engine == "batched (network not traceable)"
    np.testing.assert_allclose(r.probs, want, rtol=0, atol=1e-5)
    low = maskout_map(_Branchy(net), image, target, preprocess=PRE, size=SIZE, stride=32, precision="bf16")
    assert low.engine.startswith("batched (network not traceable, so its head ran in bf16 too)"), low.engine


def test_native_kernel_check_reads_x86_bf16_instructions_only(monkeypatch) -> None:
    from featscope.extractors import extract

    cpu = torch.device("cpu")
    monkeypatch.setattr(extract.platform, "machine", lambda: "aarch64")  # ARM bf16 is not told apart: no note
    assert extract._native_cpu_kernels(torch.bfloat16) is None and extract.slow_low_precision(cpu, torch.bfloat16) is None
    monkeypatch.setattr(extract.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert extract._native_cpu_kernels(torch.bfloat16) is True and extract.slow_low_precision(cpu, torch.bfloat16) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert "bf16 is emulated" in extract.slow_low_precision(cpu, torch.bfloat16)
    assert extract.slow_low_precision(cpu, torch.float32) is None
