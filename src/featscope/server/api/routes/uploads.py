"""Uploads: an image file for the map routes, checked (size, pixels, full decode) and stored under a uuid."""

from __future__ import annotations

from fastapi import APIRouter, File, Request, UploadFile, status

from featscope.server.api.schemas import UploadOut
from featscope.server.deps import SettingsDep
from featscope.server.uploads import UploadError, save_upload

router = APIRouter(prefix="/uploads", tags=["uploads"])


@router.post("", response_model=UploadOut, status_code=status.HTTP_201_CREATED)
def upload(request: Request, settings: SettingsDep,
           file: UploadFile = File(description="An image (JPEG, PNG, BMP, GIF, TIFF, WebP, PPM, TGA, ICO).")) -> UploadOut:
    """Store an uploaded image under a generated id (the client's file name is ignored)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 64 * 1024:
        raise UploadError(413, f"the request is larger than the {settings.max_upload_bytes} byte upload limit "
                               f"(FEATSCOPE_MAX_UPLOAD_BYTES); downscale or recompress the image")
    stored = save_upload(file.file, settings.uploads_dir, max_bytes=settings.max_upload_bytes,
                         max_pixels=settings.max_upload_pixels)
    return UploadOut(id=stored.id, format=stored.format, width=stored.width, height=stored.height,
                     size_bytes=stored.size_bytes)
