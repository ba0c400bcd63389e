"""Thumbnails of catalog images, made once and kept on disk under ``<data_dir>/thumbnails``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from PIL import Image

from featscope.datasets.images import load_rgb

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


def thumbnail(src: Path, cache_dir: Path, stamp: str, size: int, fmt: str = "jpeg") -> Path:
    """A ``fmt`` thumbnail of ``src`` fitting ``size`` x ``size``; ``stamp`` identifies the source's version."""
    out = cache_dir / f"{stamp}-{size}.{'jpg' if fmt == 'jpeg' else 'png'}"
    if out.is_file():
        return out
    img = load_rgb(src)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        img.save(tmp, format=fmt.upper(), **({"quality": 85} if fmt == "jpeg" else {}))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
