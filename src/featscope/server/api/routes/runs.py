"""Training runs: start one (a job), list, show with metrics, a detection run's boxes, cancel."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import FinetuneIn, Id, JobOut, Page, RunDetailOut, RunOut, TrainIn
from featscope.server.deps import Limit, Offset, QueueDep, WorkspaceDep
from featscope.worker import jobs
from featscope.workspace import training

router = APIRouter(prefix="/runs", tags=["runs"])


def run_out(info) -> RunOut:
    """A run as the API gives it; a detection fine-tuning run's Table 3 (``result.eval.missed_by_occlusion``)
    recounted from its ``detections.json``, so it matches the dashboard and ``runs show``."""
    from featscope.workspace.detection_errors import recounted_run

    return RunOut(**{k: v for k, v in dataclasses.asdict(recounted_run(info)).items() if k in RunOut.model_fields})


@router.post("", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def start(body: TrainIn, ws: WorkspaceDep, queue: QueueDep) -> JobOut:
    """Queue a pre-training run (the data, classes and parameters are checked first)."""
    training.plan(ws.ctx, body.task, body.dataset, preset=body.preset, init=body.init,
                  test_dataset=body.val_dataset, classes=body.classes, params=body.train_params())
    return job_out(jobs.submit(ws.ctx, "train", body.job_params(), queue=queue))


@router.post("/finetune", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def finetune(body: FinetuneIn, ws: WorkspaceDep, queue: QueueDep) -> JobOut:
    """Queue a fine-tuning run of a registered backbone (checked first)."""
    training.plan(ws.ctx, f"finetune-{body.task}", body.dataset, preset=body.preset, init=body.backbone,
                  test_dataset=body.test_dataset, classes=body.classes, params=body.params)
    return job_out(jobs.submit(ws.ctx, "finetune", body.model_dump(), queue=queue))


@router.get("", response_model=Page[RunOut])
def list_runs(ws: WorkspaceDep, limit: Limit = 50, offset: Offset = 0,
              task: Annotated[str | None, Query(pattern="^(cls|det|finetune-cls|finetune-det|finetune-seg)$")] = None
              ) -> Page[RunOut]:
    """Training runs, newest first, optionally of one task."""
    infos = training.list_runs(ws.ctx, task)
    return Page(items=[run_out(i) for i in infos[offset:offset + limit]], total=len(infos), limit=limit,
                offset=offset)


@router.get("/{run_id}", response_model=RunDetailOut)
def show(ws: WorkspaceDep, run_id: Annotated[Id, Path()],
         max_points: int = Query(500, ge=2, le=100_000, description="Most training rows returned (evenly thinned).")
         ) -> RunDetailOut:
    """One run with its metrics (training curve and evaluations)."""
    info = training.get_run(ws.ctx, run_id)
    rows = training.run_metrics(ws.ctx, run_id)
    train_rows = [r for r in rows if r.get("kind") == "train"]
    if len(train_rows) > max_points:
        step = len(train_rows) / max_points
        keep = {id(train_rows[min(len(train_rows) - 1, round(i * step))]) for i in range(max_points)}
        keep.add(id(train_rows[-1]))
        rows = [r for r in rows if r.get("kind") != "train" or id(r) in keep]
    return RunDetailOut(**run_out(info).model_dump(), metrics=rows)


@router.get("/{run_id}/detections")
def detections(ws: WorkspaceDep, run_id: Annotated[Id, Path()]) -> dict[str, Any]:
    """A detection fine-tuning run's test-set boxes: per image its ground truth (label, box, occlusion or null)
    and predictions scoring at least ``score_floor`` (404 for runs without)."""
    return training.run_detections(ws.ctx, run_id)


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel(ws: WorkspaceDep, queue: QueueDep, run_id: Annotated[Id, Path()]) -> RunOut:
    """Stop a running run within seconds (it keeps its last checkpoint; starting it again continues from there)."""
    info = training.cancel_run(ws.ctx, run_id)
    if info.job_id:
        jobs.cancel_job(ws.ctx, info.job_id, queue=queue)
    return run_out(training.get_run(ws.ctx, run_id))
