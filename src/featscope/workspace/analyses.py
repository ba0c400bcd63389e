"""Analyses on cached embedding sets, with their results cached as artifacts.

The numbers come from :mod:`featscope.analysis` (pure functions); this layer loads embedding sets,
lines up the rows of two sets of the same data set, keys each result by its inputs' artifact keys
plus its parameters (so a re-run with nothing changed is a cache hit, in any workspace that shares
the store), stores it, records it in the catalog, and maps row positions back to catalog images.

Stored results refer to images by *data set position* (catalog-independent); image ids and paths
are attached when a result is returned.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import select

from featscope.analysis.arrays import fits_in_memory
from featscope.cache.store import CorruptArtifact, content_key
from featscope.catalog import Analysis, EmbeddingSet, Image
from featscope.workspace.context import Context
from featscope.workspace.embeddings import _embedding_row

log = logging.getLogger(__name__)

# Bump when a change in this layer or in featscope.analysis changes the numbers a kind produces.
# 2: t-SNE on exact FAISS neighbours with a coarser FFT grid; probe C search with warm starts.
ANALYSIS_VERSION = 2
# A kind's own version, where a change touched only that kind (the others keep their cached results).
# contrast 3: ranks in B of a set above the in-memory limit counted exactly for the candidates that lead the list.
KIND_VERSION = {"contrast": 3}
KINDS = ("comembership", "closest", "contrast", "agreement", "projection", "probe", "similarity", "cka-matrix")

Progress = Callable[[int, int], None]


class NotCached(LookupError):
    """The analysis asked for with ``cached_only=True`` has no cached result."""


@dataclass(frozen=True)
class AnalysisResult:
    """One analysis: ``data`` is JSON-ready, ``arrays`` holds its large numeric parts, ``rows`` its table
    (what ``--format csv`` writes) with the catalog images of the rows it was computed on.

    ``rows`` is built on first use: it reads every image of the data set from the catalog, which a
    caller showing a million-point projection (the dashboard) or answering REST never needs."""

    id: int
    kind: str
    inputs: list[int]
    params: dict[str, Any]
    data: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(repr=False)
    table: Callable[[], list[dict[str, Any]]] = field(repr=False, compare=False)  # builds ``rows`` on first use
    artifact_key: str
    seconds: float
    cached: bool

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The result's table, one dict per row (built when first asked: a million-point map is large)."""
        return self.table()

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready; ``arrays=True`` adds the arrays as nested lists."""
        out = {"id": self.id, "kind": self.kind, "inputs": self.inputs, "params": self.params, "data": self.data,
               "artifact_key": self.artifact_key, "seconds": self.seconds, "cached": self.cached}
        if arrays:
            out["arrays"] = {k: _json_array(v) for k, v in self.arrays.items()}
        return out


@dataclass(frozen=True)
class _Loaded:
    """Embedding matrices of several sets restricted to the images all of them embed, in one row order."""

    sets: list[EmbeddingSet]
    vectors: list[np.ndarray]
    positions: np.ndarray  # data set positions of the common rows
    # each set's stored (memory-mapped) array, what its stored index was built from, and the row of it each
    # common row is (None: the common rows are all its rows, in its order, and ``vectors`` holds it as it is)
    stored: list[np.ndarray] = field(default_factory=list)
    stored_rows: list[np.ndarray | None] = field(default_factory=list)


# ---------------------------------------------------------------- the runner
def run(ctx: Context, kind: str, set_ids: Sequence[int], params: dict[str, Any],
        compute: Callable[[_Loaded], tuple[dict[str, Any], dict[str, np.ndarray]]], *,
        force: bool = False, cached_only: bool = False,
        on_message: Callable[[str], None] | None = None) -> AnalysisResult:
    """Return the cached result of ``kind`` on ``set_ids`` with ``params``, computing and storing it if needed.

    ``cached_only``: raise :class:`NotCached` instead of computing (a server answers from the cache and
    queues a job otherwise)."""
    say = on_message or log.info
    rows = [_embedding_row(ctx, i) for i in set_ids]
    _check_same_dataset(rows)
    key = content_key({"kind": "analysis", "analysis": kind, "inputs": [r.artifact_key for r in rows],
                       "params": params, "version": KIND_VERSION.get(kind, ANALYSIS_VERSION)})
    cached = not force and _usable(ctx, key, say)
    if cached_only and not cached:
        raise NotCached(f"{kind} on embedding sets {list(set_ids)} with these parameters is not computed yet")
    if cached:
        art = ctx.store.get("analysis", key, verify=False)  # verified by _usable just now
        arrays = {name: art.array(name) for name in art.array_names}
        data, seconds = art.meta["data"], float(art.meta["seconds"])
    else:
        loaded = _load(ctx, rows, say)
        t0 = time.perf_counter()
        data, arrays = compute(loaded)
        seconds = time.perf_counter() - t0
        arrays = {"positions": loaded.positions, **arrays}
        ctx.store.put("analysis", key, arrays, {"kind": kind, "params": params, "data": _json_safe(data),
                                                "seconds": seconds, "inputs": [r.artifact_key for r in rows]})
        data = json.loads(json.dumps(_json_safe(data)))  # the same form a cache hit returns
    analysis_id = _record(ctx, kind, [r.id for r in rows], params, key)
    positions = arrays["positions"]

    def table() -> list[dict[str, Any]]:
        return _ROWS.get(kind, lambda *_: [])(data, arrays, _images(ctx, rows[0].dataset_id, positions), rows)

    return AnalysisResult(analysis_id, kind, [r.id for r in rows], params, data, arrays, table, key, seconds, cached)


def _check_same_dataset(rows: list[EmbeddingSet]) -> None:
    if len({r.dataset_id for r in rows}) > 1:
        desc = ", ".join(f"set {r.id} (data set id {r.dataset_id})" for r in rows)
        raise ValueError(f"embedding sets must embed the same data set to be compared, got {desc}; "
                         f"`featscope embeddings list --dataset NAME` (GET /api/v1/embedding-sets?dataset=NAME) shows the "
                         f"sets of one data set")


def _usable(ctx: Context, key: str, say: Callable[[str], None]) -> bool:
    if not ctx.store.has("analysis", key):
        return False
    problems = ctx.store.verify("analysis", key)
    if problems:
        say(f"cached analysis {key[:12]} is corrupted ({'; '.join(problems)}); recomputing it")
        ctx.store.delete("analysis", key)
        return False
    return True


def _load(ctx: Context, rows: list[EmbeddingSet], say: Callable[[str], None]) -> _Loaded:
    """Vectors of every set on the images common to all (same data set, so positions are comparable)."""
    mats, poss = [], []
    for r in rows:
        try:  # memory-mapped, in the stored dtype: analyses read large sets in chunks (arrays.IN_MEMORY_MAX)
            art = ctx.store.get("embeddings", r.artifact_key, mmap=True)
        except CorruptArtifact as e:
            e.args = (f"{e.args[0]} Extract again for embedding set {r.id}'s backbone and data set (`featscope "
                      f"extract`, POST /api/v1/embedding-sets/extract): it rebuilds it.",)
            raise
        mats.append(art.array("embeddings"))
        poss.append(art.array("positions"))
    common = poss[0]
    for p in poss[1:]:
        common = np.intersect1d(common, p)
    if len(common) < min(len(p) for p in poss):
        say(f"{max(len(p) for p in poss) - len(common)} image(s) are missing from some embedding sets "
            f"(failed to decode there); comparing the {len(common)} images all sets embed")
    vectors, stored_rows = [], []
    for m, p in zip(mats, poss):
        rows_of = None
        if not (len(p) == len(common) and np.array_equal(p, common)):
            order = np.argsort(p)
            rows_of = order[np.searchsorted(p[order], common)].astype(np.int64)
            m = m[rows_of]
        stored_rows.append(rows_of)
        # float32 in memory when that fits (as always); a larger set stays memory-mapped, read in chunks
        vectors.append(np.asarray(m, dtype=np.float32) if fits_in_memory(m) else m)
    return _Loaded(rows, vectors, common.astype(np.int64), mats, stored_rows)


def _record(ctx: Context, kind: str, inputs: list[int], params: dict[str, Any], key: str) -> int:
    with ctx.session() as s:
        row = s.scalars(select(Analysis).where(Analysis.artifact_key == key)).first()
        if row is None:
            row = Analysis(kind=kind, params=_json_safe(params), inputs=inputs, artifact_key=key)
            s.add(row)
            s.flush()
        return row.id


@dataclass(frozen=True)
class _Images:
    ids: np.ndarray
    relpaths: list[str]
    labels: list[str | None]

    def ref(self, row: int) -> dict[str, Any]:
        return {"image_id": int(self.ids[row]), "relpath": self.relpaths[row], "label": self.labels[row]}


def _images(ctx: Context, dataset_id: int, positions: np.ndarray) -> _Images:
    with ctx.session() as s:  # columns, not ORM objects: cheap for a million images
        by_pos = {int(p): (i, r, lab) for p, i, r, lab in s.execute(
            select(Image.position, Image.id, Image.relpath, Image.label).where(
                Image.dataset_id == dataset_id, Image.position.is_not(None)))}
    ims = [by_pos[int(p)] for p in positions]
    return _Images(np.array([im[0] for im in ims], dtype=np.int64), [im[1] for im in ims], [im[2] for im in ims])


def list_analyses(ctx: Context, kind: str | None = None) -> list[dict[str, Any]]:
    """Analyses recorded in the catalog (newest last)."""
    with ctx.session() as s:
        q = select(Analysis).order_by(Analysis.id)
        if kind is not None:
            q = q.where(Analysis.kind == kind)
        return [{"id": a.id, "kind": a.kind, "inputs": list(a.inputs), "params": dict(a.params),
                 "artifact_key": a.artifact_key, "created_at": a.created_at.isoformat()} for a in s.scalars(q)]


def get_analysis(ctx: Context, analysis_id: int) -> Analysis:
    return ctx.get_row(Analysis, analysis_id, f"no analysis {analysis_id}; `featscope analyze list` (GET /api/v1/analyses) shows them")


# ---------------------------------------------------------------- tables (CSV rows) per kind
def _rows_comembership(data, arrays, images, sets) -> list[dict[str, Any]]:
    out = []
    for i, k in enumerate(data["ks"]):
        row = {"k": k}
        for m in data["metrics"]:
            row[f"{m}_mean"], row[f"{m}_std"] = data["mean"][m][i], data["std"][m][i]
        out.append(row)
    return out


def _pair_rows(pairs: list[dict[str, Any]], images: _Images, prefix: dict[str, Any] | None = None):
    out = []
    for rank, p in enumerate(pairs, 1):
        a, b = images.ref(p["i"]), images.ref(p["j"])
        row = {**(prefix or {}), "rank": rank, "image_a": a["image_id"], "relpath_a": a["relpath"],
               "label_a": a["label"], "image_b": b["image_id"], "relpath_b": b["relpath"], "label_b": b["label"],
               **{k: v for k, v in p.items() if k not in ("i", "j")}}
        out.append(row)
    return out


def _rows_closest(data, arrays, images, sets):
    return [r for s in data["spaces"] for r in _pair_rows(s["pairs"], images, {"embedding_set": s["embedding_set"]})]


def _rows_contrast(data, arrays, images, sets):
    return _pair_rows(data["pairs"], images)


def _rows_agreement(data, arrays, images, sets):
    per = arrays["per_image"]
    return [{**images.ref(r), "overlap": float(per[r])} for r in np.argsort(per, kind="stable")]


def _rows_projection(data, arrays, images, sets):
    out = []
    for s_i, s in enumerate(sets):
        coords = arrays[f"coords_{s_i}"]
        for r in range(len(coords)):
            out.append({"embedding_set": s.id, **images.ref(r), **{f"c{c}": float(coords[r, c])
                                                                    for c in range(coords.shape[1])}})
    return out


def _rows_probe(data, arrays, images, sets):
    return [{"embedding_set": sets[0].id, "tap": sets[0].tap, "pooling": sets[0].pooling, "dim": sets[0].dim,
             **{k: data[k] for k in ("accuracy", "ci_low", "ci_high", "n_test", "best_c", "knn_accuracy",
                                      "knn_ci_low", "knn_ci_high", "knn_k", "n_classes")}}]


def _rows_similarity(data, arrays, images, sets):
    return [{"set_a": sets[0].id, "set_b": sets[1].id, **{k: v for k, v in data.items() if not isinstance(v, list)}}]


def _rows_cka_matrix(data, arrays, images, sets):
    m = arrays["cka"]
    return [{"tap_a": ta, "tap_b": tb, "cka": float(m[i, j])}
            for i, ta in enumerate(data["taps_a"]) for j, tb in enumerate(data["taps_b"])]


_ROWS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "comembership": _rows_comembership, "closest": _rows_closest, "contrast": _rows_contrast,
    "agreement": _rows_agreement, "projection": _rows_projection, "probe": _rows_probe,
    "similarity": _rows_similarity, "cka-matrix": _rows_cka_matrix,
}


# ---------------------------------------------------------------- JSON helpers
def _json_safe(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if np.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _json_array(a: np.ndarray) -> Any:
    return _json_safe(a) if a.dtype.kind in "fiub" else a.astype(str).tolist()
