"""Uploads: an image file for the map routes, checked (size, pixels, full decode) and stored under a uuid."""

from __future__ import annotations

from fastapi import APIRouter, File, UploadFile, status

from featscope.server.api.schemas import UploadOut
from featscope.server.deps import SettingsDep
from featscope.server.uploads import save_upload

router = APIRouter(prefix="/uploads", tags=["uploads"])


@router.post("", response_model=UploadOut, status_code=status.HTTP_201_CREATED)
def upload(settings: SettingsDep,
           file: UploadFile = File(description="An image (JPEG, PNG, BMP, GIF, TIFF, WebP, PPM, TGA, ICO).")) -> UploadOut:
    """Store an uploaded image under a generated id (the client's file name is ignored). A body over the
    limit is refused before it is read (``featscope.server.gate``)."""
    stored = save_upload(file.file, settings.uploads_dir, max_bytes=settings.max_upload_bytes,
                         max_pixels=settings.max_upload_pixels)
    return UploadOut(id=stored.id, format=stored.format, width=stored.width, height=stored.height,
                     size_bytes=stored.size_bytes)
