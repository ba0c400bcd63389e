"""COCO instances JSON (``images``, ``annotations``, ``categories``) -> a Listing.

Every box is kept (COCO ``[x, y, w, h]`` becomes xyxy ``[x, y, x + w, y + h]``, named by its
category's name); an image's label is the category of its largest box. An annotation's optional
``occlusion`` (the fraction of the object hidden by others, 0..1; featscope's study generator writes
it) is kept on its box; a bad value keeps the box without it, with a warning. Image files are looked up
under ``images_root``; without it, under the first of these that holds any of the first listed
files: the JSON's directory, its ``images/`` sub-directory, or the sub-directory named like the
JSON (``scenes.json`` -> ``scenes/``). Structural faults (bad JSON, a missing
``images`` or ``categories`` list, malformed image or category entries, duplicate ids) raise
:class:`DatasetError`; faults in single annotations only drop that annotation with a warning.
A file without an ``annotations`` key (COCO test-set image lists) reads as unlabelled, with a warning.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from featscope.datasets.images import NOT_FOUND
from featscope.datasets.scanning import Candidate, DatasetError, Listing, RawBox, normalize_relpath

__all__ = ["list_coco"]

_ROOT_PROBE = 50  # how many listed files decide where the images are


def list_coco(json_path: Path, images_root: Path | None = None) -> Listing:
    """Parse ``json_path`` into candidates below the resolved images root."""
    data = _load(json_path)
    name = json_path.name
    categories = _categories(data["categories"], name)
    candidates, by_id, warnings = _images(data["images"], name)
    if "annotations" not in data:
        warnings.append(f"{name} has no 'annotations' list; its images are read unlabelled")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DatasetError(f"{name}: 'annotations' must be a list, not {type(annotations).__name__}; "
                           "is this a COCO instances file?")
    for index, ann in enumerate(annotations):
        box, warning = _annotation(ann, index, name, categories, by_id)
        if warning:
            warnings.append(warning)
        if box is not None and "occlusion" in ann:
            box, warning = _with_occlusion(box, ann["occlusion"])
            if warning:
                warnings.append(warning)
        if box is not None:
            by_id[ann["image_id"]].boxes.append(box)
    root = _images_root(json_path, images_root, candidates)
    masked = {by_id[a["image_id"]].relpath for a in annotations
              if isinstance(a, dict) and a.get("segmentation") and isinstance(a.get("image_id"), (int, str))
              and a["image_id"] in by_id}
    return Listing(format="coco", root=root, candidates=candidates, warnings=warnings,
                   classes=sorted(set(categories.values())), annotations=json_path, masked=masked)


def _load(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise DatasetError(f"{json_path} does not exist or is not a file; pass the COCO instances JSON")
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                           f"{exc.msg}); fix or re-export the file") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{json_path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           "re-export it as UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_path} holds a JSON {type(data).__name__}, not an object with "
                           "'images', 'annotations' and 'categories'; is it a COCO instances file?")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            problem = "has no" if key not in data else "has a non-list"
            raise DatasetError(f"{json_path} {problem} '{key}' list; a COCO instances file needs "
                               "'images', 'annotations' and 'categories'")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _categories(entries: list[Any], name: str) -> dict[int, str]:
    categories: dict[int, str] = {}
    for i, cat in enumerate(entries):
        if not (isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)):
            raise DatasetError(f"{name}: categories[{i}] needs an integer 'id' and a string 'name', got {cat!r:.120}")
        if cat["id"] in categories:
            raise DatasetError(f"{name}: category id {cat['id']} appears twice; give each category its own id")
        categories[cat["id"]] = cat["name"]
    return categories


def _images(entries: list[Any], name: str) -> tuple[list[Candidate], dict[Any, Candidate], list[str]]:
    """Candidates in file order, the candidate of each image id, and warnings (duplicate files)."""
    candidates: list[Candidate] = []
    by_id: dict[Any, Candidate] = {}
    by_file: dict[str, Candidate] = {}
    warnings: list[str] = []
    for i, img in enumerate(entries):
        if not (isinstance(img, dict) and isinstance(img.get("id"), (int, str)) and not isinstance(img.get("id"), bool)
                and isinstance(img.get("file_name"), str)):
            raise DatasetError(f"{name}: images[{i}] needs an 'id' and a string 'file_name', got {img!r:.120}")
        if img["id"] in by_id:
            raise DatasetError(f"{name}: image id {img['id']!r} appears twice; give each image its own id")
        size = _declared_size(img, i, name)
        relpath = normalize_relpath(img["file_name"])
        if relpath is not None and relpath in by_file:
            warnings.append(f"{name}: images[{i}] (id {img['id']!r}) repeats file {relpath}; "
                            "its annotations are merged into the first entry")
            by_id[img["id"]] = by_file[relpath]
            continue
        if relpath is None:
            cand = Candidate(relpath=img["file_name"], declared_size=size,
                             error=f"{NOT_FOUND}: file_name {img['file_name']!r} is not a relative path "
                                   "below the images root; make it relative")
        else:
            cand = Candidate(relpath=relpath, declared_size=size)
            by_file[relpath] = cand
        candidates.append(cand)
        by_id[img["id"]] = cand
    return candidates, by_id, warnings


def _declared_size(img: dict[str, Any], i: int, name: str) -> tuple[int, int] | None:
    width, height = img.get("width"), img.get("height")
    if width is None and height is None:
        return None
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise DatasetError(f"{name}: images[{i}] has width {width!r} and height {height!r}; "
                           "both must be positive integers (or both absent)")
    return width, height


def _annotation(ann: Any, index: int, name: str, categories: dict[int, str],
                by_id: dict[Any, Candidate]) -> tuple[RawBox | None, str | None]:
    """A box for ``ann`` or a warning saying why it was dropped."""
    if not isinstance(ann, dict):
        return None, f"{name}: annotations[{index}] is not an object; dropped"
    where = f"{name}: annotation {ann.get('id', f'#{index}')} (image {ann.get('image_id')!r})"
    image_id = ann.get("image_id")
    if not isinstance(image_id, (int, str)) or image_id not in by_id:
        return None, f"{where}: image id {image_id!r} is not in 'images'; annotation ignored"
    cat = ann.get("category_id")
    if not _is_int(cat) or cat not in categories:
        return None, (f"{where}: unknown category id {cat!r} (known ids: {_id_ranges(categories)}); "
                      "dropped; add the category or fix the id")
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        return None, f"{where}: 'bbox' must be [x, y, width, height] numbers, got {bbox!r:.80}; dropped"
    x, y, w, h = (float(v) for v in bbox)
    return RawBox(categories[cat], x, y, x + w, y + h, where,
                  as_written=f"bbox [{x:g}, {y:g}, {w:g}, {h:g}] (xywh)"), None


def _with_occlusion(box: RawBox, value: Any) -> tuple[RawBox, str | None]:
    """``box`` with the annotation's ``occlusion``; a non-number or one outside [0, 1] is left out with a warning."""
    if value is None:
        return box, None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return replace(box, occlusion=float(value)), None
    return box, (f"{box.where}: 'occlusion' must be a number from 0 to 1 (the fraction of the object hidden), "
                 f"got {value!r:.40}; the box is kept without it")


def _id_ranges(categories: dict[int, str]) -> str:
    """Sorted ids with runs collapsed, e.g. ``1-11, 13-25, 27``."""
    ids = sorted(categories)
    if not ids:
        return "none"
    runs: list[str] = []
    start = prev = ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(runs)


def _images_root(json_path: Path, images_root: Path | None, candidates: list[Candidate]) -> Path:
    if images_root is not None:
        if not images_root.is_dir():
            raise DatasetError(f"images_root {images_root} is not a directory; point it at the folder "
                               f"the file_names of {json_path.name} are relative to")
        return images_root
    base = json_path.parent
    probe = [c.relpath for c in candidates if c.error is None][:_ROOT_PROBE]
    for root in (base, base / "images", base / json_path.stem):
        if any((root / rel).is_file() for rel in probe):
            return root
    return base
