"""Uploaded images: size and pixel limits, full decode check, stored under the data dir with generated names.

The client's file name and path are never used: a file is stored as ``<uuid hex>.<format>`` under
``<data_dir>/uploads``, and found again only by that id.
"""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

from featscope.datasets.images import displayed_size

# Formats accepted: Pillow decoders for ordinary raster images (no PDF/EPS/PSD, which need external tools
# or carry scripts).
ALLOWED_FORMATS: dict[str, str] = {
    "JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif", "TIFF": "tif", "WEBP": "webp", "PPM": "ppm",
    "TGA": "tga", "ICO": "ico",
}
_CHUNK = 1 << 16


class UploadError(Exception):
    """An upload refused; ``status`` is the HTTP status (400, 413, 415), ``detail`` says why and what to do."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class StoredUpload:
    id: str
    format: str
    width: int
    height: int
    size_bytes: int
    path: Path


def save_upload(src: BinaryIO, uploads_dir: Path, *, max_bytes: int, max_pixels: int) -> StoredUpload:
    """Copy ``src`` (at most ``max_bytes``) to a temp file, check it decodes within ``max_pixels``, keep it."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    upload_id = uuid.uuid4().hex
    tmp = uploads_dir / f".incoming-{upload_id}"
    try:
        size = _copy_limited(src, tmp, max_bytes)
        if size == 0:
            raise UploadError(400, "the uploaded file is empty (0 bytes); choose an image file and send it again")
        fmt, width, height = _check_image(tmp, max_pixels)
        final = uploads_dir / f"{upload_id}.{ALLOWED_FORMATS[fmt]}"
        os.replace(tmp, final)
        return StoredUpload(upload_id, fmt, width, height, size, final)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_limited(src: BinaryIO, dst: Path, max_bytes: int) -> int:
    size = 0
    with open(dst, "xb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise UploadError(413, f"the file is larger than the {max_bytes} byte upload limit "
                                       f"(FEATSCOPE_MAX_UPLOAD_BYTES); downscale or recompress it")
            out.write(chunk)
    return size


def _check_image(path: Path, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) after a full decode; the pixel count is checked from the header first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or ""
                width, height = displayed_size(img)  # as the catalog reports sizes: after EXIF orientation
                if fmt not in ALLOWED_FORMATS:
                    raise UploadError(415, f"{fmt or 'this'} images are not accepted; send one of "
                                           f"{', '.join(sorted(ALLOWED_FORMATS))}")
                if width * height > max_pixels:
                    raise UploadError(413, _too_many(f"{width}x{height}", max_pixels))
                if ImageFile.LOAD_TRUNCATED_IMAGES:  # never accept a partial decode
                    raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False in the server")
                img.load()
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, _too_many("its declared size", max_pixels)) from None
    except UnidentifiedImageError:
        raise UploadError(415, "the file is not an image Pillow can read; send "
                               f"{', '.join(sorted(ALLOWED_FORMATS))}") from None
    except (EOFError, OSError, SyntaxError, ValueError) as e:
        if "truncat" in str(e).lower() or isinstance(e, EOFError):
            raise UploadError(400, "the image is truncated (the file ends before its pixel data does); "
                                   "upload the complete file") from None
        raise UploadError(400, f"the image cannot be decoded ({type(e).__name__}: {e}); re-encode it "
                               f"as PNG or JPEG") from None
    return fmt, width, height


def _too_many(what: str, max_pixels: int) -> str:
    return (f"the image is too large ({what} exceeds the {max_pixels} pixel limit, FEATSCOPE_MAX_UPLOAD_PIXELS); "
            f"downscale it")


