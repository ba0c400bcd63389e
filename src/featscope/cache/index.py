"""FAISS indexes for cosine k-NN over embeddings.

Cosine similarity is the inner product of L2-normalised float32 vectors, so every index here is an
inner-product index fed normalised copies (all-zero rows stay zero: similarity 0 to everything,
never NaN). Small sets get an exact flat index; large ones an IVF index, which trades a little
recall for sub-linear search. Indexes built on a GPU are moved back to the CPU to be serialised.
"""

from __future__ import annotations

import math
from typing import Literal

import faiss
import numpy as np

_MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per centroid
_MAX_POINTS_PER_LIST = 256  # ...and subsamples above it; we subsample ourselves, reproducibly


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised float32 copy (C-contiguous, as FAISS wants); zero rows stay zero."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (N, D) array of vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf; drop or repair those rows before indexing")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def build_index(vectors: np.ndarray, *, flat_max: int = 100_000, nlist: int | None = None,
                nprobe: int | None = None, use_gpu: bool | Literal["auto"] = "auto") -> faiss.Index:
    """Cosine index over ``vectors`` (N, D); positions in results are row numbers of ``vectors``.

    ``N <= flat_max``: exact ``IndexFlatIP``. Otherwise ``IndexIVFFlat`` (inner product) with
    ``nlist`` lists (default ``4*sqrt(N)``, capped so k-means has >= 39 points per list), trained on
    a reproducible sample of at most 256 points per list, searching ``nprobe`` lists (default
    ``max(8, nlist // 8)``; stored on the index, so it survives serialisation).
    ``use_gpu``: ``"auto"`` uses a GPU when this FAISS build has one; ``True`` requires one.
    """
    x = normalize(vectors)
    n, d = x.shape
    if n == 0 or d == 0:
        raise ValueError(f"cannot index an empty set of vectors (shape {x.shape})")
    if flat_max < 0:
        raise ValueError(f"flat_max must be >= 0, got {flat_max}")
    gpus = getattr(faiss, "get_num_gpus", lambda: 0)()
    if use_gpu is True and gpus == 0:
        raise ValueError("use_gpu=True but this FAISS build sees no GPU; install faiss-gpu or pass use_gpu='auto'")
    if use_gpu not in (True, False, "auto"):
        raise ValueError(f"use_gpu must be True, False or 'auto', got {use_gpu!r}")

    if n <= flat_max:
        index: faiss.Index = faiss.IndexFlatIP(d)
    else:
        nlist = _check_nlist(n, nlist)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = _check_nprobe(nlist, nprobe)
    if gpus > 0 and use_gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        index.featscope_resources = resources  # keep the GPU memory pool alive with the index
    if not index.is_trained:
        index.train(_training_sample(x, index.nlist))
    index.add(x)
    return index


def _check_nlist(n: int, nlist: int | None) -> int:
    most = max(1, n // _MIN_POINTS_PER_LIST)
    if nlist is None:
        return max(1, min(round(4 * math.sqrt(n)), most))
    if not 1 <= nlist <= most:
        raise ValueError(f"nlist={nlist} needs 1 <= nlist <= N/39 = {most} for {n} vectors; leave it unset for the default")
    return nlist


def _check_nprobe(nlist: int, nprobe: int | None) -> int:
    if nprobe is None:
        return min(nlist, max(8, nlist // 8))
    if not 1 <= nprobe <= nlist:
        raise ValueError(f"nprobe={nprobe} must be between 1 and nlist={nlist}")
    return nprobe


def _training_sample(x: np.ndarray, nlist: int) -> np.ndarray:
    limit = nlist * _MAX_POINTS_PER_LIST
    if len(x) <= limit:
        return x
    rows = np.random.default_rng(0).choice(len(x), size=limit, replace=False)
    return x[np.sort(rows)]


def serialize_index(index: faiss.Index) -> bytes:
    """Index -> bytes (a GPU index is copied to the CPU first, so the bytes load anywhere)."""
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    return faiss.serialize_index(index).tobytes()


def deserialize_index(data: bytes) -> faiss.Index:
    """Bytes from :func:`serialize_index` -> CPU index (IVF keeps its ``nprobe``)."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine matches of each query: (scores float32 [Q, k], positions int64 [Q, k]).

    ``k`` is capped at the index size. An IVF index may find fewer than ``k`` vectors in the lists
    it probes; missing slots have position -1 and score -inf.
    """
    q = normalize(queries)
    if q.shape[1] != index.d:
        raise ValueError(f"queries have {q.shape[1]} dimensions, the index has {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, index.ntotal)
    if k == 0 or len(q) == 0:
        return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
    scores, positions = index.search(q, k)
    scores[positions < 0] = -np.inf
    return scores.astype(np.float32, copy=False), positions.astype(np.int64, copy=False)


def neighbours(index: faiss.Index, vectors: np.ndarray, positions: np.ndarray | list[int], k: int, *,
               exclude_self: bool = True) -> list[list[tuple[int, float]]]:
    """Top-``k`` ``(position, cosine)`` neighbours of rows ``positions`` of the indexed ``vectors``.

    With ``exclude_self`` the query row itself is never returned: ``k + 1`` are fetched and the row
    dropped (or, if ties pushed it out, the last one). Other rows that are exact duplicates of the
    query are different images and are kept, with cosine 1.0, so a row with many duplicates has
    only duplicates as neighbours. Slots an IVF index could not fill are left out.
    """
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if len(vectors) != index.ntotal:
        raise ValueError(f"vectors has {len(vectors)} rows but the index holds {index.ntotal}; "
                         f"pass the array the index was built from")
    if len(pos) and (pos.min() < 0 or pos.max() >= len(vectors)):
        raise IndexError(f"positions must lie in [0, {len(vectors)}), got {pos.min()}..{pos.max()}")
    scores, found = search(index, np.asarray(vectors)[pos], k + 1 if exclude_self else k)
    out = []
    for row, s, f in zip(pos, scores, found):
        keep = (f >= 0) & ((f != row) if exclude_self else True)
        out.append([(int(p), float(v)) for p, v in zip(f[keep][:k], s[keep][:k])])
    return out
