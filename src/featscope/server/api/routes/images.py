"""Images of a data set: metadata pages (with each image's boxes and their occlusion), one image's metadata, a
cached thumbnail, the original file."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse

from featscope.catalog import Dataset, Image
from featscope.server.api.schemas import BoxOut, Id, ImageOut, Page, Ref
from featscope.server.deps import Limit, Offset, SettingsDep, WorkspaceDep
from featscope.server.settings import ServerSettings
from featscope.server.thumbnails import MEDIA_TYPES, thumbnail
from featscope.workspace import NotFound, Workspace
from featscope.workspace.datasets import get_dataset, image_boxes

router = APIRouter(prefix="/images", tags=["images"])
IMAGE_CONTENT = {200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "The image."}}


def _row(ws: Workspace, image_id: int) -> tuple[Image, Dataset]:
    with ws.ctx.session() as s:
        row = s.get(Image, image_id)
        if row is None:
            raise NotFound(f"no image {image_id}; GET /api/v1/images?dataset=NAME lists image ids")
        return row, s.get(Dataset, row.dataset_id)


def _out(im: Image) -> ImageOut:
    return ImageOut(id=im.id, dataset_id=im.dataset_id, relpath=im.relpath, label=im.label, width=im.width,
                    height=im.height, n_boxes=len(im.boxes or []), error=im.error,
                    boxes=[BoxOut(label=b.label, box=[b.x0, b.y0, b.x1, b.y1], occlusion=b.occlusion)
                           for b in image_boxes(im)])


def _file(settings: ServerSettings, im: Image, ds: Dataset) -> FsPath:
    """The image's file; it must resolve under its data set's root or an allowed root (no symlink escape)."""
    root = FsPath(os.path.realpath(ds.root))
    real = FsPath(os.path.realpath(root / im.relpath))
    if not (real.is_relative_to(root) or any(real.is_relative_to(r) for r in settings.allowed_roots)):
        raise HTTPException(403, f"image {im.id} resolves outside its data set's root; re-register the data set "
                                 f"without links that leave it")
    if not real.is_file():
        raise HTTPException(404, f"image {im.id}'s file {im.relpath} is gone from {ds.root}; re-register the data set")
    return real


@router.get("", response_model=Page[ImageOut])
def list_images(ws: WorkspaceDep, dataset: Annotated[Ref, Query(description="Data set id, name or name@version.")],
                limit: Limit = 50, offset: Offset = 0, skipped: bool = False) -> Page[ImageOut]:
    """A page of a data set's images in embedding-row order (skipped: its unreadable files)."""
    ds = get_dataset(ws.ctx, dataset)
    with ws.ctx.session() as s:
        q = s.query(Image).filter(Image.dataset_id == ds.id)
        q = q.filter(Image.position.is_(None)).order_by(Image.relpath) if skipped else \
            q.filter(Image.position.is_not(None)).order_by(Image.position)
        items = [_out(im) for im in q.offset(offset).limit(limit)]
    return Page(items=items, total=ds.n_skipped if skipped else ds.n_images, limit=limit, offset=offset)


@router.get("/{image_id}", response_model=ImageOut)
def get_image(ws: WorkspaceDep, image_id: Annotated[Id, Path()]) -> ImageOut:
    """One image's metadata."""
    return _out(_row(ws, image_id)[0])


@router.get("/{image_id}/thumbnail", response_class=FileResponse, responses=IMAGE_CONTENT)
def get_thumbnail(ws: WorkspaceDep, settings: SettingsDep, image_id: Annotated[Id, Path()],
                  size: int = Query(128, ge=16, le=2048, description="Longest edge in pixels (capped by the server)."),
                  format: Literal["jpeg", "png"] = "jpeg") -> FileResponse:
    """A thumbnail (JPEG or PNG, longest edge at most size), made once and cached on disk."""
    im, ds = _row(ws, image_id)
    if im.error is not None:
        raise HTTPException(422, f"image {image_id} could not be decoded when it was registered: {im.error}")
    size = min(size, settings.thumbnail_max)
    src = _file(settings, im, ds)
    out = thumbnail(src, settings.thumbs_dir, f"{im.id}-{im.size_bytes}-{im.mtime_ns}", size, format)
    return FileResponse(out, media_type=MEDIA_TYPES[format], headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{image_id}/file", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}, "image/*": {}}, "description": "The file."}})
def get_file(ws: WorkspaceDep, settings: SettingsDep, image_id: Annotated[Id, Path()]) -> FileResponse:
    """The original image file, as registered."""
    im, ds = _row(ws, image_id)
    src = _file(settings, im, ds)
    media = mimetypes.guess_type(src.name)[0] or "application/octet-stream"
    return FileResponse(src, media_type=media)
