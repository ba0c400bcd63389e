"""Pascal VOC layout (``Annotations/<id>.xml`` + ``JPEGImages/``) -> a Listing.

VOC ``bndbox`` values are 1-based, inclusive pixel indices: an object covering the first ten
columns has ``xmin=1, xmax=10``. As pixel-edge xyxy that is ``x0 = xmin - 1, x1 = xmax`` (so width
``xmax - xmin + 1``), the same conversion Detectron2 uses. An image's label is the name of its
largest object; ``classes`` are all object names seen. With ``split``, the ids come from
``ImageSets/Main/<split>.txt``; otherwise every ``Annotations/*.xml`` is read. An XML file that
cannot be parsed skips its image with the parse error; the stdlib parser is used because the
bundled expat (>= 2.4.1) refuses entity-expansion bombs and ElementTree never fetches external
entities.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from featscope.datasets.images import IMAGE_EXTENSIONS, NOT_FOUND
from featscope.datasets.scanning import Candidate, DatasetError, Listing, RawBox

__all__ = ["BAD_ANNOTATION", "list_voc"]

BAD_ANNOTATION = "bad annotation"
_STEM_EXTENSIONS = (".jpg", ".jpeg", ".png") + tuple(sorted(IMAGE_EXTENSIONS - {".jpg", ".jpeg", ".png"}))


def list_voc(root: Path, split: str | None = None) -> Listing:
    """Parse every annotation of ``root`` (or of one split) into candidates below ``root``."""
    for sub in ("Annotations", "JPEGImages"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root} has no {sub}/ directory; a VOC dataset holds Annotations/*.xml "
                               "and JPEGImages/ (point at the VOC2007-style folder itself)")
    ids = _split_ids(root, split) if split is not None else sorted(
        p.stem for p in (root / "Annotations").glob("*.xml") if not p.name.startswith("."))
    if not ids:
        raise DatasetError(f"{root / 'Annotations'} holds no .xml files; check the path")
    candidates: list[Candidate] = []
    warnings: list[str] = []
    names: set[str] = set()
    for image_id in ids:
        cand = _read_annotation(root, image_id, warnings)
        names.update(b.label for b in cand.boxes)
        candidates.append(cand)
    seg = root / "SegmentationClass"
    masked = {c.relpath for c in candidates if (seg / f"{Path(c.relpath).stem}.png").is_file()} if seg.is_dir() else set()
    return Listing(format="voc", root=root, candidates=candidates, warnings=warnings,
                   classes=sorted(names), annotations=root / "Annotations", masked=masked)


def _split_ids(root: Path, split: str) -> list[str]:
    split_dir = root / "ImageSets" / "Main"
    split_file = split_dir / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in split_dir.glob("*.txt") if "_" not in p.stem) if split_dir.is_dir() else []
        raise DatasetError(f"no split file {split_file}; available splits: {', '.join(available) or 'none'} "
                           "(or leave split unset to read every annotation)")
    ids = []
    for line in split_file.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if tokens:
            ids.append(tokens[0])
    return ids


def _image_relpath(root: Path, image_id: str, filename: str | None) -> str | None:
    """JPEGImages/<filename> if that exists, else JPEGImages/<id>.<ext> for the first ext that does."""
    if filename and "/" not in filename and (root / "JPEGImages" / filename).is_file():
        return f"JPEGImages/{filename}"
    for ext in _STEM_EXTENSIONS:
        if (root / "JPEGImages" / f"{image_id}{ext}").is_file():
            return f"JPEGImages/{image_id}{ext}"
    return None


def _read_annotation(root: Path, image_id: str, warnings: list[str]) -> Candidate:
    xml_rel = f"Annotations/{image_id}.xml"
    if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
        return Candidate(relpath=xml_rel, error=f"{BAD_ANNOTATION}: image id {image_id!r} in the split "
                                                "file is not a plain file stem; fix the split file")
    try:
        tree = ET.parse(root / xml_rel)
    except FileNotFoundError:
        rel = _image_relpath(root, image_id, None) or xml_rel
        return Candidate(relpath=rel, error=f"{NOT_FOUND}: {xml_rel} does not exist; add it or drop "
                                            f"{image_id} from the split file")
    except (ET.ParseError, UnicodeDecodeError, OSError) as exc:
        rel = _image_relpath(root, image_id, None) or xml_rel
        return Candidate(relpath=rel, error=f"{BAD_ANNOTATION}: {xml_rel}: {exc}; fix the XML")
    ann = tree.getroot()
    filename = (ann.findtext("filename") or "").strip() or None
    rel = _image_relpath(root, image_id, filename)
    if rel is None:
        shown = filename or f"{image_id}.jpg"
        return Candidate(relpath=f"JPEGImages/{shown}",
                         error=f"{NOT_FOUND}: JPEGImages/{shown} does not exist (named by {xml_rel})")
    boxes = []
    for k, obj in enumerate(ann.findall("object")):
        box = _object_box(obj, f"{xml_rel}: object {k}", warnings)
        if box is not None:
            boxes.append(box)
    return Candidate(relpath=rel, boxes=boxes, declared_size=_declared_size(ann))


def _declared_size(ann: ET.Element) -> tuple[int, int] | None:
    try:
        width, height = int(ann.findtext("size/width") or ""), int(ann.findtext("size/height") or "")
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _object_box(obj: ET.Element, where: str, warnings: list[str]) -> RawBox | None:
    name = (obj.findtext("name") or "").strip()
    if not name:
        warnings.append(f"{where}: no <name>; dropped")
        return None
    try:
        xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{tag}") or "nan")
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        xmin = ymin = xmax = ymax = float("nan")
    if any(v != v for v in (xmin, ymin, xmax, ymax)):
        warnings.append(f"{where} ({name}): <bndbox> needs numeric xmin, ymin, xmax, ymax; dropped")
        return None
    return RawBox(name, xmin - 1.0, ymin - 1.0, xmax, ymax, f"{where} ({name})",
                  as_written=f"bndbox xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} (1-based, inclusive)")
