"""One entry point, :func:`read_dataset`, over a registry of format readers.

Each format module turns its layout into a :class:`~featscope.datasets.scanning.Listing`;
:func:`read_dataset` picks the reader (or detects the format), then checks the files the same way
for every format. Images are never modified or moved.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from featscope.datasets.coco import list_coco
from featscope.datasets.csvlist import list_csv
from featscope.datasets.folders import list_folder, list_imagefolder, looks_like_imagefolder, walk_image_dir
from featscope.datasets.records import DatasetScan
from featscope.datasets.scanning import VERIFY_MODES, DatasetError, Listing, ProgressFn, finish_scan
from featscope.datasets.voc import list_voc

__all__ = ["FORMATS", "DatasetError", "detect_format", "list_formats", "read_dataset"]

FORMATS = ("imagefolder", "coco", "voc", "folder", "csv")

# format -> reader(path, images_root, split). images_root is used by coco only, split by voc only.
_READERS: dict[str, Callable[[Path, Path | None, str | None], Listing]] = {
    "imagefolder": lambda path, images_root, split: list_imagefolder(path),
    "coco": lambda path, images_root, split: list_coco(path, images_root),
    "voc": lambda path, images_root, split: list_voc(path, split),
    "folder": lambda path, images_root, split: list_folder(path),
    "csv": lambda path, images_root, split: list_csv(path),
}


def list_formats() -> list[str]:
    """Names accepted by ``read_dataset(format=...)`` besides ``"auto"``."""
    return list(FORMATS)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format ``read_dataset(path, format="auto")`` would use (see :func:`read_dataset`)."""
    return _detect(Path(path))[0]


def read_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    images_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    verify: str = "header",
    progress: ProgressFn | None = None,
) -> DatasetScan:
    """Read a dataset's image list, labels and boxes, and check its files.

    ``format="auto"``: a ``.json`` file is COCO, a ``.csv`` file is CSV, a directory with
    ``Annotations/`` and ``JPEGImages/`` is VOC, a directory whose images all lie in two or more
    immediate sub-folders is an imagefolder, any other directory is a plain folder.
    ``images_root`` (COCO only) is where the JSON's file_names point; ``split`` (VOC only) picks
    ``ImageSets/Main/<split>.txt``. ``verify``: ``"none"`` only stats files, ``"header"`` reads
    image headers (catches empty and non-image files), ``"full"`` decodes everything (also catches
    truncated files). Unreadable images land in ``skipped`` with a reason; they never raise.
    ``progress(done, total)`` is called as files are checked.

    Raises :class:`DatasetError` for problems with the dataset as a whole.
    """
    if format != "auto" and format not in _READERS:
        raise DatasetError(f"unknown format {format!r}; use 'auto' or one of: {', '.join(FORMATS)}")
    if verify not in VERIFY_MODES:
        raise DatasetError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    if progress is not None and not callable(progress):
        raise DatasetError("progress must be a callable taking (done, total)")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist; pass a dataset directory, a COCO .json or a .csv file")
    files: list[str] | None = None
    if format == "auto":
        format, files = _detect(path)
    if images_root is not None and format != "coco":
        raise DatasetError(f"images_root applies to the coco format only, and {path} is read as {format}")
    if split is not None and format != "voc":
        raise DatasetError(f"split applies to the voc format only, and {path} is read as {format}")
    if format in ("coco", "csv") and not path.is_file():
        raise DatasetError(f"the {format} format reads a .{'json' if format == 'coco' else 'csv'} file, "
                           f"and {path} is a directory")
    if format in ("imagefolder", "folder") and files is not None:
        listing = (list_imagefolder if format == "imagefolder" else list_folder)(path, files)
    else:
        listing = _READERS[format](path, Path(images_root) if images_root is not None else None, split)
    return finish_scan(listing, verify, progress)


def _detect(path: Path) -> tuple[str, list[str] | None]:
    """(format, image relpaths if a directory walk was needed to decide)."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist; pass a dataset directory, a COCO .json or a .csv file")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "coco", None
        if suffix == ".csv":
            return "csv", None
        raise DatasetError(f"cannot tell the format of {path}: files are read as coco (.json) or csv (.csv), "
                           f"directories as voc, imagefolder or folder; pass format= one of {', '.join(FORMATS)}")
    if (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return "voc", None
    files = walk_image_dir(path)
    return ("imagefolder" if looks_like_imagefolder(files) else "folder"), files
