"""Maps: activation heatmap and mask-out of a catalog image or an upload, as jobs; the overlay PNG of a done job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import Response

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import HeatmapIn, Id, JobOut, MaskoutIn
from featscope.server.deps import QueueDep, SettingsDep, WorkspaceDep
from featscope.worker.map_kinds import upload_path
from featscope.worker import jobs
from featscope.workspace.backbones import get_backbone_row
from featscope.workspace.maps import resolve_image

router = APIRouter(prefix="/maps", tags=["maps"])


def _submit(ws, queue, settings, kind: str, params: dict) -> JobOut:
    get_backbone_row(ws.ctx, params["backbone"])  # 404 now rather than a failed job later
    if params.get("image_id"):
        resolve_image(ws.ctx, params["image_id"])
    if params.get("upload_id"):
        upload_path(settings.uploads_dir, params["upload_id"])  # 404 now rather than a failed job later
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
def overlay(ws: WorkspaceDep, job_id: Annotated[Id, Path(description="A heatmap or maskout job.")]) -> Response:
    """The overlay PNG of a finished map job."""
    job = jobs.get_job(ws.ctx, job_id)
    if job.kind not in ("heatmap", "maskout"):
        raise HTTPException(400, f"job {job_id} is a {job.kind} job, not a map; use a heatmap or maskout job's id")
    if job.state != "done":
        raise HTTPException(409, f"job {job_id} is {job.state} ({job.message}); poll GET /api/v1/jobs/{job_id} "
                                 f"until it is done" + (f": {job.error}" if job.error else ""))
    art = ws.ctx.store.get("map", job.result["artifact_key"])
    return Response(art.blob("overlay.png"), media_type="image/png")
