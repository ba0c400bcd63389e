"""Backbones: list, get, register (weights only from allowed roots), their taps."""

from __future__ import annotations

import dataclasses

from typing import Annotated

from typing import Any

from fastapi import APIRouter, Path, status
from fastapi.responses import JSONResponse

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import BackboneAdd, BackboneOut, JobOut, Page, Ref, TapLayerOut, TapsOut
from featscope.server.deps import Limit, Offset, QueueDep, SettingsDep, WorkspaceDep, allowed_path
from featscope.worker import jobs
from featscope.workspace.backbones import BackboneInfo, get_backbone_row, recorded_taps

router = APIRouter(prefix="/backbones", tags=["backbones"])


def _out(info: BackboneInfo) -> BackboneOut:
    return BackboneOut(**dataclasses.asdict(info))


@router.get("", response_model=Page[BackboneOut])
def list_backbones(ws: WorkspaceDep, limit: Limit = 50, offset: Offset = 0) -> Page[BackboneOut]:
    """Registered backbones by name."""
    infos = ws.backbones()
    return Page(items=[_out(b) for b in infos[offset:offset + limit]], total=len(infos), limit=limit, offset=offset)


@router.get("/{backbone}", response_model=BackboneOut)
def get_one(ws: WorkspaceDep, backbone: Annotated[Ref, Path(description="Name or id.")]) -> BackboneOut:
    """One backbone by name or id."""
    return _out(BackboneInfo.of(get_backbone_row(ws.ctx, backbone)))


@router.post("", response_model=BackboneOut, status_code=status.HTTP_201_CREATED)
def add(body: BackboneAdd, ws: WorkspaceDep, settings: SettingsDep) -> BackboneOut:
    """Register a backbone; weight files must lie under an allowed root (loaded with weights_only)."""
    spec = body.spec
    source, _, target = spec.partition(":")
    if source == "checkpoint":
        spec = f"checkpoint:{allowed_path(settings, target, 'checkpoint')}"
    weights = allowed_path(settings, body.weights, "weights file") if body.weights else None
    info = ws.add_backbone(spec, name=body.name, weights=weights, weights_format=body.weights_format, arch=body.arch,
                           random_init=body.random_init, seed=body.seed)
    return _out(info)


@router.get("/{backbone}/taps", response_model=TapsOut,
            responses={202: {"model": JobOut, "description": "Registered by an older featscope, so its taps' "
                                                             "shapes are not recorded yet: the job recording them."}})
def taps(ws: WorkspaceDep, queue: QueueDep, backbone: Annotated[Ref, Path(description="Name or id.")]) -> Any:
    """The layer taps a backbone offers, the study's aliases and each tap's shape and pooled lengths, as
    recorded at registration (the network is not loaded here)."""
    row = get_backbone_row(ws.ctx, backbone)
    infos = recorded_taps(row)
    if infos is None:
        job = jobs.submit(ws.ctx, "backbone-taps", {"backbone": row.id}, queue=queue)
        return JSONResponse(job_out(job).model_dump(), status_code=status.HTTP_202_ACCEPTED)
    return TapsOut(backbone=row.name, taps=[t.name for t in infos],
                   aliases={a: t.name for t in infos for a in t.aliases}, input_size=row.network["input_size"],
                   layers=[TapLayerOut(**dataclasses.asdict(t)) for t in infos])
