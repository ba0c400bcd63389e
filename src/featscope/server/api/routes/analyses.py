"""Analyses: POST one per kind (200 with the cached result, else 202 with the job computing it); GET by id."""

# No ``from __future__ import annotations``: the endpoints below are made in a loop and FastAPI must see
# each one's real body model.

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from featscope.server.api.routes.jobs import job_out
from featscope.server.api.schemas import (AgreementIn, AnalysisOut, AnalysisSummary, ClosestIn, CkaMatrixIn,
                                          ComembershipIn, ContrastIn, Id, JobOut, Page, ProbeIn, ProjectionIn,
                                          SimilarityIn)
from featscope.server.deps import Limit, Offset, QueueDep, WorkspaceDep
from featscope.worker import jobs
from featscope.workspace import analyze as an
from featscope.workspace.analyses import AnalysisResult, NotCached, _json_array, get_analysis, list_analyses

router = APIRouter(prefix="/analyses", tags=["analyses"])

# kind -> (request model, function of featscope.workspace.analyze, how its inputs become positional arguments)
_ONE = lambda xs: xs  # noqa: E731
_LIST = lambda xs: [xs]  # noqa: E731
ANALYSES: dict[str, tuple[type[BaseModel], Callable[..., AnalysisResult], Callable[[list], list], str]] = {
    "comembership": (ComembershipIn, an.comembership, _ONE, "Co-membership curves of sets A and B over K (Fig. 6)."),
    "closest": (ClosestIn, an.closest, _LIST, "The most similar image pairs in each set (Fig. 3)."),
    "contrast": (ContrastIn, an.contrast, _ONE, "Pairs close in A but distant in B."),
    "agreement": (AgreementIn, an.agreement, _ONE, "Per-image k-NN overlap between A and B."),
    "projection": (ProjectionIn, an.projection, _LIST, "t-SNE / UMAP / PCA maps, Procrustes-aligned (Fig. 7)."),
    "probe": (ProbeIn, an.probe, _ONE, "Linear probe and k-NN accuracy with 95% intervals."),
    "similarity": (SimilarityIn, an.similarity, _ONE, "Linear CKA and mutual k-NN alignment of A and B."),
    "cka-matrix": (CkaMatrixIn, an.cka_matrix, _ONE, "Layer-by-layer linear CKA between two backbones."),
}
ACCEPTED = {202: {"model": JobOut, "description": "Not computed yet: the job that computes it."}}


def _analysis_out(res: AnalysisResult) -> AnalysisOut:
    return AnalysisOut(id=res.id, kind=res.kind, inputs=res.inputs, params=res.params, data=res.data,
                       artifact_key=res.artifact_key, cached=res.cached)


def _make_route(kind: str, model: type[BaseModel], fn: Callable[..., AnalysisResult], args: Callable, doc: str):
    def endpoint(body: model, ws: WorkspaceDep, queue: QueueDep) -> Any:  # type: ignore[valid-type]
        inputs, params = body.inputs(), body.params()
        try:
            return _analysis_out(fn(ws.ctx, *args(inputs), cached_only=True, **params))
        except NotCached:
            job = jobs.submit(ws.ctx, "analysis", {"analysis": kind, "inputs": inputs, "params": params}, queue=queue)
            return JSONResponse(job_out(job).model_dump(), status_code=status.HTTP_202_ACCEPTED)

    endpoint.__doc__ = f"{doc} The cached result (200), or the job computing it (202)."
    endpoint.__name__ = f"analysis_{kind.replace('-', '_')}"
    router.add_api_route(f"/{kind}", endpoint, methods=["POST"], response_model=AnalysisOut, responses=ACCEPTED,
                         name=endpoint.__name__, summary=doc)


for _kind, (_model, _fn, _args, _doc) in ANALYSES.items():
    _make_route(_kind, _model, _fn, _args, _doc)


@router.get("", response_model=Page[AnalysisSummary])
def list_all(ws: WorkspaceDep, limit: Limit = 50, offset: Offset = 0, kind: Literal["comembership", "closest", "contrast", "agreement", "projection", "probe", "similarity", "cka-matrix"] | None = None) \
        -> Page[AnalysisSummary]:
    """Computed analyses, oldest first, optionally of one kind."""
    rows = list_analyses(ws.ctx, kind)
    return Page(items=[AnalysisSummary(**r) for r in rows[offset:offset + limit]], total=len(rows), limit=limit,
                offset=offset)


@router.get("/{analysis_id}", response_model=AnalysisOut)
def get_one(ws: WorkspaceDep, analysis_id: Annotated[Id, Path()], arrays: bool = Query(False, description="Include the arrays.")) \
        -> AnalysisOut:
    """A computed analysis' result (arrays as nested lists on request)."""
    row = get_analysis(ws.ctx, analysis_id)
    art = ws.ctx.store.get("analysis", row.artifact_key)
    out = AnalysisOut(id=row.id, kind=row.kind, inputs=list(row.inputs), params=dict(row.params),
                      data=art.meta["data"], artifact_key=row.artifact_key, cached=True)
    if arrays:
        out.arrays = {name: _json_array(art.array(name)) for name in art.array_names}
    return out
