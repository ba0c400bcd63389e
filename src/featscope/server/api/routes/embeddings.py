"""Embedding sets: list, get, request an extraction (a job), nearest-neighbour queries (a cached read)."""

from __future__ import annotations

import dataclasses

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import EmbeddingSetOut, ExtractIn, Id, JobOut, NeighbourOut, NeighboursOut, Page, Ref
from featscope.server.deps import Limit, Offset, QueueDep, WorkspaceDep
from featscope.worker import jobs
from featscope.workspace.embeddings import get_embedding_set
from featscope.workspace.backbones import get_backbone_row, tap_choices
from featscope.workspace.datasets import get_dataset

router = APIRouter(prefix="/embedding-sets", tags=["embeddings"])


def _out(info) -> EmbeddingSetOut:
    return EmbeddingSetOut(**{k: v for k, v in dataclasses.asdict(info).items() if k in EmbeddingSetOut.model_fields})


@router.get("", response_model=Page[EmbeddingSetOut])
def list_sets(ws: WorkspaceDep, limit: Limit = 50, offset: Offset = 0, backbone: Ref | None = None,
              dataset: Ref | None = None) -> Page[EmbeddingSetOut]:
    """Cached embedding sets, optionally of one backbone and/or data set."""
    infos = ws.embedding_sets(backbone=backbone, dataset=dataset)
    return Page(items=[_out(i) for i in infos[offset:offset + limit]], total=len(infos), limit=limit, offset=offset)


@router.get("/{set_id}", response_model=EmbeddingSetOut)
def get_one(ws: WorkspaceDep, set_id: Annotated[Id, Path()]) -> EmbeddingSetOut:
    """One embedding set."""
    return _out(get_embedding_set(ws.ctx, set_id))


@router.post("/extract", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def extract(body: ExtractIn, ws: WorkspaceDep, queue: QueueDep) -> JobOut:
    """Queue an extraction job (the same request while one runs returns that job)."""
    row = get_backbone_row(ws.ctx, body.backbone)  # 404 now, not a failed job later
    get_dataset(ws.ctx, body.dataset)
    names, aliases = tap_choices(row)  # as recorded at registration
    unknown = [t for t in (body.taps or []) if t not in names and t not in aliases]
    if unknown:
        raise ValueError(f"backbone {row.name!r} has no tap {unknown[0]!r}; it offers {', '.join(names)} "
                         f"and the aliases {', '.join(aliases)} (GET /api/v1/backbones/{row.name}/taps)")
    params = body.model_dump(exclude_none=True)
    return job_out(jobs.submit(ws.ctx, "extract", params, queue=queue))


@router.get("/{set_id}/neighbours", response_model=NeighboursOut)
def neighbours(ws: WorkspaceDep, set_id: Annotated[Id, Path()],
               image: Annotated[Ref, Query(description="Catalog image id or path relative to the data set root.")],
               k: int = Query(10, ge=1, le=1000)) -> NeighboursOut:
    """The k nearest images (cosine) to an image of the set, from its cached index."""
    query, hits = ws.neighbours(set_id, image, k)
    return NeighboursOut(embedding_set=set_id, query=NeighbourOut(**dataclasses.asdict(query)),
                         neighbours=[NeighbourOut(**dataclasses.asdict(h)) for h in hits])
