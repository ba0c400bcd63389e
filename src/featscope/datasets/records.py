"""What a dataset scan produces: one record per image, the scan as a whole, and its fingerprint.

The records are plain frozen values so the catalog can store them and the cache can key on them;
the fingerprint is what makes "same dataset" a cheap, exact question.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Box", "DatasetScan", "ImageRecord", "dataset_fingerprint"]

_FINGERPRINT_VERSION = "featscope-dataset-v1"


@dataclass(frozen=True)
class Box:
    """An object box in absolute pixel coordinates, corners (x0, y0) and (x1, y1) as pixel edges,
    so a box covering exactly pixel columns 0..9 has x0=0, x1=10.

    ``occlusion`` is the fraction (0..1) of the object's full area hidden by other objects, None when
    the annotations do not say (the study's error analysis bins missed objects by it).
    """

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    occlusion: float | None = None

    @property
    def area(self) -> float:
        """Width times height; 0 for an empty or inverted box."""
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    def to_row(self) -> list[Any]:
        """The catalog's JSON form ``[label, x0, y0, x1, y1]``, with the occlusion as a 6th element only
        when it is known (so rows and fingerprints of data without occlusion stay as they were)."""
        row: list[Any] = [self.label, float(self.x0), float(self.y0), float(self.x1), float(self.y1)]
        if self.occlusion is not None:
            row.append(float(self.occlusion))
        return row

    @classmethod
    def from_row(cls, row: list[Any] | tuple[Any, ...]) -> "Box":
        """The inverse of :meth:`to_row`; reads 5-element rows (written before occlusion existed) too."""
        occlusion = row[5] if len(row) > 5 else None
        return cls(str(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]),
                   None if occlusion is None else float(occlusion))


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    ``relpath`` is POSIX and relative to the scan's root. ``width``/``height`` are as displayed
    (after EXIF orientation), or as the annotations declare them
    when ``verify="none"``; None when unknown or skipped. ``size_bytes``/``mtime_ns`` come from ``stat``
    (0 for a missing file). ``error`` is set only on skipped records and reads
    ``"<reason>: <detail>"`` where ``<reason>`` is a short category such as ``file not found``.
    """

    relpath: str
    label: str | None
    width: int | None
    height: int | None
    size_bytes: int
    mtime_ns: int
    boxes: tuple[Box, ...] = ()
    error: str | None = None

    @property
    def reason(self) -> str | None:
        """The short category of ``error`` (None for a readable image)."""
        return None if self.error is None else self.error.split(": ", 1)[0]


@dataclass
class DatasetScan:
    """A read dataset: readable ``images`` and ``skipped`` ones (both sorted by relpath), the sorted
    ``classes``, annotation ``warnings`` that did not cost an image, the ``fingerprint``, and ``n_masks``,
    how many readable images have a segmentation mask in the annotations (VOC PNGs, COCO polygons/RLE)."""

    root: Path
    format: str
    images: list[ImageRecord]
    skipped: list[ImageRecord]
    classes: list[str]
    fingerprint: str
    annotations: Path | None = None
    warnings: list[str] = field(default_factory=list)
    n_masks: int = 0

    def image_path(self, record: ImageRecord) -> Path:
        """Absolute path of ``record``'s file."""
        return self.root / record.relpath

    def skipped_reasons(self) -> dict[str, int]:
        """Reason category -> number of skipped images, most frequent first."""
        counts = Counter(r.reason or "unknown" for r in self.skipped)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        """One line for a CLI or a log, e.g. ``412 images, 10 classes; 3 skipped: 2 cannot be decoded,
        1 file not found; 1 annotation warning``; data with masks add e.g. ``; 400 with segmentation masks``."""
        parts = [_plural(len(self.images), "image") + ", "
                 + (_plural(len(self.classes), "class", "classes") if self.classes else "unlabelled")]
        if self.n_masks:
            parts.append(f"{self.n_masks} with segmentation masks")
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped_reasons().items())
            parts.append(f"{len(self.skipped)} skipped: {reasons}")
        if self.warnings:
            parts.append(_plural(len(self.warnings), "annotation warning"))
        return "; ".join(parts)


def dataset_fingerprint(records: Iterable[ImageRecord]) -> str:
    """sha256 hex over the sorted (relpath, size_bytes, mtime_ns, label, boxes) of all records.

    Pass readable and skipped records alike: touching, relabelling, adding or removing any file
    changes the result; the same records in any order give the same result. A box enters as its
    :meth:`Box.to_row`, so a known occlusion counts and boxes without one hash as they always did.
    """
    rows = sorted(
        json.dumps([r.relpath, r.size_bytes, r.mtime_ns, r.label, [b.to_row() for b in r.boxes]],
                   separators=(",", ":"), ensure_ascii=True)
        for r in records
    )
    digest = hashlib.sha256(_FINGERPRINT_VERSION.encode())
    for row in rows:
        digest.update(b"\n" + row.encode())
    return digest.hexdigest()


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"
