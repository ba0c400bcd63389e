"""FAISS indexes for cosine k-NN over embeddings, from a few hundred images to millions.

Cosine similarity is the inner product of L2-normalised float32 vectors, so every index here is an
inner-product index fed normalised copies (all-zero rows stay zero: similarity 0 to everything,
never NaN). The kind follows the size of the set:

- ``N <= flat_max``: an exact ``IndexFlatIP``.
- larger, when the float32 vectors fit ``memory_max`` bytes: ``IndexIVFFlat`` (exact scores, approximate
  search: only ``nprobe`` of ``nlist`` lists are visited).
- larger still: ``IndexIVFPQ``, ``M`` bytes per vector (a million 2048-d vectors: 256 MB instead of 8 GB).
  Its scores are approximate, so :func:`search` re-ranks ``rerank * k`` candidates with exact cosines read
  from the set's own vectors (memory-mapped; a few rows per query), when the caller passes them.

An IVF index is only as good as its ``nprobe``: :func:`tune_nprobe` measures recall@k against exact search
on a sample of the set's own vectors and picks the smallest ``nprobe`` (and, for PQ, re-rank depth) that
reaches the target (0.95 by default). ``nprobe`` is saved in the index; the caller stores the measurement
and the re-rank depth (FAISS has no field for it) with the index and passes ``rerank`` back when searching.

Everything works in row chunks of any (N, D) array, a read-only memory map of float16 included: building
holds the training sample and one chunk, never a normalised copy of the whole set. On a FAISS build with
GPUs, IVF-Flat indexes are built on the GPU, and IVF-PQ indexes train their coarse quantizer and assign
vectors to lists on the GPU (the expensive parts); indexes are moved back to the CPU to be serialised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import faiss
import numpy as np

_MIN_POINTS_PER_LIST = 39  # FAISS warns below this many training points per centroid
_TRAIN_POINTS_PER_LIST = 64  # training sample per list: enough for stable lists, cheap at a million vectors
_CHUNK = 65536
DEFAULT_RERANK = 4  # IVF-PQ: exact re-ranking of this many candidates per wanted neighbour (tune_nprobe measures
# the depth a set needs, up to every vector of the probed lists)
# PQ: 16 dims per byte (a 2048-d vector in 128 bytes); coarser codes only mean a deeper re-rank, which
# tune_nprobe chooses, while FAISS's PQ training grows with the number of sub-quantizers (256 of them took
# minutes on a 2-core machine). Each sub-quantizer trains on 64 points per centroid, 10 k-means iterations.
_PQ_MIN_DSUB = 16
_PQ_TRAIN_PER_CENTROID, _PQ_TRAIN_NITER = 64, 10


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


def unit_chunks(vectors: np.ndarray, chunk: int = _CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, normalised float32 rows start..start+len)`` blocks of any (N, D) array, memory maps included."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for start in range(0, len(vectors), chunk):
        yield start, normalize(vectors[start:start + chunk])


def index_kind(index: faiss.Index) -> str:
    """``flat``, ``ivf`` (IVF-Flat) or ``ivfpq``."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    return "ivf" if isinstance(index, faiss.IndexIVF) else "flat"


def build_index(vectors: np.ndarray, *, flat_max: int = 100_000, memory_max: int = 2 << 30,
                nlist: int | None = None, nprobe: int | None = None, pq_m: int | None = None,
                use_gpu: bool | Literal["auto"] = "auto", chunk: int = _CHUNK) -> faiss.Index:
    """Cosine index over ``vectors`` (N, D); positions in results are row numbers of ``vectors``.

    ``N <= flat_max``: exact ``IndexFlatIP``. Otherwise IVF with ``nlist`` lists (default ``sqrt(N)``,
    capped so k-means has >= 39 points per list), trained on a reproducible sample of 64 points per list:
    ``IndexIVFFlat`` if ``N * D * 4 <= memory_max`` bytes, else ``IndexIVFPQ`` with ``pq_m`` bytes per vector
    (default: the largest divisor of D with sub-vectors of >= 16 dims that fits ``memory_max``). ``nprobe``
    (default ``max(1, nlist // 16)``) is stored on the index; :func:`tune_nprobe` chooses it by measured recall.
    ``use_gpu``: ``"auto"`` uses a GPU when this FAISS build has one; ``True`` requires one.
    """
    n, d = _check_vectors(vectors)
    if flat_max < 0:
        raise ValueError(f"flat_max must be >= 0, got {flat_max}")
    if memory_max < 1:
        raise ValueError(f"memory_max must be a positive number of bytes, got {memory_max}")
    gpus = getattr(faiss, "get_num_gpus", lambda: 0)()
    if use_gpu not in (True, False, "auto"):
        raise ValueError(f"use_gpu must be True, False or 'auto', got {use_gpu!r}")
    if use_gpu is True and gpus == 0:
        raise ValueError("use_gpu=True but this FAISS build sees no GPU; install faiss-gpu or pass use_gpu='auto'")
    gpu = bool(gpus > 0 and use_gpu)

    if n <= flat_max:
        index: faiss.Index = faiss.IndexFlatIP(d)
        if gpu:
            index = _to_gpu(index)
        for _, block in unit_chunks(vectors, chunk):
            index.add(block)
        return index
    nlist = _check_nlist(n, nlist)
    nprobe = _check_nprobe(nlist, nprobe)
    sample = normalize(_training_rows(vectors, nlist))
    if n * d * 4 <= memory_max and pq_m is None:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        if gpu:
            index = _to_gpu(index)
        index.train(sample)
        for _, block in unit_chunks(vectors, chunk):
            index.add(block)
    else:
        m = _check_pq_m(d, n, memory_max, pq_m)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.max_points_per_centroid, index.pq.cp.niter = _PQ_TRAIN_PER_CENTROID, _PQ_TRAIN_NITER
        if gpu:  # the coarse k-means is the expensive part of training: run it on the GPUs
            clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d))
            index.clustering_index = clustering
            index.referenced_objects = [clustering]  # FAISS does not own it: keep it alive with the index
        index.train(sample)
        _add_assigned(index, vectors, chunk, gpu)
    index.nprobe = nprobe
    return index


def _to_gpu(index: faiss.Index) -> faiss.Index:
    resources = faiss.StandardGpuResources()
    moved = faiss.index_cpu_to_gpu(resources, 0, index)
    moved.referenced_objects = [resources]  # keep the GPU memory pool alive with the index
    return moved


def _add_assigned(index: faiss.IndexIVF, vectors: np.ndarray, chunk: int, gpu: bool) -> None:
    """Add ``vectors`` chunk by chunk, assigning them to lists with a copy of the coarse quantizer (on the
    GPUs when there are some: the N x nlist search dominates adding), then ``add_core`` with that assignment."""
    quantizer = faiss.IndexFlatIP(index.d)
    quantizer.add(index.quantizer.reconstruct_n(0, index.nlist))
    if gpu:
        quantizer = faiss.index_cpu_to_all_gpus(quantizer)
    for start, block in unit_chunks(vectors, chunk):
        _, assign = quantizer.search(block, 1)
        ids = np.arange(start, start + len(block), dtype=np.int64)
        index.add_core(len(block), faiss.swig_ptr(block), faiss.swig_ptr(ids), faiss.swig_ptr(assign.ravel()))


def _check_vectors(vectors: np.ndarray) -> tuple[int, int]:
    shape = getattr(vectors, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"expected a 2-D (N, D) array of vectors, got shape {shape}")
    n, d = int(shape[0]), int(shape[1])
    if n == 0 or d == 0:
        raise ValueError(f"cannot index an empty set of vectors (shape {shape})")
    return n, d


def _check_nlist(n: int, nlist: int | None) -> int:
    most = max(1, n // _MIN_POINTS_PER_LIST)
    if nlist is None:
        return max(1, min(round(math.sqrt(n)), most))
    if not 1 <= nlist <= most:
        raise ValueError(f"nlist={nlist} needs 1 <= nlist <= N/39 = {most} for {n} vectors; leave it unset for the default")
    return nlist


def _check_nprobe(nlist: int, nprobe: int | None) -> int:
    if nprobe is None:
        return max(1, nlist // 16)
    if not 1 <= nprobe <= nlist:
        raise ValueError(f"nprobe={nprobe} must be between 1 and nlist={nlist}")
    return nprobe


def _check_pq_m(d: int, n: int, memory_max: int, pq_m: int | None) -> int:
    if pq_m is not None:
        if pq_m < 1 or d % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension {d} (bytes per vector)")
        return pq_m
    choices = [m for m in range(1, d + 1) if d % m == 0 and d // m >= min(_PQ_MIN_DSUB, d)]
    fitting = [m for m in choices if n * m <= memory_max]
    return max(fitting) if fitting else min(choices)


def _training_rows(vectors: np.ndarray, nlist: int) -> np.ndarray:
    n = len(vectors)
    size = min(n, nlist * _TRAIN_POINTS_PER_LIST)
    if size == n:
        return np.asarray(vectors[:])
    rows = np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))
    return np.asarray(vectors[rows])


# -- recall ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tuning:
    """The ``nprobe`` (and IVF-PQ ``rerank`` depth) chosen for an index, and the recall@``k`` it measured
    against exact search on ``queries`` rows of the set (each query's own row excluded). ``tried`` lists
    every (nprobe, rerank, recall) measured on the way."""

    nprobe: int
    rerank: int
    recall: float
    k: int
    target: float
    queries: int
    tried: list[tuple[int, int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"nprobe": self.nprobe, "rerank": self.rerank, "recall": self.recall, "k": self.k,
                "target": self.target, "queries": self.queries, "tried": [list(t) for t in self.tried]}


def exact_neighbours(vectors: np.ndarray, rows: np.ndarray, k: int, *, chunk: int = 16384,
                     among: np.ndarray | None = None) -> np.ndarray:
    """Exact top-``k`` cosine neighbours (positions, best first) of ``rows`` of ``vectors``, each row's own
    position excluded, by one chunked pass over the vectors: O(len(rows) * N * D) time, O(chunk) memory.
    ``among`` (positions): candidates are those rows only, as if ``vectors`` held nothing else."""
    rows = np.asarray(rows, dtype=np.int64)
    q = normalize(np.asarray(vectors[np.sort(rows)]))[np.argsort(np.argsort(rows))]
    best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_p = np.full((len(rows), k), -1, dtype=np.int64)
    for pos, block in _candidate_blocks(vectors, among, chunk):
        sims = q @ block.T
        sims[rows[:, None] == pos[None, :]] = -np.inf  # the query's own row
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if sims.shape[1] > k else \
            np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        s = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], axis=1)
        p = np.concatenate([best_p, pos[top]], axis=1)
        keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_p = np.take_along_axis(s, keep, 1), np.take_along_axis(p, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_p, order, 1)


def _candidate_blocks(vectors: np.ndarray, among: np.ndarray | None,
                      chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, normalised rows)`` blocks of ``vectors`` (of its rows ``among`` only, read in ascending order)."""
    if among is None:
        for start, block in unit_chunks(vectors, chunk):
            yield np.arange(start, start + len(block), dtype=np.int64), block
        return
    among = np.unique(np.asarray(among, dtype=np.int64))
    for s in range(0, len(among), chunk):
        pos = among[s:s + chunk]
        yield pos, normalize(np.asarray(vectors[pos]))


def restrict_to(index: faiss.Index, rows: np.ndarray) -> faiss.SearchParameters:
    """Search parameters under which ``index`` finds only its rows ``rows`` (positions), as if it held nothing
    else (a FAISS ID selector, checked as lists are scanned); an IVF index keeps its ``nprobe`` (FAISS's
    parameter object would otherwise probe a single list)."""
    n = index.ntotal
    keep = np.zeros(n, dtype=bool)
    keep[_check_rows(rows, n)] = True
    bitmap = np.packbits(keep, bitorder="little")
    selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
    ivf = faiss.try_extract_index_ivf(index)
    params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe) if ivf is not None else \
        faiss.SearchParameters(sel=selector)
    params.referenced_objects = [selector, bitmap]  # FAISS holds raw pointers: keep both alive with the parameters
    return params


def _check_rows(rows: np.ndarray, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be a 1-D array of integer row positions, got shape {rows.shape} dtype {rows.dtype}")
    rows = rows.astype(np.int64, copy=False)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"rows must lie in [0, {n}) (the index's rows), got {rows.min()}..{rows.max()}")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("rows must not repeat a position")
    return rows


def measure_recall(index: faiss.Index, vectors: np.ndarray, *, rows: np.ndarray | None = None, k: int = 10,
                   queries: int = 500, seed: int = 0, rerank: int | None = None, chunk: int = _CHUNK) -> float:
    """Recall@``k`` of ``index`` at its ``nprobe`` against exact search, as :func:`tune_nprobe` measures it
    (``queries`` seeded rows, each searched as :func:`neighbours` does: own row excluded), among the index's
    rows ``rows`` only when given: what a search restricted to part of the indexed rows (:func:`restrict_to`)
    can be trusted to find, measured rather than assumed from the whole set's tuning."""
    n = index.ntotal
    if len(vectors) != n:
        raise ValueError(f"vectors has {len(vectors)} rows but the index holds {n}; pass the indexed vectors")
    members = np.arange(n, dtype=np.int64) if rows is None else _check_rows(rows, n)
    if len(members) < 2:
        raise ValueError("measuring recall needs at least two rows")
    k = min(k, len(members) - 1)
    sample = np.sort(np.random.default_rng(seed).choice(members, size=min(queries, len(members)), replace=False))
    truth = exact_neighbours(vectors, sample, k, chunk=chunk, among=None if rows is None else members)
    params = None if rows is None else restrict_to(index, members)
    _, found = search(index, np.asarray(vectors[sample], dtype=np.float32), k + 1, vectors=vectors, rerank=rerank,
                      params=params)
    hits = 0
    for row, f, t in zip(sample, found, truth):
        hits += len(set(f[(f >= 0) & (f != row)][:k].tolist()) & set(t.tolist()))
    return hits / (len(sample) * k)


def tune_nprobe(index: faiss.Index, vectors: np.ndarray, *, k: int = 10, target: float = 0.95,
                queries: int = 500, seed: int = 0, chunk: int = _CHUNK) -> Tuning:
    """Choose ``nprobe`` (and the IVF-PQ re-rank depth) whose recall@``k`` against exact search reaches
    ``target``; set it on ``index`` and return the measurement (with the re-rank depth to pass to :func:`search`).

    Queries are ``queries`` rows of the set itself (seeded), searched as :func:`neighbours` does (own row
    excluded). Recall has two limits, measured separately:

    - the lists probed: a true neighbour in a list that is not probed is lost whatever else is done. Which
      list holds each true neighbour and the order a query visits lists in give, without searching, the best
      recall every ``nprobe`` allows (its *coverage*); the smallest ``nprobe`` whose coverage reaches the target
      is the least that can work.
    - IVF-PQ only, the codes: approximate scores rank true neighbours below others; re-ranking ``rerank * k``
      candidates with exact cosines recovers them. One search for all the candidates the probed lists hold
      predicts the least depth that works (:func:`_predicted_rerank`); it is measured, and doubled (then
      narrowed) if ties make it fall short. It is never capped below the size of the probed lists: there
      every probed vector is re-scored exactly, so recall equals the coverage, which reaches the target (an
      exhaustive re-rank is slow per query but correct). IVF-PQ tries the least ``nprobe`` and one whose
      coverage leaves half the remaining loss to the codes, and keeps the cheaper passing pair.

    The target is missed only where exact search itself is ambiguous (many tied scores); then the best pair is
    returned and ``Tuning.recall < target`` says so. A flat index is exact: recall 1 without measuring."""
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    kind = index_kind(index)
    if kind == "flat":
        return Tuning(0, 0, 1.0, k, target, 0)
    n = index.ntotal
    if len(vectors) != n:
        raise ValueError(f"vectors has {len(vectors)} rows but the index holds {n}; pass the indexed vectors")
    k = min(k, n - 1)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False))
    truth = exact_neighbours(vectors, rows, k, chunk=chunk)
    ivf = faiss.extract_index_ivf(index)
    ranks, sizes = _list_ranks(ivf, vectors, rows, truth)
    coverage = np.bincount(ranks.ravel(), minlength=ivf.nlist).cumsum() / ranks.size  # [p - 1]: probing p lists
    tried: list[tuple[int, int, float]] = []

    def recall(nprobe: int, rerank: int) -> float:
        ivf.nprobe = nprobe
        found = [[p for p, _ in hits] for hits in neighbours(index, vectors, rows, k, rerank=rerank)]
        r = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
        tried.append((nprobe, rerank, r))
        return r

    def least_nprobe(share: float) -> int:
        return int(min(ivf.nlist, np.searchsorted(coverage, share - 1e-9) + 1))

    if kind == "ivf":
        passing = next(([(p, 0)] for p in _rising(least_nprobe(target), ivf.nlist) if recall(p, 0) >= target), [])
    else:
        passing = []
        for nprobe in sorted({least_nprobe(target), least_nprobe((1 + target) / 2)}):
            exhaustive = -(-int(sizes[nprobe - 1]) // (k + 1))  # every vector nprobe lists hold, for any query
            ivf.nprobe = nprobe
            guess = _predicted_rerank(index, vectors, rows, truth, target, exhaustive)
            rerank = _least_rerank(lambda r, p=nprobe: recall(p, r) >= target, exhaustive, guess)
            if rerank:
                passing.append((nprobe, rerank))
    if passing:  # the cheapest: PQ codes scanned plus float32 rows re-scored per query
        mean_list = n / ivf.nlist
        code = faiss.downcast_index(index).code_size if kind == "ivfpq" else 4 * index.d
        nprobe, rerank = min(passing, key=lambda t: t[0] * mean_list * code + t[1] * (k + 1) * index.d * 4)
        r = next(v for p, d, v in reversed(tried) if (p, d) == (nprobe, rerank))
    else:  # best effort: the recall says how far from the target it is
        nprobe, rerank, r = max(tried, key=lambda t: (t[2], -t[0], -t[1]))
    ivf.nprobe = nprobe
    return Tuning(nprobe, rerank, r, k, target, len(rows), tried)


def _list_ranks(ivf: faiss.IndexIVF, vectors: np.ndarray, rows: np.ndarray,
                truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the visiting rank (0 = probed first) of the list holding each of its true
    neighbours, and ``sizes[p - 1]``: the most vectors the first ``p`` lists of any query hold."""
    lists = np.empty(ivf.ntotal, dtype=np.int64)  # the list each vector was added to
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            lists[faiss.rev_swig_ptr(invlists.get_ids(lst), size)] = lst
    q = normalize(np.asarray(vectors[rows]))  # rows are sorted
    _, order = ivf.quantizer.search(q, ivf.nlist)  # each query's lists, in the order it probes them
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.arange(ivf.nlist)[None, :], axis=1)
    ranks = np.take_along_axis(rank_of, lists[truth], axis=1)
    list_sizes = np.array([invlists.list_size(lst) for lst in range(ivf.nlist)], dtype=np.int64)
    return ranks, list_sizes[order].cumsum(axis=1).max(axis=0)


def _rising(first: int, last: int) -> list[int]:
    """``first``, then doublings up to ``last`` (IVF-Flat: only tied scores make recall miss the coverage)."""
    out = [first]
    while out[-1] < last:
        out.append(min(last, out[-1] * 2))
    return out


def _predicted_rerank(index: faiss.Index, vectors: np.ndarray, rows: np.ndarray, truth: np.ndarray,
                      target: float, exhaustive: int) -> int:
    """The least re-rank depth that reaches ``target`` at the index's current ``nprobe``, from one search.

    Re-ranking ``depth * (k + 1)`` candidates (as :func:`neighbours` asks for) with exact cosines keeps every true
    neighbour among them (only better true neighbours and the query's own row can outscore it), so a true
    neighbour found at candidate ``c`` (0-based, in code-score order) is kept from depth ``c // (k + 1) + 1``
    on; one search for every candidate gives the recall of every depth. Ties can make the real search differ:
    the caller measures the depth this returns."""
    k = truth.shape[1]
    _, cand = index.search(normalize(np.asarray(vectors[rows])), min(index.ntotal, exhaustive * (k + 1)))
    need = np.full(truth.shape, exhaustive + 1, dtype=np.int64)  # not among them: deeper than any depth
    for i in range(len(rows)):
        match = cand[i][:, None] == truth[i][None, :]
        found = match.any(axis=0)
        need[i, found] = match.argmax(axis=0)[found] // (k + 1) + 1
    return int(np.sort(need.ravel())[max(0, math.ceil(target * need.size) - 1)])


def _least_rerank(passes, exhaustive: int, guess: int) -> int | None:
    """The least re-rank depth (to about 12%) for which ``passes(depth)``, starting from ``guess`` (a depth below
    it is taken to fail): doubling up to ``exhaustive`` (every probed vector re-scored), then bisection; None if
    even that fails."""
    lo, depth = guess - 1, min(max(1, guess), exhaustive)
    while not passes(depth):
        if depth >= exhaustive:
            return None
        lo, depth = depth, min(exhaustive, depth * 2)
    while depth - lo > max(1, depth // 8):
        mid = (lo + depth) // 2
        lo, depth = (lo, mid) if passes(mid) else (mid, depth)
    return depth


# -- queries ---------------------------------------------------------------------------------------

def serialize_index(index: faiss.Index) -> bytes:
    """Index -> bytes (a GPU index is copied to the CPU first, so the bytes load anywhere)."""
    return faiss.serialize_index(to_cpu(index)).tobytes()


def to_cpu(index: faiss.Index) -> faiss.Index:
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def deserialize_index(data: bytes) -> faiss.Index:
    """Bytes from :func:`serialize_index` -> CPU index (IVF keeps its ``nprobe``)."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def search(index: faiss.Index, queries: np.ndarray, k: int, *, vectors: np.ndarray | None = None,
           rerank: int | None = None, params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine matches of each query: (scores float32 [Q, k], positions int64 [Q, k]).

    ``k`` is capped at the index size. An IVF index may find fewer than ``k`` vectors in the lists
    it probes; missing slots have position -1 and score -inf. An IVF-PQ index's scores are approximate:
    given the indexed ``vectors``, its best ``rerank * k`` candidates (default 4 * k; the value
    :func:`tune_nprobe` chose, which the caller keeps with the index) are re-scored with exact cosines.
    ``params``: FAISS search parameters, e.g. :func:`restrict_to` some of the indexed rows.
    """
    q = normalize(queries)
    if q.shape[1] != index.d:
        raise ValueError(f"queries have {q.shape[1]} dimensions, the index has {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, index.ntotal)
    if k == 0 or len(q) == 0:
        return np.zeros((len(q), k), np.float32), np.zeros((len(q), k), np.int64)
    rerank = DEFAULT_RERANK if rerank is None else int(rerank)
    if vectors is not None and rerank and index_kind(index) == "ivfpq":
        _, cand = index.search(q, min(index.ntotal, max(k, rerank * k)), params=params)
        return _rerank(q, cand, vectors, k)
    scores, positions = index.search(q, k, params=params)
    scores[positions < 0] = -np.inf
    return scores.astype(np.float32, copy=False), positions.astype(np.int64, copy=False)


_RERANK_TILE_BYTES = 2 << 20  # candidate rows converted to float32 and scored at a time: 2 MB, held in L2 cache
_RERANK_SPREAD = 4  # a block of queries grows while its distinct candidate rows stay within this many times one
# query's candidates: its scores are one matrix product over those rows, so that is the most work it wastes


def _rerank(q: np.ndarray, cand: np.ndarray, vectors: np.ndarray, k: int, budget: int = 64 << 20,
            key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosines of each query's candidate rows (read from ``vectors``), best ``k`` of each, best first:
    (scores float32 [Q, k], positions int64 [Q, k]); candidate -1 (a slot FAISS could not fill) is never
    returned: its slots stay -inf / -1.

    Queries that search the same part of the space share most of their candidates, so they are scored
    together: queries are ordered by ``key`` (e.g. the coarse list each one probes first; by default the
    least candidate position: queries whose candidate sets overlap much tend to share it, and it needs no
    extra search), then cut greedily into blocks whose distinct candidate rows stay within
    ``_RERANK_SPREAD`` times one query's (and ``budget`` bytes of scores). Each block's distinct rows are read
    once, converted to float32 and normalised a tile at a time (cache-sized, into one reused buffer: a fresh
    64 MB array per block spent more time in page faults than in arithmetic, and numpy's float16 cast is
    scalar), and scored against all the block's queries by one BLAS product; each query then takes its own
    candidates' scores (``benchmarks/bench_rerank.py`` measures it against a per-block gather of every
    query's candidates). Each query's result depends on its own scores only; which queries share its block
    changes them by float32 rounding at most (a BLAS product's summation order), so near ties may swap."""
    n_q, c = cand.shape
    scores = np.full((n_q, k), -np.inf, dtype=np.float32)
    positions = np.full((n_q, k), -1, dtype=np.int64)
    if n_q == 0 or c == 0:
        return scores, positions
    order = np.argsort(_min_hash(cand) if key is None else np.asarray(key), kind="stable")
    tile = np.empty((max(1, _RERANK_TILE_BYTES // (4 * q.shape[1])), q.shape[1]), dtype=np.float32)
    most = max(1, budget // (4 * _RERANK_SPREAD * c))  # queries per block: its scores fit the budget
    for block in _sharing_blocks(cand, order, _RERANK_SPREAD * c, most):
        cb = cand[block]
        sims = _block_scores(q[block], cb, vectors, tile)
        if sims is None:
            continue
        if sims.shape[1] > k:  # the best k of each row, then only those sorted (candidates may be thousands)
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable"), 1)
        else:
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(sims, top, 1)
        scores[block] = best
        positions[block] = np.where(np.isfinite(best), np.take_along_axis(cb, top, 1), -1)
    return scores, positions


def _min_hash(cand: np.ndarray) -> np.ndarray:
    """Each row's least candidate position (-1 slots ignored; a row of none: -1)."""
    valid = cand >= 0
    least = np.where(valid, cand, np.iinfo(np.int64).max).min(axis=1)
    return np.where(valid.any(axis=1), least, -1)


def _sharing_blocks(cand: np.ndarray, order: np.ndarray, spread: int, most: int) -> Iterator[np.ndarray]:
    """Runs of ``order`` (query numbers), each at most ``most`` queries and, past its first query, at most
    ``spread`` distinct candidate rows (counted with a mark per row, reset after each block)."""
    seen = np.zeros(max(int(cand.max()), 0) + 1, dtype=bool)
    start, count = 0, 0
    for i, query in enumerate(order):
        row = cand[query]
        row = row[row >= 0]  # -1: a slot FAISS could not fill, no row to read
        new = np.unique(row[~seen[row]])
        if i > start and (i - start >= most or count + len(new) > spread):
            yield order[start:i]
            done = cand[order[start:i]]
            seen[done[done >= 0]] = False
            start, count, new = i, 0, np.unique(row)
        seen[new] = True
        count += len(new)
    yield order[start:]


def _block_scores(qb: np.ndarray, cb: np.ndarray, vectors: np.ndarray, tile: np.ndarray) -> np.ndarray | None:
    """Cosines (B, C) of queries ``qb`` (normalised) with their candidates ``cb`` (-1: -inf), or None when
    no query has any: each distinct row read once, a ``tile`` of rows at a time, scored by one product and
    divided by the rows' norms (the B scores of a row, not its D values: one pass over the tile saved)."""
    rows = np.unique(cb[cb >= 0])
    if rows.size == 0:
        return None
    import torch

    full = np.empty((rows.size, len(qb)), dtype=np.float32)  # by candidate row: each tile's scores contiguous
    step = len(tile)
    for s in range(0, rows.size, step):
        part = tile[:min(step, rows.size - s)]
        _as_float32(np.asarray(vectors[rows[s:s + step]]), part)
        norms = torch.linalg.vector_norm(torch.from_numpy(part), dim=1).numpy()  # vectorised; einsum took 2x
        if not np.isfinite(norms).all():  # NaN/inf rows (or float32 overflow): normalize says what to do
            part[:] = normalize(part)
            norms = np.ones(len(part), dtype=np.float32)
        out = full[s:s + len(part)]
        np.matmul(part, qb.T, out=out)
        out /= np.where(norms > 0, norms, 1)[:, None]  # a zero row scores 0, as normalize leaves it
    sims = np.take_along_axis(full.T, np.searchsorted(rows, np.maximum(cb, 0)), 1)
    sims[cb < 0] = -np.inf
    return sims


def _as_float32(src: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = src`` as float32: float16 through torch, whose cast is vectorised (numpy's is a scalar loop,
    7 to 20 times slower as measured here: it was most of the re-ranking time); values are the same (float16 -> float32 is exact)."""
    import torch

    if src.dtype == np.float16:
        torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(src)))
    else:
        np.copyto(out, src, casting="unsafe")


def neighbours(index: faiss.Index, vectors: np.ndarray, positions: np.ndarray | list[int], k: int, *,
               exclude_self: bool = True, rerank: int | None = None) -> list[list[tuple[int, float]]]:
    """Top-``k`` ``(position, cosine)`` neighbours of rows ``positions`` of the indexed ``vectors``.

    With ``exclude_self`` the query row itself is never returned: ``k + 1`` are fetched and the row
    dropped (or, if ties pushed it out, the last one). Other rows that are exact duplicates of the
    query are different images and are kept, with cosine 1.0, so a row with many duplicates has
    only duplicates as neighbours. Slots an IVF index could not fill are left out. ``vectors`` may be
    memory-mapped: only the query rows (and an IVF-PQ index's candidates) are read.
    """
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if len(vectors) != index.ntotal:
        raise ValueError(f"vectors has {len(vectors)} rows but the index holds {index.ntotal}; "
                         f"pass the array the index was built from")
    if len(pos) and (pos.min() < 0 or pos.max() >= len(vectors)):
        raise IndexError(f"positions must lie in [0, {len(vectors)}), got {pos.min()}..{pos.max()}")
    order = np.argsort(pos, kind="stable")
    queries = np.empty((len(pos), vectors.shape[1]), dtype=np.float32)
    queries[order] = np.asarray(vectors[pos[order]], dtype=np.float32)  # sorted reads: kind to memory maps
    scores, found = search(index, queries, k + 1 if exclude_self else k, vectors=vectors, rerank=rerank)
    out = []
    for row, s, f in zip(pos, scores, found):
        keep = (f >= 0) & ((f != row) if exclude_self else True)
        out.append([(int(p), float(v)) for p, v in zip(f[keep][:k], s[keep][:k])])
    return out


def knn_graph(index: faiss.Index, vectors: np.ndarray, k: int, *, chunk: int = 4096,
              rerank: int | None = None, rows: np.ndarray | None = None,
              progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Positions (N, k) of every row's ``k`` nearest other rows through ``index`` (exact for a flat index;
    IVF at its tuned recall), queried ``chunk`` rows at a time; slots an IVF search could not fill are -1.
    Each row's list is what :func:`neighbours` gives it (the row itself left out, duplicates kept).

    ``rows`` (index positions, no repeats): the graph of those rows alone, each searched among them only
    (:func:`restrict_to`), as if the index held nothing else; row ``r`` of the result is index row ``rows[r]``
    and its neighbours are given as places in ``rows``. Recall on part of the rows is not the tuned recall
    of the whole index: :func:`measure_recall` measures it.

    An IVF index's rows are queried grouped by the list that holds them (:func:`_list_order`): rows of one
    list probe the same lists, so an IVF-PQ re-rank block reads and normalises far fewer distinct candidate
    rows (in row order, each row was read and normalised again for nearly every query that had it as a
    candidate: at N = 20k, k = 100, 2048-d, the graph took 57 s, 24 s of it normalising; grouped, 21 s).
    Every query is searched and re-ranked on its own, so the order changes no row's result (FAISS may score
    a batch of under 20 queries with another kernel, ulp apart: a last chunk that small holds other rows).

    ``progress(done, total)`` is called after each chunk with the rows graphed so far (minutes at a million
    rows on a CPU, so a job can show how far it is)."""
    n = index.ntotal
    if len(vectors) != n:
        raise ValueError(f"vectors has {len(vectors)} rows but the index holds {n}; pass the array the index was built from")
    place, params, m = None, None, n
    if rows is not None:
        rows = _check_rows(rows, n)
        m = len(rows)
        place = np.full(n, -1, dtype=np.int64)  # index position -> row of the result (-1: not graphed)
        place[rows] = np.arange(m)
        params = restrict_to(index, rows)
    if not 1 <= k < m:
        raise ValueError(f"k must be in [1, N) = [1, {m}), got {k}")
    out = np.full((m, k), -1, dtype=np.int64)
    order = _list_order(index)
    if place is not None:
        order = order[place[order] >= 0]
    for start in range(0, m, chunk):
        pos = order[start:start + chunk]
        ascending = np.argsort(pos, kind="stable")
        queries = np.empty((len(pos), vectors.shape[1]), dtype=np.float32)
        queries[ascending] = np.asarray(vectors[pos[ascending]], dtype=np.float32)  # sorted reads: kind to memory maps
        _, found = search(index, queries, k + 1, vectors=vectors, rerank=rerank, params=params)
        keep = (found >= 0) & (found != pos[:, None])  # the row itself never; slots left empty neither
        first = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the first k kept hits, in rank order
        hits = np.where(np.take_along_axis(keep, first, 1), np.take_along_axis(found, first, 1), -1)
        if place is None:
            out[pos] = hits
        else:
            out[place[pos]] = np.where(hits >= 0, place[np.maximum(hits, 0)], -1)
        if progress is not None:
            progress(start + len(pos), m)
    return out


def _list_order(index: faiss.Index) -> np.ndarray:
    """Row positions grouped by the inverted list that holds them (an IVF index on the CPU, rows added in
    order), else ``0..N-1``."""
    n = index.ntotal
    ivf = faiss.try_extract_index_ivf(index) if isinstance(index, faiss.Index) else None
    if ivf is None or not isinstance(ivf, faiss.IndexIVF):
        return np.arange(n, dtype=np.int64)
    lists = ivf.invlists
    ids = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist)
           if lists.list_size(i)]
    order = np.concatenate(ids).astype(np.int64) if ids else np.empty(0, dtype=np.int64)
    if len(order) != n or not np.array_equal(np.sort(order), np.arange(n)):
        return np.arange(n, dtype=np.int64)  # ids that are not the row positions: plain order
    return order
