"""A synthetic shapes dataset with known answers: scenes with boxes (COCO) and single objects
(ImageFolder), generated deterministically in seconds.

Shape is the only class signal; colour, texture, scale, rotation, background and occlusion are
random, so a network that separates the classes has learnt shape. Scenes hold 1-4 objects, from
about 8 px across (at ``size=128``) to about half the image, each fully inside the image; later
objects may cover earlier ones, but every object keeps at least half of its pixels visible, and its
box is the box of its visible pixels (as in COCO). Each image draws from its own random stream
(``seed``, kind, index), so files do not depend on how many others are generated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from featscope.datasets.scanning import DatasetError
from featscope.datasets.shapes import SHAPES, TEXTURES, background, random_colour, shape_mask, texture

__all__ = ["SYNTH_CLASSES", "SynthDataset", "synth_dataset"]

SYNTH_CLASSES: tuple[str, ...] = tuple(SHAPES)
_GENERATOR = "featscope.synth"
_VERSION = 1
_MARKER = "synth.json"
_MIN_VISIBLE = 0.5       # fraction of an object's own pixels that must stay uncovered
_SCENE_DIAMETER = (0.065, 0.45)  # object extent as a fraction of the image side, log-uniform
_SINGLE_DIAMETER = (0.35, 0.8)


@dataclass
class SynthDataset:
    """Where :func:`synth_dataset` wrote its output; read it with ``read_dataset(coco_json)`` and
    ``read_dataset(classification_dir)``."""

    root: Path
    scenes_dir: Path
    coco_json: Path
    classification_dir: Path
    n_scenes: int
    n_single: int


def synth_dataset(out_dir: str | os.PathLike[str], *, n_scenes: int = 200, n_per_class: int = 30,
                  size: int = 128, seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> SynthDataset:
    """Write ``scenes/*.png`` + ``scenes.json`` (COCO) and ``classification/<class>/*.png`` to ``out_dir``.

    The JSON's file_names are relative to ``scenes/``, which ``read_dataset`` finds by itself
    (a folder named like the JSON) and which is also what ``images_root=scenes_dir`` names.

    Same arguments give byte-identical files. ``out_dir`` must be empty, new, or this function's
    own earlier output for the same arguments (which is then rewritten identically).
    """
    for name, value, low in (("n_scenes", n_scenes, 0), ("n_per_class", n_per_class, 0), ("size", size, 32)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    root = Path(out_dir)
    params = {"generator": _GENERATOR, "version": _VERSION, "n_scenes": n_scenes,
              "n_per_class": n_per_class, "size": size, "seed": seed}
    scene_names = [f"scene_{i:05d}.png" for i in range(n_scenes)]
    single_names = [f"{cls}/{cls}_{j:04d}.png" for cls in SYNTH_CLASSES for j in range(n_per_class)]
    expected = ({_MARKER, "scenes.json"} | {f"scenes/{n}" for n in scene_names}
                | {f"classification/{n}" for n in single_names})
    _claim(root, params, expected)

    total, done = n_scenes + len(single_names), 0
    images, annotations = [], []
    for i, name in enumerate(scene_names):
        pixels, objects = _scene(np.random.default_rng([seed, 0, i]), size)
        _write_png(root / "scenes" / name, pixels)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": SYNTH_CLASSES.index(obj.shape) + 1, "bbox": obj.bbox,
                                "area": obj.area, "iscrowd": 0})
        done += 1
        if progress is not None:
            progress(done, total)
    coco = {"info": {"description": "featscope synthetic shapes", "version": str(_VERSION)},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(SYNTH_CLASSES)]}
    (root / "scenes.json").write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")

    for k, cls in enumerate(SYNTH_CLASSES):
        for j in range(n_per_class):
            pixels = _single(np.random.default_rng([seed, 1 + k, j]), size, cls)
            _write_png(root / "classification" / cls / f"{cls}_{j:04d}.png", pixels)
            done += 1
            if progress is not None:
                progress(done, total)
    return SynthDataset(root=root, scenes_dir=root / "scenes", coco_json=root / "scenes.json",
                        classification_dir=root / "classification", n_scenes=n_scenes,
                        n_single=len(single_names))


def _claim(root: Path, params: dict[str, object], expected: set[str]) -> None:
    """Make ``root`` ours: refuse foreign content or another run's output, then write the marker."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file; give synth_dataset a new or empty directory")
    existing = [(Path(d) / f).relative_to(root).as_posix() for d, _, fs in os.walk(root) for f in fs]
    if existing:
        marker = root / _MARKER
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or previous.get("generator") != _GENERATOR:
            raise DatasetError(f"{root} is not empty and is not a synth_dataset output; "
                               "choose a new or empty directory")
        if previous != params:
            made = ", ".join(f"{k}={previous.get(k)!r}" for k in ("n_scenes", "n_per_class", "size", "seed"))
            raise DatasetError(f"{root} holds a synth_dataset output made with {made}; use a new directory "
                               "for other arguments, or delete this one")
        foreign = sorted(set(existing) - expected)
        if foreign:
            raise DatasetError(f"{root} holds files synth_dataset did not write (e.g. {foreign[0]}); "
                               "move them away or use a new directory")
    for sub in ["scenes", "classification", *(f"classification/{c}" for c in SYNTH_CLASSES)]:
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    # Pillow writes no tIME or text chunks unless asked, so equal pixels give equal bytes.
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)


def _paint(canvas: np.ndarray, rng: np.random.Generator, shape: str, centre: tuple[float, float],
           radius: float, angle: float, mask: np.ndarray, textures: tuple[str, ...] = TEXTURES) -> None:
    """Composite one textured object onto ``canvas`` in place, contrasting with what lies beneath."""
    size = canvas.shape[0]
    weights = mask / max(float(mask.sum()), 1e-6)
    beneath = (canvas * weights[..., None]).sum(axis=(0, 1))
    c1 = random_colour(rng, avoid=beneath)
    c2 = random_colour(rng, avoid=c1, min_distance=70.0)
    kind = textures[int(rng.integers(len(textures)))]
    fill = texture(kind, rng, size, centre, radius, c1, c2)
    if kind != "solid":  # keep the fill's mean away from the background too
        fill = 0.5 * fill + 0.5 * c1[None, None, :]
    canvas *= 1.0 - mask[..., None]
    canvas += fill * mask[..., None]


def _place(rng: np.random.Generator, size: int, diameter: float, shape: str
           ) -> tuple[tuple[float, float], float, float, np.ndarray]:
    radius = diameter / 2.0
    centre = (float(rng.uniform(radius, size - radius)), float(rng.uniform(radius, size - radius)))
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    return centre, radius, angle, shape_mask(shape, size, centre, radius, angle)


class SceneObject(NamedTuple):
    """One object of a scene: its class, the COCO bbox ``[x, y, w, h]`` and count of its visible pixels, the
    fraction of its own solid pixels that later objects cover (``occlusion``, 0..1) and its ``visible``
    pixels as an (H, W) bool mask (they never overlap another object's)."""

    shape: str
    bbox: list[int]
    area: int
    occlusion: float
    visible: np.ndarray


def _scene(rng: np.random.Generator, size: int, *, classes: tuple[str, ...] = SYNTH_CLASSES,
           fixed: str | None = None, count: tuple[int, int] = (1, 5),
           diameter: tuple[float, float] = _SCENE_DIAMETER, textures: tuple[str, ...] = TEXTURES,
           clutter: bool = True) -> tuple[np.ndarray, list[SceneObject]]:
    """Pixels and a :class:`SceneObject` per object, bottom first.

    ``count`` objects (low inclusive, high exclusive) of random ``classes``, or all of class ``fixed``;
    diameters log-uniform in ``diameter`` (fractions of the side); fills drawn from ``textures``;
    ``clutter``: the background kind (:func:`featscope.datasets.shapes.background`).
    """
    canvas = background(rng, size, clutter)
    owner = np.full((size, size), -1, dtype=np.int16)  # topmost object covering each pixel
    own_pixels: list[int] = []
    shapes: list[str] = []
    lo, hi = (math.log(f * size) for f in diameter)
    for _ in range(int(rng.integers(*count))):
        shape = fixed if fixed is not None else classes[int(rng.integers(len(classes)))]
        diameter = math.exp(rng.uniform(lo, hi))
        for _attempt in range(30):
            centre, radius, angle, mask = _place(rng, size, diameter, shape)
            solid = mask >= 0.5
            trial = np.where(solid, len(shapes), owner)
            if solid.any() and all(np.count_nonzero(trial == k) >= _MIN_VISIBLE * n
                                   for k, n in enumerate(own_pixels)):
                break
        else:
            continue  # no placement leaves the others visible enough; drop this object
        _paint(canvas, rng, shape, centre, radius, angle, mask, textures)
        owner = trial
        own_pixels.append(int(np.count_nonzero(solid)))
        shapes.append(shape)
    objects = []
    for k, shape in enumerate(shapes):
        visible = owner == k
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        # own_pixels[k] is the object's full solid area at placement (objects lie wholly inside the image)
        objects.append(SceneObject(shape, [x0, y0, x1 - x0, y1 - y0], int(xs.size),
                                   1.0 - xs.size / own_pixels[k], visible))
    return np.rint(canvas).astype(np.uint8), objects


def _single(rng: np.random.Generator, size: int, shape: str,
            diameter_range: tuple[float, float] = _SINGLE_DIAMETER, textures: tuple[str, ...] = TEXTURES,
            clutter: bool = True) -> np.ndarray:
    """One object of class ``shape`` on a background (diameter a uniform fraction of the side)."""
    canvas = background(rng, size, clutter)
    diameter = size * float(rng.uniform(*diameter_range))
    centre, radius, angle, mask = _place(rng, size, diameter, shape)
    _paint(canvas, rng, shape, centre, radius, angle, mask, textures)
    return np.rint(canvas).astype(np.uint8)
