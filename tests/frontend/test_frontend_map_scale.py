"""Map figures: heatmaps on the fixed 0..1 scale, mask-out maps on their own range (relative), which the colour
bar states; a difference map symmetric around 0."""

from __future__ import annotations

import numpy as np

from featscope.frontend.components.maps import map_figure


def _trace(heat, **kw):
    return map_figure("data:,", (8, 8), heat, **kw)["data"][0]


def test_fixed_scale_by_default():
    t = _trace(np.full((8, 8), 0.5))
    assert (t["zmin"], t["zmax"]) == (0.0, 1.0)
    t = _trace(np.full((8, 8), 0.01), diverging=True)
    assert (t["zmin"], t["zmax"], t["zmid"]) == (-1.0, 1.0, 0)


def test_relative_scale_spans_the_maps_own_values():
    heat = np.linspace(0.146, 0.153, 64).reshape(8, 8)
    heat[0, 0] = np.nan  # no map there: ignored
    t = _trace(heat, relative=True)
    assert np.isclose(t["zmin"], np.nanmin(heat)) and np.isclose(t["zmax"], np.nanmax(heat))
    diff = np.linspace(-0.002, 0.005, 64).reshape(8, 8)
    t = _trace(diff, relative=True, diverging=True)
    assert np.isclose(t["zmax"], 0.005) and np.isclose(t["zmin"], -0.005) and t["zmid"] == 0


def test_a_flat_map_still_gets_a_range():
    t = _trace(np.full((8, 8), 0.2), relative=True)
    assert t["zmax"] > t["zmin"] == 0.2
    t = _trace(np.zeros((8, 8)), relative=True, diverging=True)
    assert t["zmax"] > 0 > t["zmin"]
