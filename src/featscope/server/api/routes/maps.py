"""Maps: activation heatmap and mask-out of a catalog image or an upload, as jobs; the overlay PNG of a done job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import Response

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import HeatmapIn, Id, JobOut, MapScale, MaskoutIn
from featscope.server.deps import QueueDep, SettingsDep, WorkspaceDep
from featscope.worker.map_kinds import map_image, upload_path
from featscope.worker import jobs
from featscope.workspace import maps
from featscope.workspace.map_requests import check_heatmap, check_maskout, resolve_image

router = APIRouter(prefix="/maps", tags=["maps"])
_CHECKS = {"heatmap": check_heatmap, "maskout": check_maskout}


def _submit(ws, queue, settings, kind: str, params: dict) -> JobOut:
    """Check everything the catalog can tell (backbone, image, tap, head, target, sizes): a 4xx now rather
    than a failed job later."""
    image = upload_path(settings.uploads_dir, params["upload_id"]) if params.get("upload_id") else params["image_id"]
    extra = {k: v for k, v in params.items() if k not in ("backbone", "image_id", "upload_id")}
    if "mean_pixel" in extra:
        extra["mean_pixel"] = tuple(extra["mean_pixel"])
    _CHECKS[kind](ws.ctx, params["backbone"], image, **extra)
    return job_out(jobs.submit(ws.ctx, kind, params, queue=queue))


@router.post("/heatmap", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def heatmap(body: HeatmapIn, ws: WorkspaceDep, queue: QueueDep, settings: SettingsDep) -> JobOut:
    """Queue an activation (channel mean) or Grad-CAM-family map of an image."""
    return _submit(ws, queue, settings, "heatmap", body.job_params())


@router.post("/maskout", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def maskout(body: MaskoutIn, ws: WorkspaceDep, queue: QueueDep, settings: SettingsDep) -> JobOut:
    """Queue a mask-out probability map of a target class over an image."""
    return _submit(ws, queue, settings, "maskout", body.job_params())


@router.get("/{job_id}/overlay.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "The map drawn on the image."}})
def overlay(ws: WorkspaceDep, job_id: Annotated[Id, Path(description="A heatmap or maskout job.")],
            scale: MapScale | None = Query(None, description="Mask-out maps: colours on the map's own range "
                                                             "(relative), 0..1 (absolute) or the fall from the "
                                                             "unmasked probability (drop); default: the job's.")) \
        -> Response:
    """The overlay PNG of a finished map job (mask-out maps with a colour bar stating their scale)."""
    job = jobs.get_job(ws.ctx, job_id)
    if job.kind not in ("heatmap", "maskout"):
        raise HTTPException(400, f"job {job_id} is a {job.kind} job, not a map; use a heatmap or maskout job's id")
    if job.state != "done":
        raise HTTPException(409, f"job {job_id} is {job.state} ({job.message}); poll GET /api/v1/jobs/{job_id} "
                                 f"until it is done" + (f": {job.error}" if job.error else ""))
    if scale is not None and job.kind != "maskout":
        raise HTTPException(400, "scale applies to mask-out maps; a heatmap is drawn on its own range")
    image, _, _ = resolve_image(ws.ctx, map_image(ws.ctx, job.params))
    png = maps.redraw(ws.ctx, job.result["artifact_key"], image, cmap=job.params.get("cmap"),
                      scale=scale or job.params.get("scale"))
    return Response(png, media_type="image/png")
