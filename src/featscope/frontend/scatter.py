"""Projection maps as Plotly figures: WebGL scatter with typed arrays, or a raster with a sampled overlay.

Arrays travel as Plotly's typed-array spec (``{"dtype", "bdata"}``, base64 of the raw bytes) rather than JSON
number lists: 100k points x (x, y, id, colour) is about 2 MB instead of about 8 MB, and the browser copies
them without parsing. Row i of map A and row i of map B are the same image, so a selection's point indices
carry over from one map to the other unchanged.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from featscope.frontend import raster
from featscope.frontend.components.figures import base_layout

# Tableau-20-like categorical palette (distinct at small marker sizes); grey is "no label".
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
AGREEMENT_SCALE = ["#b2182b", "#ef8a62", "#fddbc7", "#d1e5f0", "#67a9cf", "#2166ac"]


def typed(a: np.ndarray) -> dict[str, str]:
    """A numpy array as Plotly's typed-array spec."""
    arr = np.ascontiguousarray(a)
    dtype = {"float32": "f4", "float64": "f8", "int32": "i4", "int16": "i2", "uint8": "u1", "int8": "i1",
             "uint16": "u2", "uint32": "u4"}[arr.dtype.name]
    return {"dtype": dtype, "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def palette(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def discrete_scale(colours: list[str]) -> list[list[Any]]:
    """A step colour scale so integer codes 0..n-1 (cmin -0.5, cmax n-0.5) map to exactly one colour each."""
    n = max(1, len(colours))
    scale: list[list[Any]] = []
    for i, c in enumerate(colours):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale or [[0, "#9ca3af"], [1, "#9ca3af"]]


@dataclass(frozen=True)
class Colouring:
    """How points are coloured: class ``codes`` with ``classes`` names, or ``values`` in [0, 1]."""

    mode: str  # "class" | "agreement"
    codes: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    values: np.ndarray | None = None

    def marker(self, rows: np.ndarray | slice) -> dict[str, Any]:
        if self.mode == "agreement" and self.values is not None:
            return {"color": typed(self.values[rows].astype(np.float32)), "colorscale": _scale(AGREEMENT_SCALE),
                    "cmin": 0, "cmax": 1, "colorbar": {"title": {"text": "k-NN<br>overlap"}, "thickness": 12, "len": 0.6}}
        if self.codes is None or not self.classes:
            return {"color": "#6b7280"}
        codes = self.codes[rows].astype(np.int16)
        colours = palette(len(self.classes)) + ["#9ca3af"]
        codes = np.where(codes < 0, len(colours) - 1, codes).astype(np.int16)
        return {"color": typed(codes), "colorscale": discrete_scale(colours), "cmin": -0.5, "cmax": len(colours) - 0.5}


def _scale(colours: list[str]) -> list[list[Any]]:
    return [[i / (len(colours) - 1), c] for i, c in enumerate(colours)]


def map_figure(coords: np.ndarray, ids: np.ndarray, colouring: Colouring, role: str, colour: str, *,
               marker_size: float | None = None) -> dict:
    """The WebGL map: every point, lasso by default, the other map's selection shown with ``selectedpoints``."""
    n = len(coords)
    size = marker_size or (7 if n <= 2_000 else 5 if n <= 20_000 else 3 if n <= 100_000 else 2)
    marker = {"size": size, "opacity": 0.85 if n > 20_000 else 0.9, **colouring.marker(slice(None))}
    trace = {"type": "scattergl", "mode": "markers", "x": typed(coords[:, 0].astype(np.float32)),
             "y": typed(coords[:, 1].astype(np.float32)), "customdata": typed(ids.astype(np.int32)),
             "marker": marker, "hoverinfo": "none", "name": role,
             "selected": {"marker": {"opacity": 1.0}}, "unselected": {"marker": {"opacity": 0.07}}}
    return {"data": [trace], "layout": _map_layout(role, colour)}


def raster_figure(coords: np.ndarray, ids: np.ndarray, colouring: Colouring, role: str, colour: str,
                  frame: raster.Frame, sample: np.ndarray) -> dict:
    """The raster map: a datashader image of every point plus a WebGL overlay of ``sample`` for hover and lasso."""
    if colouring.mode == "agreement" and colouring.values is not None:
        uri = raster.render_values(coords, colouring.values, AGREEMENT_SCALE, frame)
    else:
        codes = colouring.codes if colouring.codes is not None else np.zeros(len(coords), np.int16)
        uri = raster.render_categories(coords, codes, palette(max(1, len(colouring.classes))), frame)
    overlay = {"type": "scattergl", "mode": "markers", "x": typed(coords[sample, 0].astype(np.float32)),
               "y": typed(coords[sample, 1].astype(np.float32)), "customdata": typed(ids[sample].astype(np.int32)),
               "marker": {"size": 4, "opacity": 0.0, "color": "#111827"}, "hoverinfo": "none", "name": f"{role} sample",
               "selected": {"marker": {"opacity": 0.0}}, "unselected": {"marker": {"opacity": 0.0}}}
    layout = _map_layout(role, colour)
    layout["images"] = [frame.layout_image(uri, "points")]
    layout["xaxis"] = {**layout["xaxis"], "range": [frame.x0, frame.x1]}
    layout["yaxis"] = {**layout["yaxis"], "range": [frame.y0, frame.y1]}
    return {"data": [overlay], "layout": layout}


def _map_layout(role: str, colour: str) -> dict:
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False, "ticks": "", "title": None,
            "linecolor": colour, "mirror": True, "linewidth": 1}
    return base_layout(margin={"l": 8, "r": 8, "t": 8, "b": 8}, dragmode="lasso", hovermode="closest",
                       xaxis=axis, yaxis={**axis, "scaleanchor": "x", "scaleratio": 1}, showlegend=False,
                       uirevision=role, meta={"role": role})


def legend_items(colouring: Colouring) -> list[tuple[str, str]]:
    """(colour, name) per class for the HTML legend under the maps."""
    if colouring.mode != "class" or not colouring.classes:
        return []
    return list(zip(palette(len(colouring.classes)), colouring.classes))
