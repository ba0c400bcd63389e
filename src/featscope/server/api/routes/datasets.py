"""Data sets: list, get, add from a path under an allowed root, generate the synthetic one."""

from __future__ import annotations

import dataclasses

from typing import Annotated

from fastapi import APIRouter, Path, status

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import DatasetAdd, DatasetOut, JobOut, Page, Ref, SynthIn
from featscope.server.deps import Limit, Offset, QueueDep, SettingsDep, WorkspaceDep, allowed_path
from featscope.worker import jobs
from featscope.workspace.datasets import DatasetInfo, get_dataset

router = APIRouter(prefix="/datasets", tags=["datasets"])


def dataset_out(info: DatasetInfo) -> DatasetOut:
    return DatasetOut(**dataclasses.asdict(info))


@router.get("", response_model=Page[DatasetOut])
def list_datasets(ws: WorkspaceDep, limit: Limit = 50, offset: Offset = 0, all_versions: bool = False) -> Page[DatasetOut]:
    """Registered data sets (newest version of each name unless all_versions)."""
    infos = ws.datasets(all_versions=all_versions)
    return Page(items=[dataset_out(d) for d in infos[offset:offset + limit]], total=len(infos), limit=limit,
                offset=offset)


@router.get("/{dataset}", response_model=DatasetOut)
def get_one(ws: WorkspaceDep, dataset: Annotated[Ref, Path(description="Id, name or name@version.")]) -> DatasetOut:
    """One data set by id, name or name@version."""
    return dataset_out(DatasetInfo.of(get_dataset(ws.ctx, dataset)))


@router.post("", response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def add(body: DatasetAdd, ws: WorkspaceDep, settings: SettingsDep) -> DatasetOut:
    """Register a data set from a path under an allowed root, in the request (existing: returned unchanged; large folders: POST /datasets/scan)."""
    path = allowed_path(settings, body.path, "data set path")
    images_root = allowed_path(settings, body.images_root, "images root") if body.images_root else None
    info = ws.add_dataset(path, name=body.name, format=body.format, images_root=images_root, split=body.split)
    return dataset_out(info)


@router.post("/scan", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def scan(body: DatasetAdd, ws: WorkspaceDep, settings: SettingsDep, queue: QueueDep) -> JobOut:
    """Register a data set in a worker (large folders): the job's progress counts files, its result names the set."""
    params = body.model_dump(exclude_none=True)
    params["path"] = str(allowed_path(settings, body.path, "data set path"))
    if body.images_root:
        params["images_root"] = str(allowed_path(settings, body.images_root, "images root"))
    return job_out(jobs.submit(ws.ctx, "dataset-add", params, queue=queue))


@router.post("/synth", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def synth(body: SynthIn, ws: WorkspaceDep, queue: QueueDep) -> JobOut:
    """Generate the synthetic shapes data set in the data dir and register both halves, in a worker: the job's
    progress counts images, its result names the two data sets."""
    return job_out(jobs.submit(ws.ctx, "dataset-synth", body.model_dump(), queue=queue))
