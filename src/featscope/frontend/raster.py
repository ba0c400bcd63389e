"""Large projections: every point drawn on the server as an image (datashader), selections applied to all points.

Above :data:`RASTER_ABOVE` points a browser would have to parse and draw tens of megabytes of scatter data,
so the map is a datashader raster placed as a Plotly layout image, with a WebGL overlay of a fixed random
sample for hover and lasso. A lasso or box on the overlay is applied here to *all* points (the sample only
draws it) and returned as a highlight raster for both maps.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

RASTER_ABOVE = 100_000
SAMPLE = 20_000
WIDTH, HEIGHT = 900, 720
HIGHLIGHT = "#111827"
# A 1 x 1 transparent PNG: the selection image's source while nothing is selected.
NOTHING = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg=="


@dataclass(frozen=True)
class Frame:
    """The data range a raster covers (padded extent of the points)."""

    x0: float
    x1: float
    y0: float
    y1: float

    def __post_init__(self) -> None:  # always Python floats: datashader's kernels are compiled per argument type
        for name in ("x0", "x1", "y0", "y1"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def of(cls, coords: np.ndarray, pad: float = 0.03) -> "Frame":
        # by column of a transposed copy: numpy reduces an (N, 2) array along axis 0 two values at a time,
        # 60 ms per call at a million points against 1 ms for the copy and two contiguous reductions
        cols = np.ascontiguousarray(np.asarray(coords)[:, :2].T)
        lo, hi = cols.min(axis=1).astype(float), cols.max(axis=1).astype(float)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # NaN rows: the slower NaN-aware pass
            lo, hi = np.nanmin(cols, axis=1).astype(float), np.nanmax(cols, axis=1).astype(float)
        span = np.maximum(hi - lo, 1e-9)
        lo, hi = lo - pad * span, hi + pad * span
        return cls(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))

    def layout_image(self, png_uri: str, name: str) -> dict:
        return {"source": png_uri, "xref": "x", "yref": "y", "x": self.x0, "y": self.y1, "sizex": self.x1 - self.x0,
                "sizey": self.y1 - self.y0, "sizing": "stretch", "layer": "below", "name": name}


def warm_up(class_counts: Iterable[int] = (1,)) -> None:
    """Import what a large projection page needs and compile datashader's kernels (numba compiles on first use:
    together several seconds), for maps of ``class_counts`` classes. The server runs it in the background at
    start-up (:func:`featscope.frontend.app._warm_rasters`), with the class counts of the data sets it has.

    numba compiles a kernel per argument types and datashader builds one per categorical schema, so the
    warm-up draws with float bounds (as :meth:`Frame.of` makes them) and with each data set's number of
    classes: a warm-up of one class and int bounds compiled kernels no page used, and each page's first map
    then compiled its own (0.5-0.9 s at a million points)."""
    import featscope.analysis.projection  # noqa: F401 - faiss, scipy, scikit-learn

    frame, points = Frame(-1.0, 1.0, -1.0, 1.0), np.zeros((8, 2), np.float32)
    for k in sorted({max(1, int(k)) for k in class_counts}):
        render_categories(points, np.zeros(8, np.int16), ["#000000"] * k, frame)
    render_values(points, np.zeros(8, np.float32), ["#000000", "#ffffff"], frame)
    render_mask(points, np.ones(8, bool), frame)


def _canvas(frame: Frame):
    import datashader as ds

    return ds.Canvas(plot_width=WIDTH, plot_height=HEIGHT, x_range=(frame.x0, frame.x1), y_range=(frame.y0, frame.y1))


def _frame_df(coords: np.ndarray, **columns):
    import pandas as pd

    return pd.DataFrame({"x": coords[:, 0].astype(np.float32, copy=False), "y": coords[:, 1].astype(np.float32, copy=False),
                         **columns})


def render_categories(coords: np.ndarray, codes: np.ndarray, palette: list[str], frame: Frame) -> str:
    """Points coloured by class (``codes`` index ``palette``; -1 is grey), as a PNG data URI."""
    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    n_cat = len(palette) + 1
    cats = pd.Categorical.from_codes(np.where(codes < 0, n_cat - 1, codes).astype(np.int16), categories=range(n_cat))
    agg = _canvas(frame).points(_frame_df(coords, c=cats), "x", "y", agg=ds.count_cat("c"))
    img = tf.shade(agg, color_key=[*palette, "#9ca3af"], how="eq_hist", min_alpha=60)
    return _png_uri(img.to_pil())


def render_values(coords: np.ndarray, values: np.ndarray, colormap: list[str], frame: Frame) -> str:
    """Points coloured by the mean of ``values`` per pixel (e.g. neighbourhood agreement), as a PNG data URI."""
    import datashader as ds
    import datashader.transfer_functions as tf

    agg = _canvas(frame).points(_frame_df(coords, v=values.astype(np.float32)), "x", "y", agg=ds.mean("v"))
    return _png_uri(tf.shade(agg, cmap=colormap, how="linear", span=[0.0, 1.0], min_alpha=60).to_pil())


def render_mask(coords: np.ndarray, mask: np.ndarray, frame: Frame, colour: str = HIGHLIGHT) -> str:
    """The selected points alone, in one strong colour, on a transparent image (drawn over the base map)."""
    import datashader as ds
    import datashader.transfer_functions as tf

    agg = _canvas(frame).points(_frame_df(coords[mask]), "x", "y", agg=ds.count())
    return _png_uri(tf.spread(tf.shade(agg, cmap=[colour, colour], how="linear", min_alpha=255), px=1).to_pil())


def _png_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # encoding time matters more than a few hundred kB
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def sample_rows(n: int, k: int | None = None, seed: int = 0) -> np.ndarray:
    """A fixed random sample of ``k`` (default :data:`SAMPLE`) row indices, sorted, the same on every request."""
    k = SAMPLE if k is None else k
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def selection_mask(coords: np.ndarray, selected: dict | None) -> np.ndarray | None:
    """Which of all ``coords`` fall inside a Plotly selection (``lassoPoints`` polygon or box ``range``)."""
    if not selected:
        return None
    if selected.get("range"):
        (x0, x1), (y0, y1) = sorted(selected["range"]["x"]), sorted(selected["range"]["y"])
        return (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    lasso = selected.get("lassoPoints")
    if lasso and len(lasso.get("x", [])) >= 3:
        return points_in_polygon(coords, np.column_stack([lasso["x"], lasso["y"]]).astype(np.float64))
    return None


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the points inside the polygon's bounding box.

    Written here because the dependencies have no point-in-polygon test (matplotlib's ``Path`` would be a
    plotting library pulled in for one call); a lasso has a few hundred vertices, so a loop over edges
    with numpy over points is fast (1M points, 300 edges: well under a second after the box cut)."""
    lo, hi = polygon.min(axis=0), polygon.max(axis=0)
    inside_box = np.flatnonzero((points[:, 0] >= lo[0]) & (points[:, 0] <= hi[0]) &
                                (points[:, 1] >= lo[1]) & (points[:, 1] <= hi[1]))
    x, y = points[inside_box, 0].astype(np.float64), points[inside_box, 1].astype(np.float64)
    inside = np.zeros(len(inside_box), dtype=bool)
    xj, yj = polygon[-1]
    for xi, yi in polygon:
        crosses = (yi > y) != (yj > y)
        if crosses.any():
            at = (xj - xi) * (y[crosses] - yi) / (yj - yi) + xi
            inside[np.flatnonzero(crosses)[x[crosses] < at]] ^= True
        xj, yj = xi, yi
    out = np.zeros(len(points), dtype=bool)
    out[inside_box[inside]] = True
    return out
