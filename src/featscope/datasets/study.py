"""The study's synthetic data sets: pre-training scenes, a target detection set, probe test sets.

Public names: :data:`PRETRAIN_CLASSES`, :data:`TARGET_CLASSES`, :class:`StudySets`, :func:`study_datasets`.

What the study needs to compare a classification-pretrained backbone with a detection-pretrained one
trained on *the same images* (its Table 7), generated deterministically from one seed:

- ``pretrain`` (COCO): each scene holds one labelled class (:data:`PRETRAIN_CLASSES`) with 1-4
  instances of varied size (a quarter to 0.6 of the side) and position, in plain or gradient fills on a
  smooth colour field. The classifier learns the scene's label (the COCO reader labels an image by its
  largest box, and all boxes share the class), the detector its boxes. (Measured on a 2-core CPU, ResNet-18
  from scratch, AdamW, 600 iterations at 64 pixels: held-out top-1 0.32 on cluttered backgrounds with objects
  from 0.15 of the side, 0.65 on these; with SGD both stayed near chance: see ``training/presets.py``.)
- ``pretrain-val`` (COCO): held-out scenes of the same distribution (the detector's mAP@0.5).
- ``target-train`` / ``target-test`` (COCO): another distribution, the small fine-tuning set of the
  study's Table 1 / Fig. 1: other shapes (:data:`TARGET_CLASSES`), several classes per scene,
  patterned fills only (stripes, checks, dots), on cluttered backgrounds.
- ``single``, ``several``, ``small`` (ImageFolder, the pre-training classes): one large object; 2-4
  instances of one class; one small object, on the pre-training backgrounds. The probes on these show
  the study's failure cases of detection features (several instances, small objects).
- Every object of the COCO parts carries ``occlusion``, the fraction of its own pixels that objects placed
  later cover (at most ``1 - synth._MIN_VISIBLE``, 0.5, since every object keeps half its pixels visible),
  and ``segmentation``, the COCO RLE of its visible pixels, so the sets serve the error analysis by
  occlusion and semantic segmentation (:mod:`featscope.datasets.masks` paints the masks). Occlusion is
  rare: of the 186 objects of the cpu-demo's target-test (100 scenes at 128 px, seed 0), 160 are not
  occluded (< 0.01), 19 have low (0.01-0.25) and 7 medium (0.25-0.5) occlusion, none high, so the
  per-bin miss rates of the error analysis rest on few objects at that size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featscope.datasets.scanning import DatasetError
from featscope.datasets.synth import _scene, _single, _write_png

__all__ = ["PRETRAIN_CLASSES", "TARGET_CLASSES", "StudySets", "study_datasets"]

PRETRAIN_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
TARGET_CLASSES: tuple[str, ...] = ("ring", "diamond", "ellipse", "arrow")
PRETRAIN_TEXTURES: tuple[str, ...] = ("solid", "gradient")
TARGET_TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots")
# Version 4 adds each object's occlusion and visible-pixel segmentation (RLE) to the COCO parts; its images
# are byte-identical to version 3's.
_GENERATOR, _VERSION, _MARKER = "featscope.study", 4, "study.json"
GENERATOR_VERSION = _VERSION  # changes whenever the same arguments would write other images or annotations
_PRETRAIN_DIAMETER = (0.25, 0.6)
_TARGET_DIAMETER = (0.15, 0.5)
_SINGLE_DIAMETER = (0.35, 0.8)
_SEVERAL_DIAMETER = (0.18, 0.35)
_SMALL_DIAMETER = (0.08, 0.15)
DETECTION_PARTS = ("pretrain", "pretrain-val", "target-train", "target-test")
PROBE_PARTS = ("single", "several", "small")


@dataclass
class StudySets:
    """Where :func:`study_datasets` wrote each part: ``coco[part]`` JSON files, ``folders[part]`` ImageFolders."""

    root: Path
    coco: dict[str, Path]
    folders: dict[str, Path]
    counts: dict[str, int]


def study_datasets(out_dir: str | os.PathLike[str], *, n_pretrain: int = 4800, n_pretrain_val: int = 150,
                   n_target_train: int = 300, n_target_test: int = 150, n_probe: int = 40, size: int = 128,
                   seed: int = 0, progress: Callable[[int, int], None] | None = None) -> StudySets:
    """Write every part under ``out_dir``; same arguments give byte-identical files.

    ``n_probe`` images per class in each probe set. ``out_dir`` must be new, empty, or this
    function's own output for the same arguments (complete output is left untouched, so registering
    it again is a no-op; an interrupted one is written again).
    """
    counts = {"pretrain": n_pretrain, "pretrain-val": n_pretrain_val, "target-train": n_target_train,
              "target-test": n_target_test, "single": n_probe, "several": n_probe, "small": n_probe}
    for name, value in [*counts.items(), ("size", size), ("seed", seed)]:
        low = 32 if name == "size" else (0 if name == "seed" else 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    root = Path(out_dir)
    params = {"generator": _GENERATOR, "version": _VERSION, **counts, "size": size, "seed": seed}
    if _claim(root, params):  # already generated: leave the files (and their modification times) alone
        return _located(root, counts)
    total = sum(counts[p] for p in DETECTION_PARTS) + sum(counts[p] * len(PRETRAIN_CLASSES) for p in PROBE_PARTS)
    tick = _Ticker(total, progress)
    for stream, part in enumerate(DETECTION_PARTS):
        target = part.startswith("target")
        classes = TARGET_CLASSES if target else PRETRAIN_CLASSES
        _detection_part(root, part, counts[part], size, classes, target, [seed, 10 + stream], tick)
    for stream, part in enumerate(PROBE_PARTS):
        _probe_part(root, part, counts[part], size, [seed, 20 + stream], tick)
    (root / _MARKER).write_text(json.dumps({**params, "complete": True}, indent=1) + "\n", encoding="utf-8")
    return _located(root, counts)


def _located(root: Path, counts: dict[str, int]) -> StudySets:
    return StudySets(root=root, coco={p: root / f"{p}.json" for p in DETECTION_PARTS},
                     folders={p: root / p for p in PROBE_PARTS},
                     counts={p: counts[p] * (len(PRETRAIN_CLASSES) if p in PROBE_PARTS else 1) for p in counts})


class _Ticker:
    def __init__(self, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


_PARALLEL_FROM = 600  # images in a part from which drawing is spread over processes (a pool costs ~1 s to start)
_CHUNK = 100


def _workers(n: int) -> int:
    return min(4, os.cpu_count() or 1) if n >= _PARALLEL_FROM else 1


def _draw_all(draw: Callable[..., list], jobs: list[tuple], tick: _Ticker) -> list:
    """``draw(*job)`` for every job in order, each returning a list; concatenated in job order.

    Every image draws from its own seeded generator, so spreading the jobs over processes gives
    byte-identical files. The processes are forked (where the platform forks; elsewhere the drawing stays
    serial): "spawn" would re-run the caller's ``__main__``, which an unguarded user script cannot take.
    The children only draw with NumPy and write PNGs, none of the locks a threaded worker may hold
    at the fork. Progress ticks per finished chunk; an exception from ``tick`` (a cancelled job) stops the
    chunks not yet started.
    """
    import multiprocessing

    workers = _workers(len(jobs)) if "fork" in multiprocessing.get_all_start_methods() else 1
    if workers == 1:
        out: list = []
        for job in jobs:
            out.extend(draw(*job))
            tick()
        return out
    from concurrent.futures import ProcessPoolExecutor

    from PIL import Image
    from pycocotools import mask as _coco_mask  # noqa: F401 - imported before the fork, not in every child

    Image.init()  # PIL's format plugins too: no child imports anything a parent thread may be importing

    chunks = [jobs[k:k + _CHUNK] for k in range(0, len(jobs), _CHUNK)]
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        results = []
        for chunk, res in zip(chunks, pool.map(_draw_chunk, [draw] * len(chunks), chunks)):
            results.extend(res)
            for _ in chunk:
                tick()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _draw_chunk(draw: Callable[..., list], jobs: list[tuple]) -> list:
    out: list = []
    for job in jobs:
        out.extend(draw(*job))
    return out


def _draw_scene(root: Path, part: str, i: int, size: int, classes: tuple[str, ...], target: bool,
                stream: tuple[int, ...]) -> list[dict[str, object]]:
    """Write scene ``i`` of a detection part; its annotations (image id ``i + 1``, no annotation ids yet)."""
    rng = np.random.default_rng([*stream, i])
    if target:
        pixels, objects = _scene(rng, size, classes=classes, count=(1, 4), diameter=_TARGET_DIAMETER,
                                 textures=TARGET_TEXTURES, clutter=True)
    else:  # one class per scene, balanced over the classes
        pixels, objects = _scene(rng, size, fixed=classes[i % len(classes)], count=(1, 5),
                                 diameter=_PRETRAIN_DIAMETER, textures=PRETRAIN_TEXTURES, clutter=False)
    _write_png(root / part / f"scene_{i:05d}.png", pixels)
    return [{"image_id": i + 1, "category_id": classes.index(obj.shape) + 1, "bbox": obj.bbox, "area": obj.area,
             "iscrowd": 0, "occlusion": round(obj.occlusion, 6), "segmentation": _rle(obj.visible)}
            for obj in objects]


def _detection_part(root: Path, part: str, n: int, size: int, classes: tuple[str, ...], target: bool,
                    stream: list[int], tick: _Ticker) -> Path:
    (root / part).mkdir(parents=True, exist_ok=True)
    drawn = _draw_all(_draw_scene, [(root, part, i, size, classes, target, tuple(stream)) for i in range(n)], tick)
    images = [{"id": i + 1, "file_name": f"scene_{i:05d}.png", "width": size, "height": size} for i in range(n)]
    annotations = [{"id": k + 1, **{key: ann[key] for key in ("image_id", "category_id", "bbox", "area", "iscrowd",
                                                              "occlusion", "segmentation")}}
                   for k, ann in enumerate(drawn)]
    doc = {"info": {"description": f"featscope study set: {part}", "version": str(_VERSION)}, "licenses": [],
           "images": images, "annotations": annotations,
           "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(classes)]}
    path = root / f"{part}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def _rle(mask: np.ndarray) -> dict[str, object]:
    """COCO's compressed RLE of a bool mask, counts as a string (JSON has no bytes)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _draw_probe(folder: Path, part: str, k: int, j: int, size: int, stream: tuple[int, ...]) -> list:
    cls = PRETRAIN_CLASSES[k]
    rng = np.random.default_rng([*stream, k, j])
    if part == "single":
        pixels = _single(rng, size, cls, _SINGLE_DIAMETER, PRETRAIN_TEXTURES, clutter=False)
    elif part == "small":
        pixels = _single(rng, size, cls, _SMALL_DIAMETER, PRETRAIN_TEXTURES, clutter=False)
    else:
        pixels, _ = _scene(rng, size, fixed=cls, count=(2, 5), diameter=_SEVERAL_DIAMETER,
                           textures=PRETRAIN_TEXTURES, clutter=False)
    _write_png(folder / cls / f"{cls}_{j:04d}.png", pixels)
    return []


def _probe_part(root: Path, part: str, n: int, size: int, stream: list[int], tick: _Ticker) -> Path:
    folder = root / part
    for cls in PRETRAIN_CLASSES:
        (folder / cls).mkdir(parents=True, exist_ok=True)
    _draw_all(_draw_probe, [(folder, part, k, j, size, tuple(stream))
                            for k in range(len(PRETRAIN_CLASSES)) for j in range(n)], tick)
    return folder


def _claim(root: Path, params: dict[str, object]) -> bool:
    """Make ``root`` ours: refuse a foreign folder or another run's output; True if it is already complete."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file; give study_datasets a new or empty directory")
    if root.exists() and any(root.iterdir()):
        try:
            previous = json.loads((root / _MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or previous.get("generator") != _GENERATOR:
            raise DatasetError(f"{root} is not empty and is not a study_datasets output; choose a new or empty directory")
        complete = previous.pop("complete", False)
        if previous == params and complete:
            return True
        if previous != params:
            raise DatasetError(f"{root} holds study sets made with other arguments ({previous}); use a new directory "
                               f"or delete this one")
    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text(json.dumps(params, indent=1) + "\n", encoding="utf-8")
    return False
