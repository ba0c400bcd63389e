"""Per-pixel class masks for semantic segmentation, read on demand from a data set's own annotation files.

Public names: :data:`VOC_CLASSES`, :data:`VOID`, :class:`MaskSet`, :class:`VocMasks`, :class:`CocoMasks`,
:func:`default_void_width`, :func:`render_instances`.

A mask is an (H, W) uint8 array of indices into ``MaskSet.classes`` (index 0 is ``"background"``) with
:data:`VOID` (255) where the label is left open, as in Pascal VOC: VOC's ``SegmentationClass`` PNGs carry
a void band about 5 px wide along object outlines, which its evaluation ignores. Sources:

- Pascal VOC: ``SegmentationClass/<image id>.png``, palette indices in VOC's class order
  (:data:`VOC_CLASSES`), void kept. A ``labelmap.txt`` beside ``Annotations/`` (as CVAT and Datumaro
  export it: ``name:r,g,b:...`` per line, background first) replaces VOC's classes and colours. PNGs
  saved as RGB are mapped back through the colour of each class.
- COCO: each annotation's ``segmentation`` (polygons, or RLE with counts as a list or a string), decoded
  with pycocotools and painted by :func:`render_instances`, which draws the void band that these
  sources lack.

Masks never enter the catalog: they are large, and the annotation files already hold them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from featscope.datasets.images import probe_image
from featscope.datasets.scanning import normalize_relpath

__all__ = ["VOC_CLASSES", "VOID", "CocoMasks", "MaskSet", "VocMasks", "default_void_width", "render_instances"]

VOID = 255
MASKS_VERSION = 1  # bump when the same sources would give other masks (painting order, void band)
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _voc_colour(index: int) -> tuple[int, int, int]:
    """VOC's palette colour of class ``index`` (the devkit's bit-interleaving colormap; 255 is (224, 224, 192))."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((index >> 0) & 1) << shift
        g |= ((index >> 1) & 1) << shift
        b |= ((index >> 2) & 1) << shift
        index >>= 3
    return r, g, b


class MaskSet:
    """The masks of one data set: ``classes`` (index 0 ``"background"``), :meth:`has` and :meth:`load`."""

    classes: list[str]
    source: str  # what the masks are read from, for messages

    def has(self, relpath: str) -> bool:
        """Whether the image at ``relpath`` (the catalog's relative path) has a mask."""
        raise NotImplementedError

    def load(self, relpath: str) -> np.ndarray:
        """The (H, W) uint8 mask of ``relpath``: class indices into :attr:`classes`, :data:`VOID` where void."""
        raise NotImplementedError

    def fingerprint(self, relpaths: Sequence[str]) -> str:
        """What the masks of ``relpaths`` are made of (a run's key includes it, so changed masks train anew)."""
        h = hashlib.sha256(json.dumps([MASKS_VERSION, type(self).__name__, self.classes,
                                       getattr(self, "void_width", None)]).encode())
        self._fingerprint_into(h, relpaths)
        return h.hexdigest()

    def _fingerprint_into(self, h: Any, relpaths: Sequence[str]) -> None:
        raise NotImplementedError

    def _missing(self, relpath: str) -> ValueError:
        return ValueError(f"{relpath} has no segmentation mask in {self.source}; check MaskSet.has() first")


class VocMasks(MaskSet):
    """Pascal VOC ``SegmentationClass`` PNGs below ``root`` (the VOC2007/VOC2012-style folder)."""

    def __init__(self, root: str | Path, object_classes: list[str] | None = None) -> None:
        """``object_classes``: the classes the annotations name, checked against the masks' classes."""
        self.root = Path(root)
        self.folder = self.root / "SegmentationClass"
        self.source = str(self.folder)
        labelmap = self.root / "labelmap.txt"
        if labelmap.is_file():
            names, colours = _read_labelmap(labelmap)
        else:
            names, colours = list(VOC_CLASSES), [_voc_colour(i) for i in range(len(VOC_CLASSES))]
        self.classes = names
        unknown = sorted(set(object_classes or ()) - set(names))
        if unknown:
            raise ValueError(f"{self.root}'s objects name classes that are not among its mask classes "
                             f"({', '.join(unknown[:5])}); its SegmentationClass PNGs follow Pascal VOC's 20 "
                             "classes unless a labelmap.txt lists the classes in palette order")
        self._colours = {c: i for i, c in enumerate(colours)} | {_voc_colour(VOID): VOID}
        if not self.folder.is_dir() or not any(self.folder.glob("*.png")):
            raise ValueError(f"{self.root} has no SegmentationClass/*.png, so it has no segmentation masks; "
                             "segmentation needs Pascal VOC SegmentationClass PNGs or COCO polygons/RLE")

    def _path(self, relpath: str) -> Path:
        return self.folder / f"{Path(relpath).stem}.png"

    def _fingerprint_into(self, h: Any, relpaths: Sequence[str]) -> None:
        for rel in sorted(relpaths):
            st = self._path(rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())

    def has(self, relpath: str) -> bool:
        return self._path(relpath).is_file()

    def load(self, relpath: str) -> np.ndarray:
        path = self._path(relpath)
        if not path.is_file():
            raise self._missing(relpath)
        with Image.open(path) as im:
            if im.mode in ("P", "L"):
                mask = np.array(im, dtype=np.uint8)
            elif im.mode in ("RGB", "RGBA"):
                mask = self._from_colours(np.asarray(im.convert("RGB")), path)
            else:
                raise ValueError(f"{path} is a {im.mode} image; a VOC class mask is a palette (P) or RGB PNG")
        bad = np.setdiff1d(np.unique(mask), [*range(len(self.classes)), VOID])
        if bad.size:
            raise ValueError(f"{path} holds class indices {bad.tolist()[:5]} beyond the {len(self.classes)} classes "
                             f"({', '.join(self.classes[:4])}, ...); add a labelmap.txt naming every class")
        return mask

    def _from_colours(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        mask = np.empty(packed.shape, dtype=np.uint8)
        for value in np.unique(packed):
            colour = (int(value) >> 16, (int(value) >> 8) & 255, int(value) & 255)
            if colour not in self._colours:
                raise ValueError(f"{path} has the colour {colour}, which is no class's colour; save the mask "
                                 "with VOC's palette or list the colours in labelmap.txt")
            mask[packed == value] = self._colours[colour]
        return mask


def _read_labelmap(path: Path) -> tuple[list[str], list[tuple[int, int, int]]]:
    """(names, colours) of a CVAT/Datumaro ``labelmap.txt``; background must come first."""
    names, colours = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            colour = tuple(int(v) for v in rest.partition(":")[0].split(","))
        except ValueError:
            colour = ()
        if len(colour) != 3:
            raise ValueError(f"{path}:{n}: expected 'name:r,g,b:...' (as CVAT exports it), got {line!r:.80}")
        names.append(name.strip())
        colours.append(colour)
    if not names or names[0] != "background":
        raise ValueError(f"{path} must list 'background' first (palette index 0)")
    return names, colours


def default_void_width(height: int, width: int) -> int:
    """About 1% of the longer side, at least 1 (VOC's band is about 5 px on its ~500 px images)."""
    return max(1, round(0.01 * max(height, width)))


def render_instances(height: int, width: int, instances: list[tuple[int, np.ndarray]],
                     void_width: int | None = None) -> np.ndarray:
    """Paint ``(class index, (H, W) bool mask)`` instances into a VOC-style class mask with a void band.

    Instances are painted largest first (by pixel count; equal areas in the given order), so a small
    object lying on a large one stays visible, whatever order the annotation file lists them in. The
    band marks every boundary between two instances, and between an instance and the background (not
    the image border): it is centred on the outermost pixels of the instance painted on top and is
    ``void_width`` pixels wide (Euclidean distance; an even width is widened to the next odd one, so
    the band stays centred): ``void_width=1`` voids exactly those outermost pixels. ``None``:
    :func:`default_void_width`. ``void_width=0`` draws no band.
    """
    if void_width is None:
        void_width = default_void_width(height, width)
    if void_width < 0:
        raise ValueError(f"void_width must be >= 0 pixels, got {void_width}")
    order = sorted(range(len(instances)), key=lambda k: -int(np.count_nonzero(instances[k][1])))
    cls = np.zeros((height, width), dtype=np.uint8)
    inst = np.zeros((height, width), dtype=np.int32)  # 0: background, k: the k-th painted instance
    for rank, k in enumerate(order, start=1):
        label, mask = instances[k]
        if mask.shape != (height, width):
            raise ValueError(f"instance {k} has a {mask.shape[1]}x{mask.shape[0]} mask in a {width}x{height} image")
        cls[mask] = label
        inst[mask] = rank
    if void_width == 0 or not instances:
        return cls
    outer = np.zeros((height, width), dtype=bool)  # pixels on top of a different 4-neighbour
    for axis in (0, 1):
        a, b = (inst[1:], inst[:-1]) if axis == 0 else (inst[:, 1:], inst[:, :-1])
        differ = a != b
        upper_a, upper_b = differ & (a > b), differ & (b > a)
        if axis == 0:
            outer[1:] |= upper_a
            outer[:-1] |= upper_b
        else:
            outer[:, 1:] |= upper_a
            outer[:, :-1] |= upper_b
    if void_width > 1 and outer.any():
        from scipy.ndimage import distance_transform_edt

        outer = distance_transform_edt(~outer) <= void_width // 2
    cls[outer] = VOID
    return cls


class CocoMasks(MaskSet):
    """Masks painted from a COCO instances JSON's ``segmentation`` polygons or RLE.

    An image has a mask when every one of its annotations carries a well-formed segmentation of a known
    category (an image without annotations is all background). ``void_width``: see :func:`render_instances`.
    """

    def __init__(self, json_path: str | Path, images_root: str | Path | None = None,
                 void_width: int | None = None) -> None:
        self.json_path = Path(json_path)
        self.images_root = Path(images_root) if images_root is not None else self.json_path.parent
        self.source = str(self.json_path)
        self.void_width = void_width
        raw = self.json_path.read_bytes()
        self._json_sha = hashlib.sha256(raw).hexdigest()  # the annotations the masks are painted from
        data = json.loads(raw)
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        self.classes = ["background", *sorted(set(categories.values()))]
        index = {name: i for i, name in enumerate(self.classes)}
        self._images: dict[str, dict[str, Any]] = {}
        by_id: dict[Any, dict[str, Any]] = {}
        for img in data.get("images", []):
            rel = normalize_relpath(str(img.get("file_name", "")))
            if rel is None:
                continue
            entry = self._images.setdefault(rel, {"size": _size(img), "instances": [], "ok": True})
            by_id[img.get("id")] = entry  # a repeated file merges into its first entry, as the reader does
        self.warnings: list[str] = []
        for ann in data.get("annotations", []):
            entry = by_id.get(ann.get("image_id")) if isinstance(ann, dict) else None
            if entry is None:
                continue
            seg, label = _usable(ann.get("segmentation")), index.get(categories.get(ann.get("category_id")))
            if label is None or not _well_formed(seg, entry["size"]):
                entry["ok"] = False
                self.warnings.append(f"annotation {ann.get('id')!r}: no usable segmentation of a known category")
                continue
            entry["instances"].append((label, seg))
        if not any(e["instances"] for e in self._images.values() if e["ok"]):
            raise ValueError(f"{self.json_path.name} has no segmentation masks (no annotation carries a "
                             "'segmentation'); segmentation needs Pascal VOC SegmentationClass PNGs or COCO "
                             "polygons/RLE")

    def _fingerprint_into(self, h: Any, relpaths: Sequence[str]) -> None:
        h.update(self._json_sha.encode())
        h.update("\0".join(sorted(relpaths)).encode())

    def has(self, relpath: str) -> bool:
        entry = self._images.get(relpath)
        return entry is not None and entry["ok"]

    def load(self, relpath: str) -> np.ndarray:
        from pycocotools import mask as coco_mask

        if not self.has(relpath):
            raise self._missing(relpath)
        entry = self._images[relpath]
        if entry["size"] is None:  # no width/height in the JSON: the image file says
            width, height = probe_image(self.images_root / relpath)
            entry["size"] = (height, width)
        height, width = entry["size"]
        instances = []
        for label, seg in entry["instances"]:
            if isinstance(seg, list):
                rle = coco_mask.merge(coco_mask.frPyObjects(seg, height, width))
            elif isinstance(seg["counts"], list):
                rle = coco_mask.frPyObjects(seg, height, width)
            else:
                rle = seg
            with warnings.catch_warnings():  # pycocotools' own NumPy 2 copy= deprecation, once per call
                warnings.simplefilter("ignore", DeprecationWarning)
                instances.append((label, coco_mask.decode(rle).astype(bool)))
        return render_instances(height, width, instances, self.void_width)


def _size(img: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) from a COCO image entry, None when it does not say."""
    h, w = img.get("height"), img.get("width")
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def _usable(seg: Any) -> Any:
    """``seg`` without degenerate polygons (fewer than 3 points, which real COCO files hold a few of, and which
    pycocotools would take for a box when they have 2 points)."""
    if isinstance(seg, list):
        return [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return seg


def _well_formed(seg: Any, size: tuple[int, int] | None) -> bool:
    """Polygons: a non-empty list of flat [x0, y0, x1, y1, ...] lists of at least 3 points. RLE: a dict with
    ``size`` [h, w] (the image's, when known) and ``counts`` (a string, or run lengths summing to h * w)."""
    if isinstance(seg, list):
        return bool(seg) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
                                 all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in seg)
    if not isinstance(seg, dict):
        return False
    shape, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        return False
    if size is not None and tuple(shape) != tuple(size):
        return False
    if isinstance(counts, list):
        return all(isinstance(v, int) and v >= 0 for v in counts) and sum(counts) == shape[0] * shape[1]
    return isinstance(counts, str) and bool(counts)
