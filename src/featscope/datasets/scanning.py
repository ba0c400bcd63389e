"""The part every format reader shares: finding image files, checking them, clipping boxes.

A format reader only parses its own layout into a :class:`Listing` (which files, with which labels
and boxes); :func:`finish_scan` then stats and probes the files, clips the boxes against the real
image size, picks labels and builds the :class:`DatasetScan`. Keeping that in one place is what
makes every format report broken images and bad boxes the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from featscope.datasets.images import (IMAGE_EXTENSIONS, NOT_FOUND, UNREADABLE, ImageDecodeError,
                                       probe_image)
from featscope.datasets.records import Box, DatasetScan, ImageRecord, dataset_fingerprint

__all__ = ["Candidate", "DatasetError", "Listing", "RawBox", "finish_scan", "normalize_relpath",
           "relpath_below", "walk_images"]

VERIFY_MODES = ("none", "header", "full")
ProgressFn = Callable[[int, int], None]

# Boxes overshooting the image by at most this much (float rounding in exported annotations) are
# clipped without a warning.
_CLIP_TOLERANCE = 0.5
_PARALLEL_FROM = 32  # below this many files, threads cost more than they save


class DatasetError(ValueError):
    """A problem with the dataset as a whole (missing path, malformed annotation file, no images);
    the message says how to fix it."""


@dataclass(frozen=True)
class RawBox:
    """A box as read from an annotation file (xyxy pixel edges), before clipping; ``where`` names
    its source for warnings, e.g. ``scenes.json: annotation 17 (image 3)``; ``as_written`` shows the
    box the way the annotation file writes it, so a warning can be matched against the file;
    ``occlusion`` is the annotated hidden fraction (0..1), None when not given."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    where: str
    as_written: str | None = None
    occlusion: float | None = None


@dataclass
class Candidate:
    """An image a format reader expects: ``label`` if the layout names it (else the largest box's),
    the ``declared_size`` (width, height) from the annotations if any, and ``error`` when the
    reader already knows the image must be skipped (e.g. its annotation cannot be parsed)."""

    relpath: str
    label: str | None = None
    boxes: list[RawBox] = field(default_factory=list)
    declared_size: tuple[int, int] | None = None
    error: str | None = None


@dataclass
class Listing:
    """What a format reader found, before any file is checked. ``classes`` None means "the labels
    that occur"; a format with a category list (COCO) sets it explicitly. ``masked``: relpaths whose
    annotations include a segmentation mask (read later by :mod:`featscope.datasets.masks`)."""

    format: str
    root: Path
    candidates: list[Candidate]
    warnings: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    annotations: Path | None = None
    masked: set[str] = field(default_factory=set)


def walk_images(root: Path) -> list[str]:
    """Sorted POSIX relpaths of all files below ``root`` with an image extension, skipping hidden
    files and directories; directory symlinks are followed once (no cycles)."""
    found: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append((rel_dir / name).as_posix())
    return sorted(found)


def normalize_relpath(name: str) -> str | None:
    """A relative path from an annotation file as clean POSIX (backslashes taken as separators);
    None if it is absolute or climbs out of its root with ``..``."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or not posix.parts:
        return None
    parts: list[str] = []
    for part in posix.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) if parts else None


def relpath_below(root: Path, path: Path) -> str | None:
    """POSIX path of ``path`` relative to ``root`` (both made absolute, not resolved, so symlinked
    files keep their names); None when ``path`` is not below ``root``."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return None
    return normalize_relpath(rel.as_posix())


def finish_scan(listing: Listing, verify: str, progress: ProgressFn | None) -> DatasetScan:
    """Stat/probe every candidate per ``verify``, clip boxes, pick labels; skipped images get reasons.

    Raises :class:`DatasetError` when no image is readable, since nothing downstream can use that.
    """
    total = len(listing.candidates)
    if progress is not None:
        progress(0, total)
    results: list[tuple[ImageRecord, list[str]]] = []

    def inspect(c: Candidate) -> tuple[ImageRecord, list[str]]:
        return _inspect(listing.root, c, verify)

    if verify != "none" and total >= _PARALLEL_FROM:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for result in pool.map(inspect, listing.candidates):
                results.append(result)
                if progress is not None:
                    progress(len(results), total)
    else:
        for c in listing.candidates:
            results.append(inspect(c))
            if progress is not None:
                progress(len(results), total)

    records = [r for r, _ in results]
    images = sorted((r for r in records if r.error is None), key=lambda r: r.relpath)
    skipped = sorted((r for r in records if r.error is not None), key=lambda r: r.relpath)
    if not images:
        raise DatasetError(_nothing_readable(listing, skipped))
    warnings = list(listing.warnings) + [w for _, ws in results for w in ws]
    classes = listing.classes if listing.classes is not None else sorted(
        {r.label for r in records if r.label is not None})
    return DatasetScan(root=listing.root, format=listing.format, images=images, skipped=skipped,
                       classes=sorted(classes), fingerprint=dataset_fingerprint(records),
                       annotations=listing.annotations, warnings=warnings,
                       n_masks=sum(1 for r in images if r.relpath in listing.masked))


def _inspect(root: Path, c: Candidate, verify: str) -> tuple[ImageRecord, list[str]]:
    path = root / c.relpath
    try:
        st: os.stat_result | None = path.stat()
    except (OSError, ValueError):
        st = None
    size_bytes, mtime_ns = (st.st_size, st.st_mtime_ns) if st is not None else (0, 0)
    error = c.error
    probed: tuple[int, int] | None = None
    if error is None and st is None:
        error = f"{NOT_FOUND}: {c.relpath} does not exist under {root}"
    elif error is None and not stat.S_ISREG(st.st_mode):
        error = f"{UNREADABLE}: {c.relpath} is not a regular file"
    elif error is None and verify != "none":
        try:
            probed = probe_image(path, full=verify == "full")
        except ImageDecodeError as exc:
            error = f"{exc.reason}: {exc.detail}"

    warnings: list[str] = []
    size = probed or c.declared_size
    if probed and c.declared_size and probed != c.declared_size:
        warnings.append(f"{c.relpath}: the annotations give its size as {c.declared_size[0]}x"
                        f"{c.declared_size[1]} but the image is {probed[0]}x{probed[1]}; "
                        "boxes are clipped to the image")
    boxes: list[Box] = []
    for raw in c.boxes:
        box, warning = _clip(raw, size)
        if box is not None:
            boxes.append(box)
        if warning:
            warnings.append(warning)
    label = c.label if c.label is not None else _largest_label(boxes)
    width, height = size if size and error is None else (None, None)
    record = ImageRecord(relpath=c.relpath, label=label, width=width, height=height,
                         size_bytes=size_bytes, mtime_ns=mtime_ns, boxes=tuple(boxes), error=error)
    # A skipped image's own reason is the headline; its box problems would only be noise.
    return record, (warnings if error is None else [])


def _clip(raw: RawBox, size: tuple[int, int] | None) -> tuple[Box | None, str | None]:
    coords = raw.as_written or f"box [{raw.x0:g}, {raw.y0:g}, {raw.x1:g}, {raw.y1:g}] (xyxy)"
    if not (raw.x1 > raw.x0 and raw.y1 > raw.y0):
        return None, f"{raw.where}: {coords} has no positive width and height; dropped"
    if size is None:
        return Box(raw.label, raw.x0, raw.y0, raw.x1, raw.y1, raw.occlusion), None
    w, h = size
    x0, y0 = max(0.0, raw.x0), max(0.0, raw.y0)
    x1, y1 = min(float(w), raw.x1), min(float(h), raw.y1)
    if not (x1 > x0 and y1 > y0):
        return None, f"{raw.where}: {coords} lies outside the {w}x{h} image; dropped"
    overshoot = max(-raw.x0, -raw.y0, raw.x1 - w, raw.y1 - h)
    warning = None
    if overshoot > _CLIP_TOLERANCE:
        warning = f"{raw.where}: {coords} extends outside the {w}x{h} image; clipped"
    return Box(raw.label, x0, y0, x1, y1, raw.occlusion), warning


def _largest_label(boxes: list[Box]) -> str | None:
    """Label of the largest box; on equal areas the first in annotation order."""
    best: Box | None = None
    for b in boxes:
        if best is None or b.area > best.area:
            best = b
    return best.label if best else None


def _nothing_readable(listing: Listing, skipped: list[ImageRecord]) -> str:
    where = listing.annotations or listing.root
    if not skipped:
        return f"{where} lists no images; check that it is the right file or folder"
    missing = sum(1 for r in skipped if r.reason == NOT_FOUND)
    examples = "; ".join(f"{r.relpath}: {r.error}" for r in skipped[:3])
    if missing < len(skipped):
        hint = "fix or replace the files"
    elif listing.format == "coco":
        hint = f"are the images under {listing.root}? pass images_root= to point at them"
    else:
        hint = f"check that the paths are relative to {listing.root}"
    return f"none of the {len(skipped)} images of {where} is readable ({examples}); {hint}"
