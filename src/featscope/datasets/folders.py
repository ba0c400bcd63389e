"""Directory layouts: ``imagefolder`` (``root/<class>/**/<image>``) and ``folder`` (unlabelled)."""

from __future__ import annotations

from pathlib import Path

from featscope.datasets.images import IMAGE_EXTENSIONS
from featscope.datasets.scanning import Candidate, DatasetError, Listing, walk_images

__all__ = ["list_folder", "list_imagefolder", "looks_like_imagefolder", "walk_image_dir"]


def walk_image_dir(root: Path) -> list[str]:
    """All image relpaths below the directory ``root``; DatasetError if it has none."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory; the imagefolder and folder formats read a directory of images")
    files = walk_images(root)
    if not files:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetError(f"no image files below {root} (recognised extensions: {exts}); "
                           "check the path, or use format='csv' to list files with other names")
    return files


def looks_like_imagefolder(files: list[str]) -> bool:
    """True when every image lies inside an immediate sub-folder and there are at least two of
    them: a single sub-folder (say ``images/``) is a container, not a class."""
    if any("/" not in f for f in files):
        return False
    return len({f.split("/", 1)[0] for f in files}) >= 2


def list_imagefolder(root: Path, files: list[str] | None = None) -> Listing:
    """Each image's class is its immediate sub-folder below ``root``; images directly in ``root``
    are ignored with a warning."""
    files = walk_image_dir(root) if files is None else files
    loose = [f for f in files if "/" not in f]
    warnings = []
    if loose:
        warnings.append(f"{len(loose)} image file(s) directly in {root} ignored (e.g. {loose[0]}); "
                        "the imagefolder layout is <root>/<class>/<image>")
    candidates = [Candidate(relpath=f, label=f.split("/", 1)[0]) for f in files if "/" in f]
    if not candidates:
        raise DatasetError(f"{root} has no class sub-folders with images; put each class's images "
                           "in <root>/<class>/, or use format='folder' for unlabelled images")
    return Listing(format="imagefolder", root=root, candidates=candidates, warnings=warnings)


def list_folder(root: Path, files: list[str] | None = None) -> Listing:
    """Every image below ``root``, unlabelled."""
    files = walk_image_dir(root) if files is None else files
    return Listing(format="folder", root=root, candidates=[Candidate(relpath=f) for f in files])
