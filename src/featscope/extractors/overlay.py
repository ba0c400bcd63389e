"""Draw heat maps on images, compare two backbones' maps, and save the results.

Pure image work on numpy arrays and PIL images: nothing here runs a network. Heat maps are (H, W)
floats in [0, 1] in original-image coordinates, NaN where there is no heat (outside the network's
crop, see :class:`featscope.extractors.activations.CropGeometry`). Colour maps come from matplotlib
when it is installed, else from a small built-in table (``jet``, ``gray``, ``RdBu_r``, ``bwr``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["colorbar", "colormap", "difference", "difference_panel", "overlay", "rescale", "save_arrays", "save_png",
           "side_by_side", "tick_labels", "with_colorbar"]


def colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(…) floats in [0, 1] -> (…, 3) uint8 RGB; NaN -> 0 (callers mask it)."""
    lut = _lut(cmap)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    return lut[np.clip(np.rint(v * 255), 0, 255).astype(np.int64)]


def overlay(image: Image.Image, heat: np.ndarray, *, cmap: str = "jet", alpha: float = 0.5,
            dim: float = 0.5) -> Image.Image:
    """``image`` blended with ``heat`` coloured by ``cmap``: ``(1 - alpha) * image + alpha * colour``.

    ``heat`` is (H, W) in [0, 1] for an image of size (W, H); NaN marks pixels without heat, which
    keep their colour scaled by ``1 - dim`` (``dim=0`` leaves them unchanged)."""
    img = np.asarray(image.convert("RGB"), dtype=np.float64)
    heat = _check_heat(heat, image.size, "heat")
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= dim <= 1.0:
        raise ValueError(f"alpha and dim must lie in [0, 1], got alpha={alpha}, dim={dim}")
    if np.nanmin(heat, initial=0.0) < -1e-6 or np.nanmax(heat, initial=0.0) > 1 + 1e-6:
        raise ValueError("heat must lie in [0, 1]; normalise it first (the map's .heat() is normalised)")
    inside = ~np.isnan(heat)
    out = img * (1.0 - dim)
    blended = (1.0 - alpha) * img + alpha * colormap(heat, cmap)
    out[inside] = blended[inside]
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def difference(heat_a: np.ndarray, heat_b: np.ndarray) -> np.ndarray:
    """Signed difference ``heat_a - heat_b`` in [-1, 1]; NaN where either map has no heat."""
    a, b = np.asarray(heat_a, dtype=np.float32), np.asarray(heat_b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"maps to compare must be 2-D and the same shape, got {a.shape} and {b.shape}; "
                         f"compare maps of the same image (their .heat())")
    return a - b


def difference_panel(heat_a: np.ndarray, heat_b: np.ndarray, *, image: Image.Image | None = None,
                     cmap: str = "RdBu_r", alpha: float = 0.7, limit: float = 1.0) -> Image.Image:
    """The signed difference coloured by a diverging map (0 at its centre: with ``RdBu_r`` red where
    ``heat_a`` is hotter, blue where ``heat_b`` is), blended onto ``image`` when given; no heat is grey.
    ``limit``: the difference drawn at the map's ends (smaller values stretch small differences)."""
    if not limit > 0:
        raise ValueError(f"limit must be positive, got {limit}")
    d = difference(heat_a, heat_b)
    colour = colormap(np.clip((d / limit + 1.0) / 2.0, 0.0, 1.0), cmap).astype(np.float64)
    nan = np.isnan(d)
    if image is None:
        colour[nan] = 128
        return Image.fromarray(colour.astype(np.uint8))
    _check_heat(d, image.size, "difference")
    img = np.asarray(image.convert("RGB"), dtype=np.float64)
    out = (1.0 - alpha) * img + alpha * colour
    out[nan] = img[nan] * 0.5
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def rescale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly from [lo, hi] to [0, 1] and clipped (NaN kept); a range with no width maps to 0."""
    v = np.asarray(values, dtype=np.float64)
    span = float(hi) - float(lo)
    if not np.isfinite(span) or span <= 0:
        return np.where(np.isnan(v), np.nan, 0.0)
    return np.clip((v - lo) / span, 0.0, 1.0)


def tick_labels(lo: float, hi: float, n: int = 3) -> list[str]:
    """``n`` evenly spaced values from ``lo`` to ``hi`` as short strings with enough digits to tell them apart
    (0.008, 0.01, 0.012 rather than 0.01, 0.01, 0.01)."""
    values = np.linspace(float(lo), float(hi), n)
    for digits in range(2, 8):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels) or lo == hi:
            return labels
    return labels


def colorbar(lo: float, hi: float, *, cmap: str = "jet", width: int = 256, label: str = "",
             pad: int = 6, bar_height: int = 12) -> Image.Image:
    """A horizontal colour bar: ``label`` above, the colours of ``cmap`` from ``lo`` (left) to ``hi``
    (right), and tick values below at its ends and centre."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = probe.textbbox((0, 0), "0.0123456789-e", font=font)[3]
    bar_w = max(16, width - 2 * pad)
    height = pad + (text_h + 2 if label else 0) + bar_height + 2 + text_h + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = pad
    if label:
        draw.text((pad, y), label, fill=(0, 0, 0), font=font)
        y += text_h + 2
    strip = colormap(np.linspace(0.0, 1.0, bar_w)[None, :].repeat(bar_height, 0), cmap)
    canvas.paste(Image.fromarray(strip), (pad, y))
    y += bar_height + 2
    ticks = tick_labels(lo, hi, 3)
    for i, text in enumerate(ticks):
        w = probe.textbbox((0, 0), text, font=font)[2]
        x = pad + round(i * (bar_w - 1) / (len(ticks) - 1)) - (0 if i == 0 else w if i == len(ticks) - 1 else w // 2)
        draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return canvas


def with_colorbar(image: Image.Image, lo: float, hi: float, *, cmap: str = "jet", label: str = "",
                  min_width: int = 200) -> Image.Image:
    """``image`` with a :func:`colorbar` stating the values of its colours below it."""
    image = image.convert("RGB")
    bar = colorbar(lo, hi, cmap=cmap, width=max(image.width, min_width), label=label)
    canvas = Image.new("RGB", (bar.width, image.height + bar.height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    canvas.paste(bar, (0, image.height))
    return canvas


def side_by_side(images: Sequence[Image.Image], titles: Sequence[str] | None = None, *, height: int | None = None,
                 pad: int = 8, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Panels in a row, each scaled to ``height`` (default: the tallest) keeping its aspect, with a
    title above each when ``titles`` are given."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles; give one title per image or none")
    h = height or max(im.height for im in images)
    panels = [im.convert("RGB").resize((max(1, round(im.width * h / im.height)), h), Image.Resampling.BILINEAR)
              if im.height != h else im.convert("RGB") for im in images]
    font = ImageFont.load_default()
    title_h = 0
    if titles:
        title_h = max(ImageDraw.Draw(panels[0]).textbbox((0, 0), t or " ", font=font)[3] for t in titles) + pad
    width = sum(p.width for p in panels) + pad * (len(panels) + 1)
    canvas = Image.new("RGB", (width, h + title_h + 2 * pad), background)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for i, p in enumerate(panels):
        if titles:
            draw.text((x, pad), str(titles[i]), fill=(0, 0, 0), font=font)
        canvas.paste(p, (x, pad + title_h))
        x += p.width + pad
    return canvas


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write ``image`` as PNG (parent folders created); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: overlays are saved as PNG; use a .png name")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray] | np.ndarray) -> Path:
    """Raw arrays to ``.npz`` (a mapping, compressed) or ``.npy`` (one array); returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        if not isinstance(arrays, Mapping):
            arrays = {"heat": np.asarray(arrays)}
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})
    elif suffix == ".npy":
        if isinstance(arrays, Mapping):
            raise ValueError(f"{path}: .npy holds one array; use a .npz name for several")
        np.save(path, np.asarray(arrays))
    else:
        raise ValueError(f"{path}: raw arrays are saved as .npz (several) or .npy (one); use one of those")
    return path


# --- colour tables ------------------------------------------------------------------------------

def _check_heat(heat: np.ndarray, size: tuple[int, int], what: str) -> np.ndarray:
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != (size[1], size[0]):
        raise ValueError(f"{what} has shape {heat.shape} but the image is {size[0]}x{size[1]} (needs "
                         f"({size[1]}, {size[0]})); use the map's .heat(), which is in original-image pixels")
    return heat


@functools.lru_cache(maxsize=16)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 table for colour map ``name``."""
    try:
        import matplotlib
    except ImportError:
        matplotlib = None
    if matplotlib is not None:
        try:
            cm = matplotlib.colormaps[name]
        except KeyError:
            raise ValueError(f"unknown colour map {name!r}; use a matplotlib name such as jet, viridis, "
                             f"inferno, RdBu_r") from None
        return np.rint(cm(np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    t = np.linspace(0, 1, 256)[:, None]
    builtin = {
        "jet": np.clip(1.5 - np.abs(4 * t - np.array([3, 2, 1])), 0, 1),
        "gray": np.repeat(t, 3, axis=1),
        "bwr": np.where(t < 0.5, np.hstack([2 * t, 2 * t, np.ones_like(t)]),
                        np.hstack([np.ones_like(t), 2 - 2 * t, 2 - 2 * t])),
    }
    builtin["RdBu_r"] = builtin["bwr"]
    if name not in builtin:
        raise ValueError(f"unknown colour map {name!r}; without matplotlib the built-in maps are "
                         f"{', '.join(builtin)} (pip install matplotlib for more)")
    return np.rint(builtin[name] * 255).astype(np.uint8)
