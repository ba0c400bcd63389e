"""Backbones: list, get, register (weights only from allowed roots), their taps."""

from __future__ import annotations

import dataclasses

from typing import Annotated

from fastapi import APIRouter, Path, status

from featscope.server.api.schemas import BackboneAdd, BackboneOut, Page, Ref, TapsOut
from featscope.server.deps import Limit, Offset, SettingsDep, WorkspaceDep, allowed_path
from featscope.workspace.backbones import BackboneInfo, get_backbone_row, open_backbone

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


@router.get("/{backbone}/taps", response_model=TapsOut)
def taps(ws: WorkspaceDep, backbone: Annotated[Ref, Path(description="Name or id.")]) -> TapsOut:
    """The layer taps a backbone offers and the study's aliases for them."""
    row = get_backbone_row(ws.ctx, backbone)
    bb = open_backbone(ws.ctx, row.id)
    return TapsOut(backbone=row.name, taps=list(bb.taps), aliases=dict(bb.aliases))
