"""Overlays, difference panels, side-by-side figures and the save helpers: errors first, then pixels
against hand blends, and an activation map drawn on a non-square original."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featscope.extractors import overlay as ov
from featscope.extractors.overlay import (colormap, difference, difference_panel, overlay, save_arrays, save_png,
                                          side_by_side)


def picture(w: int = 50, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def ramp(w: int = 50, h: int = 30) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


# --- errors ---------------------------------------------------------------------------------------

def test_overlay_errors():
    img = picture()
    with pytest.raises(ValueError, match=r"shape \(50, 30\) but the image is 50x30.*\.heat\(\)"):
        overlay(img, np.zeros((50, 30)))
    with pytest.raises(ValueError, match=r"heat must lie in \[0, 1\]; normalise it first"):
        overlay(img, ramp() * 2)
    with pytest.raises(ValueError, match="alpha and dim must lie in"):
        overlay(img, ramp(), alpha=1.5)
    with pytest.raises(ValueError, match="unknown colour map 'nope'.*viridis"):
        overlay(img, ramp(), cmap="nope")


def test_other_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="at least one image"):
        side_by_side([])
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        side_by_side([picture(), picture()], ["a"])
    with pytest.raises(ValueError, match="same shape"):
        difference(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="use a .png name"):
        save_png(picture(), tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="use a .npz name for several"):
        save_arrays(tmp_path / "x.npy", {"a": np.zeros(2)})
    with pytest.raises(ValueError, match=r"\.npz \(several\) or \.npy \(one\)"):
        save_arrays(tmp_path / "x.txt", np.zeros(2))


def test_builtin_colour_maps_without_matplotlib(monkeypatch: pytest.MonkeyPatch):
    ov._lut.cache_clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    try:
        jet = colormap(np.array([0.0, 0.5, 1.0]), "jet")
        np.testing.assert_allclose(jet, [[0, 0, 128], [128, 255, 128], [128, 0, 0]], atol=2)  # dark blue, green, dark red
        with pytest.raises(ValueError, match="built-in maps are jet, gray, bwr, RdBu_r"):
            colormap(np.zeros(1), "viridis")
    finally:
        ov._lut.cache_clear()


# --- overlays -------------------------------------------------------------------------------------

def test_overlay_blends_inside_and_dims_or_keeps_outside():
    img = picture()
    pix = np.asarray(img, dtype=np.float64)
    heat = ramp()
    heat[:, :10] = np.nan  # no heat in the first 10 columns
    out = np.asarray(overlay(img, heat, cmap="viridis", alpha=0.25, dim=0.0), dtype=np.float64)
    assert out.shape == pix.shape
    np.testing.assert_array_equal(out[:, :10], pix[:, :10])
    expected = 0.75 * pix[:, 10:] + 0.25 * colormap(heat[:, 10:], "viridis")
    np.testing.assert_allclose(out[:, 10:], np.rint(expected), atol=0.5)
    dimmed = np.asarray(overlay(img, heat, alpha=0.25), dtype=np.float64)  # default dim=0.5
    np.testing.assert_allclose(dimmed[:, :10], np.rint(pix[:, :10] * 0.5), atol=0.5)
    full = np.asarray(overlay(img, np.nan_to_num(heat), cmap="jet", alpha=1.0))
    np.testing.assert_array_equal(full, colormap(np.nan_to_num(heat), "jet"))


def test_colormap_uses_matplotlib():
    import matplotlib

    v = np.array([0.0, 0.3, 1.0])
    expected = np.rint(matplotlib.colormaps["viridis"](np.rint(v * 255).astype(int))[:, :3] * 255)
    np.testing.assert_array_equal(colormap(v, "viridis"), expected)


def test_activation_map_drawn_on_a_non_square_original(tiny):
    from featscope.extractors.activations import activation_map
    from featscope.extractors.types import Backbone, Preprocess

    m = tiny.make_resnet("resnet18", seed=2)
    b = Backbone(spec="t:r18", source="t", arch="resnet18", model=m, preprocess=Preprocess(resize=72, crop=64),
                 fingerprint="t", taps={f"layer{i}": f"layer{i}" for i in range(1, 5)}, aliases={"conv5": "layer4"})
    img = picture(100, 60)
    a = activation_map(b, img)
    out = overlay(a.image, a.heat(), alpha=0.5, dim=0.0)
    assert out.size == (100, 60)
    pix, res = np.asarray(img), np.asarray(out)
    outside = np.isnan(a.heat())
    assert outside[:, :23].all() and outside[:, 77:].all() and outside[:3].all() and outside[57:].all()
    np.testing.assert_array_equal(res[outside], pix[outside])
    assert not np.array_equal(res[~outside], pix[~outside])


# --- comparisons and figures -----------------------------------------------------------------------

def test_difference_is_signed_and_keeps_nan():
    a, b = ramp(), ramp()[:, ::-1].copy()
    a[0, 0] = np.nan
    d = difference(a, b)
    assert np.isnan(d[0, 0]) and d[5, -1] == pytest.approx(1.0) and d[5, 0] == pytest.approx(-1.0)


def test_difference_panel_colours():
    a = np.zeros((30, 50), np.float32)
    b = np.zeros((30, 50), np.float32)
    a[:, :10], b[:, 40:] = 1.0, 1.0
    a[0, 20] = np.nan
    panel = np.asarray(difference_panel(a, b), dtype=int)
    assert panel.shape == (30, 50, 3)
    red, blue, zero = panel[5, 0], panel[5, 45], panel[5, 25]
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50  # RdBu_r: a hotter red, b hotter blue
    np.testing.assert_array_equal(zero, colormap(np.array(0.5), "RdBu_r"))
    np.testing.assert_array_equal(panel[0, 20], [128, 128, 128])
    on_image = difference_panel(a, b, image=picture())
    assert on_image.size == (50, 30)


def test_side_by_side_layout():
    fig = side_by_side([picture(50, 30), picture(20, 60)], ["classification", "detection"], pad=4)
    # panels scaled to height 60: 100 and 20 wide, three pads between and around
    assert fig.width == 100 + 20 + 3 * 4 and fig.height > 60 + 2 * 4
    plain = side_by_side([picture(50, 30)], height=15, pad=0)
    assert plain.size == (25, 15)


def test_save_helpers_round_trip(tmp_path: Path):
    img = picture()
    p = save_png(img, tmp_path / "out" / "map.png")
    with Image.open(p) as back:
        np.testing.assert_array_equal(np.asarray(back), np.asarray(img))
    arrays = {"heat": ramp(), "channels": np.arange(3)}
    with np.load(save_arrays(tmp_path / "maps.npz", arrays)) as z:
        np.testing.assert_array_equal(z["heat"], arrays["heat"])
        np.testing.assert_array_equal(z["channels"], np.arange(3))
    np.testing.assert_array_equal(np.load(save_arrays(tmp_path / "heat.npy", ramp())), ramp())


# --- scales and colour bars ---------------------------------------------------------------------

def test_rescale_spreads_a_narrow_map_over_the_colour_map():
    """A probability map spanning 0.008..0.012 is nearly one colour on 0..1 and every colour on its own range."""
    p = 0.008 + 0.004 * ramp()
    on_01 = colormap(p, "jet")
    assert np.abs(on_01.astype(int) - on_01[0, 0].astype(int)).max() <= 4  # of 255: one colour
    own = ov.rescale(p, 0.008, 0.012)
    np.testing.assert_allclose(own, ramp(), atol=1e-6)
    assert (colormap(own, "jet")[0, 0] == colormap([0.0], "jet")[0]).all()
    assert (colormap(own, "jet")[0, -1] == colormap([1.0], "jet")[0]).all()
    with_nan = p.copy()
    with_nan[0, 0] = np.nan
    assert np.isnan(ov.rescale(with_nan, 0.008, 0.012)[0, 0])
    assert (ov.rescale(p, 0.5, 0.5) == 0).all() and (ov.rescale(p, 0.0, 0.001) == 1).all()


def test_tick_labels_tell_close_values_apart():
    assert ov.tick_labels(0.008, 0.012) == ["0.008", "0.01", "0.012"]
    assert ov.tick_labels(0.0, 1.0) == ["0", "0.5", "1"]
    assert ov.tick_labels(0.30001, 0.30003) == ["0.30001", "0.30002", "0.30003"]
    assert ov.tick_labels(0.2, 0.2) == ["0.2", "0.2", "0.2"]


def test_colorbar_runs_from_low_to_high_under_the_image():
    img = picture(60, 40)
    out = ov.with_colorbar(img, 0.008, 0.012, cmap="jet", label="p(camel)", min_width=120)
    arr = np.asarray(out)
    assert out.size[0] == 120 and out.size[1] > 40 + 12
    assert np.array_equal(arr[:40, :60], np.asarray(img)) and (arr[:40, 60:] == 255).all()
    bar = np.asarray(ov.colorbar(0.008, 0.012, cmap="jet", width=120, label="p(camel)"))
    row = next(y for y in range(bar.shape[0]) if (bar[y, 6:114] != 255).any(axis=-1).all())  # the colour strip
    assert (bar[row, 6] == colormap([0.0], "jet")[0]).all() and (bar[row, 113] == colormap([1.0], "jet")[0]).all()
    assert np.array_equal(arr[40:], bar)


def test_difference_panel_limit_stretches_small_differences():
    a, b = np.full((4, 4), 0.010, np.float32), np.full((4, 4), 0.008, np.float32)
    faint, full = difference_panel(a, b), difference_panel(a, b, limit=0.002)
    assert (np.asarray(full)[0, 0] == colormap([1.0], "RdBu_r")[0]).all()
    assert np.abs(np.asarray(faint)[0, 0].astype(int) - colormap([0.5], "RdBu_r")[0].astype(int)).max() <= 2
    with pytest.raises(ValueError, match="limit must be positive"):
        difference_panel(a, b, limit=0)
