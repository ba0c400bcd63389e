"""Decode any image file the readers meet into 8-bit RGB, or say precisely why it cannot be.

Every backbone sees the same pixels only if every caller decodes the same way, so this is the one
place where orientation, bit depth, palettes and transparency are resolved:

* EXIF (and XMP) orientation is applied, so width/height are the ones a viewer shows.
* Alpha (RGBA, LA, PA, a palette or single colour marked transparent) is composited on white.
* 16-bit greyscale is scaled by 255/65535 (``(v + 128) // 257``), never clipped; 32-bit integer
  data is taken as 16-bit when it fits in 0..65535 (Pillow's mode for 16-bit PGM/PNG data) and
  stretched min..max otherwise; float data in 0..1 is scaled by 255, any other range stretched.
* CMYK, YCbCr, bilevel and the rest go through Pillow's own conversion; ICC profiles are not applied.
* Multi-frame files (GIF, TIFF, WebP) contribute their first frame.

Files are only ever opened for reading.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "displayed_size", "load_rgb", "probe_image"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff",
     ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico"}
)

# Short reason categories: the first part of ImageRecord.error, counted by DatasetScan.summary().
NOT_FOUND = "file not found"
UNREADABLE = "unreadable file"
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
TOO_LARGE = "too large"
UNDECODABLE = "cannot be decoded"

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class ImageDecodeError(Exception):
    """A file that cannot be turned into an RGB image; ``reason`` is a short category, ``detail``
    says what went wrong and what to do about it."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")

    def __reduce__(self):  # keep picklable for worker processes despite the 3-argument __init__
        return (type(self), (self.path, self.reason, self.detail))


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Fully decode ``path`` into an upright 8-bit RGB image (see the module docstring for the rules).

    Raises :class:`ImageDecodeError`, and nothing else, for missing, empty, truncated, unknown,
    oversized (decompression-bomb) or otherwise undecodable files.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            _check_pixel_count(path, img.size)
            img.load()
            upright = ImageOps.exif_transpose(img)
        return to_rgb(upright)
    except ImageDecodeError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on malformed input
        raise _classify(path, exc) from exc


def probe_image(path: str | os.PathLike[str], full: bool = False) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation.

    Reads only the header unless ``full`` (then decodes everything via :func:`load_rgb`, which is
    the only way to catch truncated files). A PNG whose EXIF chunk follows the pixel data is seen
    as unrotated by the header probe. Raises :class:`ImageDecodeError`.
    """
    if full:
        return load_rgb(path).size
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            _check_pixel_count(path, img.size)
            return displayed_size(img)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise _classify(path, exc) from exc


def displayed_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as a viewer shows it: swapped when its EXIF orientation turns it a
    quarter (featscope's one convention for image sizes: catalog rows, uploads, maps)."""
    # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk; the
    # base implementation reads only what the header parse already collected.
    exif = Image.Image.getexif(img)
    width, height = img.size
    if exif.get(_ORIENTATION_TAG) in _SWAPS_AXES:
        width, height = height, width
    return width, height


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageDecodeError(path, NOT_FOUND, "no such file; check the path or the dataset root") from None
    except OSError as exc:
        raise ImageDecodeError(path, UNREADABLE, f"{exc.strerror or exc}; check permissions") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ImageDecodeError(path, UNREADABLE, f"invalid path ({exc})") from None
    if not path.is_file():
        raise ImageDecodeError(path, UNREADABLE, "not a regular file")
    if st.st_size == 0:
        raise ImageDecodeError(path, EMPTY, "the file has 0 bytes; copy it again or delete it")


def _check_pixel_count(path: Path, size: tuple[int, int]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise ImageDecodeError(path, TOO_LARGE, _too_large_detail(f"{size[0]}x{size[1]} pixels"))


def _too_large_detail(what: str) -> str:
    return (f"{what} exceeds PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} (decompression-bomb "
            "guard); if the image is genuine, raise that limit or downscale the file")


def _classify(path: Path, exc: Exception) -> ImageDecodeError:
    """Map a Pillow/OS exception onto a reason category with an actionable detail."""
    message = str(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return ImageDecodeError(path, TOO_LARGE, _too_large_detail("the image"))
    if isinstance(exc, UnidentifiedImageError):
        return ImageDecodeError(
            path, NOT_AN_IMAGE, f"Pillow does not recognise the content (extension {path.suffix or 'none'}); "
            "check the file or remove it from the dataset")
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return ImageDecodeError(path, TRUNCATED, "the file ends before the image data does; copy or download it again")
    if isinstance(exc, PermissionError):
        return ImageDecodeError(path, UNREADABLE, f"{exc.strerror or exc}; check permissions")
    return ImageDecodeError(path, UNDECODABLE, f"{type(exc).__name__}: {message}; re-encode or remove the file")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded PIL image (grey, 16-bit, palette, CMYK, alpha...) as 8-bit RGB, by the same rules as load_rgb."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(img), mode)).convert("RGB")
    if "transparency" in img.info and mode in ("1", "L", "P", "RGB"):
        img = img.convert("RGBA")
    elif mode in _ALPHA_MODES:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer or float greyscale -> uint8 by the rules in the module docstring."""
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535):
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "F" and data.size and data.min() >= 0.0 and data.max() <= 1.0:
        return np.rint(data * 255.0).astype(np.uint8)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.rint((data - lo) * (255.0 / (hi - lo))).astype(np.uint8)
