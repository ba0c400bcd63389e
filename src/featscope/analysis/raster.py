"""Server-side rasters of 2-D maps with many points (the dashboard's projection page above ~100k points).

A WebGL scatter of a million points is too much for a browser; :func:`raster` draws them on the server
with datashader (per-pixel counts, optionally per category, shaded with histogram equalisation so dense
and sparse regions both stay visible) and returns a plain RGBA array; :func:`to_png` encodes it. The
dashboard overlays a sampled WebGL scatter on top for hovering. Pure function: coordinates in, pixels out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOW = ("eq_hist", "log", "cbrt", "linear")
BLEND_MAX = 24  # up to this many categories, a pixel blends their colours; above, it takes one of them


@dataclass(frozen=True, eq=False)
class Raster:
    """``image`` (height, width, 4) uint8 RGBA, row 0 at the top (``y_range[1]``); ``counts`` (height, width)
    points per pixel (row 0 at the top too); ``x_range``/``y_range`` the data extent drawn, for axes and
    for mapping a click back to data coordinates."""

    image: np.ndarray
    counts: np.ndarray
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def raster(coords: np.ndarray, *, labels: Sequence | np.ndarray | None = None, width: int = 800, height: int = 600,
           x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
           how: str = "eq_hist", spread: int = 0, colors: Sequence[str] | None = None,
           background: str | None = None) -> Raster:
    """Draw ``coords`` (N, 2) as a ``width`` x ``height`` image; ``labels`` (N,) colour the points by category.

    Ranges default to the data's extent (padded 2%). ``how``: datashader's shading (``eq_hist`` default).
    ``spread``: grow each pixel by this many pixels (sparse maps stay visible). ``colors``: one colour per
    category (Glasbey's palette otherwise); up to ``BLEND_MAX`` categories a pixel blends the colours of the
    points in it, above that it shows one of them. ``background``: a colour, or None for transparent."""
    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
        raise ValueError(f"coords must be a non-empty (N, 2) array of map coordinates, got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise ValueError("coords contain NaN or inf; drop those points first")
    if not (isinstance(width, int) and isinstance(height, int) and 1 <= width <= 8192 and 1 <= height <= 8192):
        raise ValueError(f"width and height must be integers in 1..8192, got {width} x {height}")
    if how not in HOW:
        raise ValueError(f"how must be one of {', '.join(HOW)}, got {how!r}")
    if not isinstance(spread, int) or not 0 <= spread <= 10:
        raise ValueError(f"spread must be an integer in 0..10, got {spread!r}")
    xr = _range(xy[:, 0], x_range, "x_range")
    yr = _range(xy[:, 1], y_range, "y_range")
    frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})
    canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=xr, y_range=yr)
    if labels is None:
        agg = canvas.points(frame, "x", "y", ds.count())
        img = tf.shade(agg, how=how, cmap=list(colors) if colors else ["#c6dbef", "#08306b"])
        counts = np.asarray(agg.values)
    else:
        lab = np.asarray(labels, dtype=object)
        if lab.shape != (len(xy),):
            raise ValueError(f"labels must hold one category per point ({len(xy)}), got shape {lab.shape}")
        frame["label"] = pd.Categorical(lab.astype(str))
        cats = list(frame["label"].cat.categories)
        if colors is not None and len(colors) < len(cats):
            raise ValueError(f"colors has {len(colors)} entries for {len(cats)} categories")
        if colors is None:  # Glasbey's 256 distinguishable colours (colorcet, a datashader dependency), cycled
            from colorcet import glasbey

            colors = [glasbey[i % len(glasbey)] for i in range(len(cats))]
        if len(cats) <= BLEND_MAX:  # blend the categories present in each pixel
            agg = canvas.points(frame, "x", "y", ds.count_cat("label"))
            img = tf.shade(agg, how=how, color_key=dict(zip(cats, colors)))
            counts = np.asarray(agg.values).sum(axis=2)
        else:
            return _by_category(canvas, frame, colors, how, spread, background, xr, yr, width, height)
    if spread:
        img = tf.spread(img, px=spread)
    if background:
        img = tf.set_background(img, background)
    rgba = np.asarray(img.data, dtype=np.uint32).view(np.uint8).reshape(height, width, 4)
    return Raster(np.ascontiguousarray(rgba[::-1]), np.ascontiguousarray(counts[::-1].astype(np.int64)), xr, yr)


def _by_category(canvas, frame, colors, how: str, spread: int, background: str | None, xr, yr, width: int,
                 height: int) -> Raster:
    """Many categories: each pixel takes one category's colour (the highest category code in it; blending
    hundreds of colours gives brown, and a per-category count array is height x width x categories large),
    its opacity shaded from the pixel's count like a single-colour raster."""
    import datashader as ds
    import datashader.transfer_functions as tf
    from PIL import ImageColor

    frame["code"] = frame["label"].cat.codes.astype(np.float64)
    agg = canvas.points(frame, "x", "y", ds.summary(count=ds.count(), code=ds.max("code")))
    counts = np.asarray(agg["count"].values).astype(np.int64)
    alpha = tf.shade(agg["count"], how=how, cmap=["black", "black"])
    if spread:
        alpha = tf.spread(alpha, px=spread)
    a = np.asarray(alpha.data, dtype=np.uint32).view(np.uint8).reshape(height, width, 4)[..., 3]
    code = np.asarray(agg["code"].values)
    if spread:  # spread pixels take the code of a drawn neighbour
        code = np.nan_to_num(code, nan=-1)
        for _ in range(spread):
            code = np.maximum.reduce([code, np.roll(code, 1, 0), np.roll(code, -1, 0), np.roll(code, 1, 1),
                                      np.roll(code, -1, 1)])
        code = np.where(code < 0, np.nan, code)
    palette = np.array([ImageColor.getrgb(c)[:3] for c in colors], dtype=np.uint8)
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    drawn = np.isfinite(code) & (a > 0)
    rgba[drawn, :3] = palette[code[drawn].astype(np.int64)]
    rgba[..., 3] = np.where(drawn, a, 0)
    if background:
        bg = np.array(ImageColor.getrgb(background)[:3], dtype=np.float64)
        w = rgba[..., 3:4] / 255.0
        rgba[..., :3] = (rgba[..., :3] * w + bg * (1 - w)).astype(np.uint8)
        rgba[..., 3] = 255
    return Raster(np.ascontiguousarray(rgba[::-1]), np.ascontiguousarray(counts[::-1]), xr, yr)


def _range(values: np.ndarray, given: tuple[float, float] | None, name: str) -> tuple[float, float]:
    if given is not None:
        lo, hi = float(given[0]), float(given[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"{name} must be (low, high) with low < high, got {given}")
        return lo, hi
    lo, hi = float(values.min()), float(values.max())
    pad = 0.02 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def to_png(r: Raster) -> bytes:
    """The raster's image as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(r.image, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()
