"""Drawing primitives for the synthetic dataset: shape masks, fill textures and backgrounds.

Shapes are unit polygons (extent radius 1) so that one ``radius`` and ``angle`` place any class;
masks are rasterised at 4x and box-filtered, which keeps even 8-pixel objects recognisable.
Everything takes a numpy Generator so the caller controls determinism.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "TEXTURES", "background", "random_colour", "shape_mask", "texture"]

_SUPERSAMPLE = 4


def _regular(n: int, radius: float = 1.0, start_deg: float = 90.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(math.radians(start_deg + 360.0 * k / n)),
             -radius * math.sin(math.radians(start_deg + 360.0 * k / n))) for k in range(n)]


def _ellipse(rx: float, ry: float, n: int = 64) -> list[tuple[float, float]]:
    return [(rx * math.cos(2 * math.pi * k / n), ry * math.sin(2 * math.pi * k / n)) for k in range(n)]


def _star(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    outer = _regular(points, 1.0)
    inner_pts = _regular(points, inner, 90.0 + 180.0 / points)
    return [p for pair in zip(outer, inner_pts) for p in pair]


_ARM = 0.3
# class -> (outer polygon, hole polygon or None), both in unit coordinates (y down).
SHAPES: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]] | None]] = {
    "circle": (_ellipse(1.0, 1.0), None),
    "square": ([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], None),
    "triangle": (_regular(3), None),
    "star": (_star(), None),
    "hexagon": (_regular(6, start_deg=0.0), None),
    "cross": ([(-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM), (_ARM, 1),
               (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM)], None),
    "ring": (_ellipse(1.0, 1.0), _ellipse(0.55, 0.55)),
    "diamond": ([(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)], None),
    "ellipse": (_ellipse(1.0, 0.5), None),
    "arrow": ([(-1.0, -0.2), (0.15, -0.2), (0.15, -0.6), (1.0, 0.0), (0.15, 0.6), (0.15, 0.2), (-1.0, 0.2)], None),
}

TEXTURES = ("solid", "stripes", "dots", "checker", "gradient", "noise")


def shape_mask(shape: str, size: int, centre: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Coverage in [0, 1] of a ``size`` x ``size`` canvas by ``shape`` rotated by ``angle`` radians."""
    outer, hole = SHAPES[shape]
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon(_place(outer, centre, radius, angle, s), fill=255)
    if hole is not None:
        draw.polygon(_place(hole, centre, radius, angle, s), fill=0)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _place(points: list[tuple[float, float]], centre: tuple[float, float], radius: float, angle: float,
           scale: int) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    cx, cy = centre
    return [((cx + radius * (x * c - y * s)) * scale, (cy + radius * (x * s + y * c)) * scale) for x, y in points]


def random_colour(rng: np.random.Generator, avoid: np.ndarray | None = None, min_distance: float = 90.0) -> np.ndarray:
    """An RGB colour (float32, 0..255) at least ``min_distance`` from ``avoid`` when possible."""
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    for _ in range(20):
        if avoid is None or float(np.linalg.norm(colour - avoid)) >= min_distance:
            break
        colour = rng.uniform(0, 255, 3).astype(np.float32)
    return colour


def texture(kind: str, rng: np.random.Generator, size: int, centre: tuple[float, float], radius: float,
            c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """A (size, size, 3) float32 fill of ``kind`` in colours ``c1``/``c2``, scaled to the object."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = (xx - centre[0]) * math.cos(theta) + (yy - centre[1]) * math.sin(theta)
    v = -(xx - centre[0]) * math.sin(theta) + (yy - centre[1]) * math.cos(theta)
    period = float(rng.uniform(3.0, max(4.0, radius * 0.8)))
    if kind == "solid":
        t = np.zeros((size, size), np.float32)
    elif kind == "stripes":
        t = (np.mod(u / period, 1.0) < 0.5).astype(np.float32)
    elif kind == "checker":
        t = (np.mod(np.floor(u / period) + np.floor(v / period), 2) == 0).astype(np.float32)
    elif kind == "dots":
        du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
        t = (du * du + dv * dv < (0.3 * period) ** 2).astype(np.float32)
    elif kind == "gradient":
        t = np.clip(u / (2.0 * radius) + 0.5, 0.0, 1.0)
    elif kind == "noise":
        t = _smooth_noise(rng, size, cells=max(2, int(size / period)))
    else:
        raise ValueError(f"unknown texture {kind!r}; use one of {TEXTURES}")
    return c1[None, None, :] * (1.0 - t[..., None]) + c2[None, None, :] * t[..., None]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = Image.fromarray((rng.uniform(0, 255, (cells, cells))).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def background(rng: np.random.Generator, size: int, clutter: bool = True) -> np.ndarray:
    """A (size, size, 3) float32 background. ``clutter``: a smooth colour field, a faint random texture
    and pixel noise, so objects are never on a flat colour; otherwise a gentler colour field and faint
    pixel noise only (the study's pre-training scenes: shape learnable from scratch in minutes)."""
    low, high = (20, 235) if clutter else (40, 215)
    field = rng.uniform(low, high, (3, 3, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(field).resize((size, size), Image.Resampling.BILINEAR),
                      dtype=np.float32)
    if not clutter:
        return np.clip(base + rng.normal(0.0, 4.0, (size, size, 3)).astype(np.float32), 0, 255)
    kind = TEXTURES[int(rng.integers(1, len(TEXTURES)))]
    centre = (size / 2.0, size / 2.0)
    faint = texture(kind, rng, size, centre, size / 2.0, np.zeros(3, np.float32),
                    rng.uniform(-40, 40, 3).astype(np.float32))
    noise = rng.normal(0.0, rng.uniform(3.0, 12.0), (size, size, 3)).astype(np.float32)
    return np.clip(base + faint + noise, 0, 255)
