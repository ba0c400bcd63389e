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

from featscope.cache.index import build_index, index_kind, to_cpu, tune_nprobe
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
