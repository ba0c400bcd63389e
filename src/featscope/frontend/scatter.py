"""Projection maps as Plotly figures: WebGL scatter with typed arrays, or a raster with a sampled overlay.

Arrays travel as Plotly's typed-array spec (``{"dtype", "bdata"}``, base64 of the raw bytes) rather than JSON
number lists: 100k points x (x, y, id, colour) is about 2 MB instead of about 8 MB, and the browser copies
them without parsing. Row i of map A and row i of map B are the same image, so a selection's point indices
carry over from one map to the other unchanged.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

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


MAX_GROUPS = len(PALETTE)
NO_LABEL = "#9ca3af"


@dataclass(frozen=True)
class Colouring:
    """How points are coloured: class ``codes`` with ``classes`` names, or ``values`` in [0, 1]."""

    mode: str  # "class" | "agreement"
    codes: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    values: np.ndarray | None = None

    def groups(self, n: int) -> list[tuple[str, str, np.ndarray]]:
        """(name, colour, rows) of each trace: every row in exactly one, rows ascending within it.

        One uniformly coloured trace per class (the 19 largest, then "other classes") or per agreement
        level, rather than one trace with a colour per point: Plotly restyles a selection of a
        per-point-coloured WebGL trace about ten times slower (1.5 s against 0.17 s at 100k points)."""
        if self.mode == "agreement" and self.values is not None:
            return self._agreement_groups(n)
        if self.codes is None or not self.classes:
            return [("images", "#4e79a7", np.arange(n))]
        codes = np.asarray(self.codes[:n], dtype=np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=len(self.classes))
        ranked = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        own = sorted(ranked[:MAX_GROUPS - 1])
        colours = palette(len(self.classes))
        groups = [(self.classes[c], colours[c], np.flatnonzero(codes == c)) for c in own]
        rest = np.flatnonzero((codes >= 0) & ~np.isin(codes, own))
        if len(rest):
            groups.append((f"{len(ranked) - len(own)} other classes", "#7f7f7f", rest))
        unlabelled = np.flatnonzero(codes < 0)
        if len(unlabelled):
            groups.append(("no label", NO_LABEL, unlabelled))
        return groups

    def _agreement_groups(self, n: int) -> list[tuple[str, str, np.ndarray]]:
        values = np.asarray(self.values[:n], dtype=np.float64)
        levels = np.unique(np.round(values[np.isfinite(values)], 4))
        if len(levels) > 11:  # a k above 10: 11 equal bins
            edges = np.linspace(0, 1, 12)
            bins = np.clip(np.digitize(values, edges[1:-1]), 0, 10)
            names = [f"overlap {edges[i]:.2f}–{edges[i + 1]:.2f}" for i in range(11)]
            centres = (edges[:-1] + edges[1:]) / 2
        else:
            bins = np.searchsorted(levels, np.round(values, 4))
            names, centres = [f"overlap {v:.2f}" for v in levels], levels
        groups = [(names[i], _interpolate(AGREEMENT_SCALE, float(centres[i])), np.flatnonzero(bins == i))
                  for i in range(len(names))]
        missing = np.flatnonzero(~np.isfinite(values))
        if len(missing):
            groups.append(("no value", NO_LABEL, missing))
        return [g for g in groups if len(g[2])]


def _interpolate(colours: list[str], t: float) -> str:
    """The colour at ``t`` in [0, 1] along ``colours`` (hex), linearly in RGB."""
    pos = min(max(t, 0.0), 1.0) * (len(colours) - 1)
    i = min(int(pos), len(colours) - 2)
    f = pos - i
    a, b = (np.array([int(c[k:k + 2], 16) for k in (1, 3, 5)], dtype=float) for c in colours[i:i + 2])
    r, g, bl = np.rint(a + (b - a) * f).astype(int)
    return f"#{r:02x}{g:02x}{bl:02x}"


def map_figure(coords: np.ndarray, ids: np.ndarray, colouring: Colouring, role: str, colour: str, *,
               marker_size: float | None = None) -> dict:
    """The WebGL map: every point in one trace per colour group, lasso by default; maps A and B of one
    projection have the same groups in the same order, so (trace, point) is the same image in both."""
    n = len(coords)
    size = marker_size or (7 if n <= 2_000 else 5 if n <= 20_000 else 3 if n <= 100_000 else 2)
    opacity = 0.85 if n > 20_000 else 0.9
    traces = []
    for name, col, rows in colouring.groups(n):
        traces.append({"type": "scattergl", "mode": "markers", "name": name,
                       "x": typed(coords[rows, 0].astype(np.float32)), "y": typed(coords[rows, 1].astype(np.float32)),
                       "customdata": typed(ids[rows].astype(np.int32)), "hoverinfo": "none",
                       "marker": {"size": size, "color": col, "opacity": opacity},
                       "selected": {"marker": {"opacity": 1.0}}, "unselected": {"marker": {"opacity": 0.06}}})
    return {"data": traces, "layout": _map_layout(role, colour)}


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
    # images[1] holds the selection (drawn on the server over every point); empty until something is selected
    layout["images"] = [frame.layout_image(uri, "points"), {**frame.layout_image(raster.NOTHING, "selection"),
                                                             "layer": "above"}]
    layout["xaxis"] = {**layout["xaxis"], "range": [frame.x0, frame.x1]}
    layout["yaxis"] = {**layout["yaxis"], "range": [frame.y0, frame.y1]}
    return {"data": [overlay], "layout": layout}


def _map_layout(role: str, colour: str) -> dict:
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False, "ticks": "", "title": None,
            "linecolor": colour, "mirror": True, "linewidth": 1}
    return base_layout(margin={"l": 8, "r": 8, "t": 8, "b": 8}, dragmode="lasso", hovermode="closest",
                       xaxis=axis, yaxis={**axis, "scaleanchor": "x", "scaleratio": 1}, showlegend=False,
                       uirevision=role, meta={"role": role})


def legend_items(colouring: Colouring, n: int) -> list[tuple[str, str]]:
    """(colour, name) per colour group, for the HTML legend under the maps."""
    groups = colouring.groups(n)
    return [] if len(groups) == 1 and groups[0][0] == "images" else [(col, name) for name, col, _ in groups]
