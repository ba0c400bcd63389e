"""An embedding set's FAISS index: built from the stored (memory-mapped) vectors, tuned, stored, queried.

The index artifact shares its key with the embeddings artifact. Its metadata records what a user needs to
trust it: the kind (``flat``, ``ivf``, ``ivfpq``), ``nlist``, the ``nprobe`` chosen and the recall@10 it
measured against exact search (:func:`featscope.cache.index.tune_nprobe`), and for IVF-PQ the re-rank depth
that searches must use. Queries read only the rows they need from the memory-mapped vectors, so a server
answering neighbour queries over a million images holds the index and a few pages, not the vectors.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from featscope.analysis.knn import RECALL_TARGET, PrebuiltIndex
from featscope.cache.index import build_index, index_kind, to_cpu, tune_nprobe
from featscope.cache.store import CorruptArtifact
from featscope.catalog import EmbeddingSet
from featscope.workspace.context import Context

log = logging.getLogger(__name__)


def store_index(ctx: Context, key: str, say=None) -> dict[str, Any]:
    """Build, tune and store the index of embeddings artifact ``key``; returns the index metadata."""
    st = ctx.settings
    vectors = ctx.store.get("embeddings", key, mmap=True, verify=False).array("embeddings")
    t0 = time.perf_counter()
    index = to_cpu(build_index(vectors, flat_max=st.flat_index_max, memory_max=st.index_memory_max))
    built = time.perf_counter() - t0
    kind = index_kind(index)
    meta: dict[str, Any] = {"kind": kind, "faiss_type": type(faiss.downcast_index(index)).__name__,
                            "n": int(index.ntotal), "build_seconds": round(built, 3)}
    if kind != "flat":
        if say:
            say(f"tuning nprobe of the {kind} index of {index.ntotal} vectors for recall@10 >= {st.index_recall}")
        t0 = time.perf_counter()
        tuning = tune_nprobe(index, vectors, target=st.index_recall)
        ivf = faiss.extract_index_ivf(index)
        meta.update(nlist=int(ivf.nlist), nprobe=tuning.nprobe, rerank=tuning.rerank, recall_at_10=tuning.recall,
                    recall_target=tuning.target, recall_queries=tuning.queries, tried=tuning.to_dict()["tried"],
                    tune_seconds=round(time.perf_counter() - t0, 3))
        if kind == "ivfpq":
            meta["code_bytes"] = int(faiss.downcast_index(index).pq.M)
        if tuning.recall < tuning.target:  # stored (the best it could do) and said wherever the user looks
            meta["recall_below_target"] = True
            warning = (f"WARNING: the {kind} index of {index.ntotal} vectors reaches recall@10 {tuning.recall:.3f}, "
                       f"below the {tuning.target} asked for, even re-scoring every vector of the lists it probes "
                       f"(nprobe {tuning.nprobe}): many vectors tie (duplicates?); neighbour lists among tied "
                       f"vectors are one arbitrary choice of them")
            log.warning("index %s: %s", key[:12], warning)
            if say:
                say(warning)
    ctx.store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.store.root) as tmp:  # same disk: no copy across file systems
        path = Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        ctx.store.put("index", key, {}, meta, blobs={"index.faiss": path})
    return meta


def summary(meta: dict[str, Any]) -> dict[str, Any]:
    """The catalog's copy of an index's metadata (everything but the tuning trace)."""
    return {k: v for k, v in meta.items() if k != "tried"}


@dataclass(frozen=True)
class QuerySet:
    """What a neighbour query needs, loaded once per workspace: the index, its re-rank depth, the
    memory-mapped vectors and the data set positions of their rows (ascending)."""

    index: faiss.Index
    rerank: int | None
    vectors: np.ndarray
    positions: np.ndarray


def open_query_set(ctx: Context, key: str) -> QuerySet:
    """The embeddings (memory-mapped, checksummed once) and index of artifact ``key``, cached per workspace."""
    cache_key = ("query-set", 0, key)
    if cache_key not in ctx.query_cache:
        emb = ctx.store.get("embeddings", key, mmap=True)
        idx = ctx.store.get("index", key)
        positions = np.asarray(emb.array("positions"))
        vectors = emb.array("embeddings")
        _advise_random(vectors)
        ctx.query_cache[cache_key] = QuerySet(faiss.read_index(str(idx.file("index.faiss"))),
                                              idx.meta.get("rerank"), vectors, positions)
    return ctx.query_cache[cache_key]


def analysis_index(ctx: Context, row: EmbeddingSet, vectors: np.ndarray,
                   rows: np.ndarray | None = None) -> tuple[PrebuiltIndex | None, str]:
    """Embedding set ``row``'s stored index, for an analysis to search instead of building and tuning one
    (minutes per space at a million images), or None and the reason it cannot serve.

    ``vectors``: the set's stored (memory-mapped) array; ``rows``: the row of it each analysed row is, when the
    analysis compares only some of them (the images another set also embeds) or in another order. The index
    shares the embeddings' artifact key, so it was built from exactly these vectors; it is used only if it is
    intact, an IVF or IVF-PQ index (a flat one holds every vector in memory as float32, which a space too
    large for memory must not, and compares every pair) holding as many rows as the set, and tuned for at
    least the recall the analyses ask for (:data:`~featscope.analysis.knn.RECALL_TARGET`)."""
    key = row.artifact_key
    if not ctx.store.has("index", key):
        return None, f"embedding set {row.id} has no stored index"
    cached = ctx.query_cache.get(("query-set", 0, key))  # loaded (and checksummed) for neighbour queries
    try:
        art = ctx.store.get("index", key, verify=cached is None)
    except CorruptArtifact as e:
        return None, f"the stored index of embedding set {row.id} is corrupt ({e})"
    meta = art.meta
    if meta.get("kind") not in ("ivf", "ivfpq"):
        return None, (f"the stored index of embedding set {row.id} is {meta.get('kind')} (exact: it would hold all "
                      f"{row.n} vectors in memory and compare every pair)")
    if meta.get("recall_below_target"):
        return None, (f"the stored index of embedding set {row.id} reached recall@10 {meta.get('recall_at_10')}, "
                      f"below the {meta.get('recall_target')} it was tuned for")
    if float(meta.get("recall_target") or 0) < RECALL_TARGET:
        return None, (f"the stored index of embedding set {row.id} was tuned for recall@10 >= "
                      f"{meta.get('recall_target')}, below the {RECALL_TARGET} the analyses ask for")
    index = cached.index if cached is not None else faiss.read_index(str(art.file("index.faiss")))
    ivf = faiss.extract_index_ivf(index)
    if (index.ntotal, index.d) != tuple(vectors.shape) or meta.get("n") != len(vectors) or \
            index_kind(index) != meta["kind"] or ivf.nprobe != meta.get("nprobe"):
        return None, (f"the stored index of embedding set {row.id} ({index.ntotal} x {index.d}, nprobe {ivf.nprobe}) "
                      f"does not match its vectors {tuple(vectors.shape)} or its metadata (n {meta.get('n')}, "
                      f"nprobe {meta.get('nprobe')})")
    return PrebuiltIndex(index, vectors, int(meta["nprobe"]), int(meta.get("rerank") or 0),
                         float(meta["recall_at_10"]), rows), ""


def _advise_random(array: np.ndarray) -> None:
    """Queries read scattered rows: tell the kernel not to read ahead around them (a cold 4 GB set would be
    read in 128 KB runs per 4 KB row, and those pages would count against the server's memory)."""
    import mmap

    mm = getattr(array, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mm.madvise(mmap.MADV_RANDOM)
        except OSError:  # advice only
            pass
