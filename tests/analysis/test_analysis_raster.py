"""Server-side rasters of large 2-D maps (datashader): errors first, then pixel counts against a histogram."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featscope.analysis.raster import raster, to_png


@pytest.mark.parametrize("kwargs, match", [
    ({"coords": np.zeros((5, 3))}, r"\(N, 2\)"),
    ({"coords": np.array([[0.0, np.nan]])}, "NaN"),
    ({"coords": np.zeros((5, 2)), "width": 0}, "width and height"),
    ({"coords": np.zeros((5, 2)), "how": "magic"}, "how must be"),
    ({"coords": np.zeros((5, 2)), "labels": ["a"]}, "one category per point"),
    ({"coords": np.zeros((5, 2)), "x_range": (1, 0)}, "low < high"),
])
def test_bad_arguments_say_what_to_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        raster(**kwargs)


def test_counts_match_a_numpy_histogram_and_row_zero_is_the_top():
    rng = np.random.default_rng(0)
    xy = np.vstack([rng.normal(size=(20_000, 2)), [[3.9, 3.9]] * 50])  # a dense dot in the top-right corner
    r = raster(xy, width=40, height=30, x_range=(-4, 4), y_range=(-4, 4))
    inside = np.all(np.abs(xy) < 4, axis=1).sum()  # points outside the ranges are not drawn
    assert r.image.shape == (30, 40, 4) and r.image.dtype == np.uint8 and r.counts.sum() == inside
    hist, _, _ = np.histogram2d(xy[:, 1], xy[:, 0], bins=[30, 40], range=[[-4, 4], [-4, 4]])
    np.testing.assert_array_equal(r.counts, hist[::-1].astype(np.int64))
    assert r.counts[0, -1] >= 50 and r.image[0, -1, 3] > 0  # top-right pixel: drawn, not transparent
    assert r.image[r.counts == 0][:, 3].max() == 0  # empty pixels stay transparent


def test_categories_get_their_own_colours_and_png_round_trips():
    xy = np.array([[0.0, 0.0]] * 10 + [[1.0, 1.0]] * 10)
    r = raster(xy, labels=["a"] * 10 + ["b"] * 10, width=20, height=20, colors=["#ff0000", "#0000ff"],
               background="white")
    blue, red = r.image[r.counts > 0][:, :3]  # (1, 1) is higher: its pixel row comes first
    assert red[0] > 200 and red[2] < 50 and blue[2] > 200 and blue[0] < 50
    png = Image.open(io.BytesIO(to_png(r)))
    assert png.size == (20, 20) and np.array_equal(np.asarray(png), r.image)


def test_hundreds_of_categories_get_distinct_colours_by_default():
    xy = np.stack([np.arange(300.0), np.zeros(300)], axis=1)
    r = raster(xy, labels=[f"c{i:03d}" for i in range(300)], width=300, height=3, x_range=(-0.5, 299.5))
    drawn = r.image[r.counts > 0]
    assert len(drawn) == 300 and (drawn[:, 3] > 0).all() and len({tuple(p) for p in drawn[:256]}) > 200
    assert (r.image[r.counts == 0][:, 3] == 0).all()
    # one point per pixel: pixel c shows category c's colour
    from colorcet import glasbey
    from PIL import ImageColor

    assert tuple(drawn[7, :3]) == ImageColor.getrgb(glasbey[7])[:3]
