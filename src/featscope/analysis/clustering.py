"""K-means on embedding spaces with FAISS, on every point unless sampling is asked for (METHOD.md, analysis 2).

The co-membership curve clusters each space for K from 2 to 1000; its probabilities are only
meaningful if every image is clustered, so :func:`kmeans_labels` trains on *all* N points by default.
``faiss.Kmeans`` silently trains on at most ``max_points_per_centroid * K`` points (256 * K); we raise
that cap so nothing is dropped. Training on a sample is available, but only when the caller passes
``sample=`` explicitly, and then the result says so (``trained_on < n``); every point is still assigned.

Results are deterministic for a given seed, data and thread count (FAISS's random initialisation and
sampling are seeded; assignment ties go to the lowest centroid id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from featscope.analysis.arrays import CHUNK, embeddings_or_stream, fits_in_memory, float_chunks, working_copy

UseGpu = bool | Literal["auto"]


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """One K-means clustering of N points.

    ``labels[i]`` is point i's cluster id in ``[0, k)`` (int64; some ids may be unused when the data
    has fewer than K distinct points); ``centroids`` is ``(k, d)`` float32; ``inertia`` the sum of
    squared L2 distances of all N points to their assigned centroid; ``trained_on`` how many points
    the centroids were trained on (``n`` unless ``sample`` was passed)."""

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    k: int
    seed: int
    n: int
    trained_on: int
    spherical: bool
    gpu: bool

    @property
    def sampled(self) -> bool:
        """True when the centroids were trained on a subset of the points."""
        return self.trained_on < self.n

    def to_dict(self) -> dict:
        """JSON-ready summary (labels included, centroids left out: they are large and rarely wanted)."""
        return {"k": self.k, "seed": self.seed, "n": self.n, "trained_on": self.trained_on,
                "sampled": self.sampled, "spherical": self.spherical, "gpu": self.gpu,
                "inertia": self.inertia, "labels": self.labels.tolist()}


def k_grid(k_min: int = 2, k_max: int = 1000, n: int = 20) -> np.ndarray:
    """About ``n`` unique integers log-spaced from ``k_min`` to ``k_max`` inclusive (int64, ascending).

    Rounding collapses neighbours at the small end, so more log-spaced points are taken until at least
    ``n`` unique values exist (or every integer in the range is used); the result can hold a couple
    more than ``n``. Callers whose N may be below ``k_max`` should pass the grid through
    :func:`clip_k_grid`."""
    k_min, k_max, n = _as_int(k_min, "k_min"), _as_int(k_max, "k_max"), _as_int(n, "n")
    if k_min < 2:
        raise ValueError(f"k_min must be >= 2 (K=1 puts every point in one cluster), got {k_min}")
    if k_max < k_min:
        raise ValueError(f"k_max ({k_max}) must be >= k_min ({k_min})")
    if k_max == k_min:
        return np.array([k_min], dtype=np.int64)
    if n < 2:
        raise ValueError(f"n must be >= 2 to include both k_min and k_max, got {n}")
    span = k_max - k_min + 1
    if n >= span:
        return np.arange(k_min, k_max + 1, dtype=np.int64)
    m = n
    while True:
        ks = np.unique(np.rint(np.geomspace(k_min, k_max, m)).astype(np.int64))
        if len(ks) >= n:
            return ks
        m += 1


def clip_k_grid(ks: np.ndarray | list[int], n_points: int) -> np.ndarray:
    """The values of ``ks`` that a data set of ``n_points`` can support (2 <= K <= n_points), sorted, unique.

    Raises if none remain, so a tiny data set fails loudly instead of giving an empty curve."""
    n_points = _as_int(n_points, "n_points")
    arr = np.asarray(ks)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ks must be a non-empty 1-D list of ints, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ks must be integers, got dtype {arr.dtype}; build it with k_grid()")
    if arr.min() < 2:
        raise ValueError(f"every K must be >= 2, got {int(arr.min())}")
    kept = np.unique(arr[arr <= n_points]).astype(np.int64)
    if kept.size == 0:
        raise ValueError(f"no K in {arr.tolist()} is <= n_points={n_points}; use more points or smaller K")
    return kept


def kmeans_labels(x: np.ndarray, k: int, *, seed: int = 0, niter: int = 20, spherical: bool = False,
                  use_gpu: UseGpu = "auto", sample: int | None = None) -> KMeansResult:
    """Cluster the rows of ``x`` (N, d) into ``k`` clusters with ``faiss.Kmeans``; label every row.

    ``spherical=True`` normalises centroids and assigns by inner product (use on L2-normalised
    embeddings for cosine K-means). ``use_gpu``: ``"auto"`` uses GPUs when this FAISS build has any,
    ``True`` requires them, ``False`` stays on CPU. ``sample``: train the centroids on a seeded random
    subset of this many rows (must be >= k), then assign all rows; ``None`` (default) trains on all.

    A matrix too large to copy into memory under ``arrays.IN_MEMORY_MAX`` (1 GB as float32: a memory-mapped
    set of a million images, float16 on disk) is clustered by :func:`_kmeans_streaming`, Lloyd's iterations
    over row chunks: on a float32 working copy when it fits the working-copy budget
    (:func:`arrays.working_copy`, half the memory available), else reading and converting the memory map on
    every pass (memory O(chunk + k d) for any N). Both give the same result, bit for bit, so a seed's labels
    do not depend on the memory free when the job ran."""
    x = embeddings_or_stream(x, "x")
    n = x.shape[0]
    k = _as_int(k, "k")
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of points N={n}; clip the K grid with clip_k_grid(ks, N)")
    niter = _as_int(niter, "niter")
    if niter < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    seed = _as_int(seed, "seed")
    if sample is not None:
        sample = _as_int(sample, "sample")
        if sample < k:
            raise ValueError(f"sample={sample} must be >= k={k} (each centroid needs a training point)")
    gpu = _resolve_gpu(use_gpu)
    if fits_in_memory(x):
        return _kmeans(x, True, k, seed=seed, niter=niter, spherical=spherical, gpu=gpu, sample=sample)
    # a sample is read once and every row once more: a working copy of all rows would not pay for itself
    rows, checked = (x, False) if sample is not None and sample < n else working_copy(x, "x")
    return _kmeans(rows, checked, k, seed=seed, niter=niter, spherical=spherical, gpu=gpu, sample=sample)


def _kmeans(x: np.ndarray, checked: bool, k: int, *, seed: int, niter: int, spherical: bool, gpu: int,
            sample: int | None, name: str = "x") -> KMeansResult:
    """:func:`kmeans_labels` on checked arguments: FAISS's K-means for a float32 matrix under
    ``IN_MEMORY_MAX``, else :func:`_kmeans_streaming` (``checked``: ``x``'s rows are known to be finite;
    ``name``: what an error calls ``x``)."""
    if not fits_in_memory(x):
        return _kmeans_streaming(x, k, seed=seed, niter=niter, spherical=spherical, gpu=gpu, sample=sample,
                                 checked=checked, name=name)
    n, d = x.shape
    train = x
    if sample is not None and sample < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
        train = np.ascontiguousarray(x[idx])

    n_train = train.shape[0]
    # faiss subsamples when n_train > k * max_points_per_centroid: make that impossible.
    mppc = n_train // k + 1
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=spherical, gpu=gpu,
                      max_points_per_centroid=mppc, min_points_per_centroid=1, verbose=False)
    km.train(train)
    sim_or_dist, assign = km.index.search(x, 1)
    labels = assign[:, 0].astype(np.int64)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    if spherical:  # index is inner product: ||x - c||^2 = ||x||^2 + ||c||^2 - 2 <x, c>
        c2 = np.einsum("ij,ij->i", centroids, centroids)[labels]
        x2 = np.einsum("ij,ij->i", x, x)
        inertia = float(np.sum(np.maximum(x2 + c2 - 2.0 * sim_or_dist[:, 0], 0.0), dtype=np.float64))
    else:
        inertia = float(np.sum(sim_or_dist[:, 0], dtype=np.float64))
    return KMeansResult(labels=labels, centroids=centroids, inertia=inertia, k=k, seed=seed, n=n,
                        trained_on=n_train, spherical=bool(spherical), gpu=gpu > 0)


def _kmeans_streaming(x: np.ndarray, k: int, *, seed: int, niter: int, spherical: bool, gpu: int,
                      sample: int | None, checked: bool = False, chunk: int = CHUNK,
                      name: str = "x") -> KMeansResult:
    """Lloyd's K-means over row chunks of ``x`` (any (N, d) array: a memory-mapped float16 set, or its float32
    working copy). ``checked``: ``x``'s rows are known to be finite; else the first pass over them checks
    (an error names the matrix ``name``).

    Written here because ``faiss.Kmeans`` needs every training point in memory as float32 (8 GB for a
    million 2048-d images), and it starts and splits clusters differently: used on a working copy when one
    fits, and streamed otherwise, it would make a seed's labels depend on the memory free. Same algorithm
    as FAISS: ``k`` distinct seeded rows as initial centroids, then ``niter`` passes of assign (a FAISS flat
    index of the centroids, on the GPUs when there are some) and update (per-cluster sums in float64, one
    sparse one-hot product per chunk); an emptied cluster takes half of the largest one (its centroid nudged
    apart, as FAISS does). A float32 copy gives the same chunks, so the same result as the memory map, with
    no conversion per pass (which, with the finiteness check, took most of the time at small K).
    ``sample`` trains on that many seeded rows (read once, in memory) and assigns every row. Deterministic
    for a seed, data and thread count.
    """
    import scipy.sparse as sp

    n, d = x.shape
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=sample, replace=False)) if sample is not None and sample < n else None
    train = x
    if rows is not None:
        train = np.ascontiguousarray(x[rows], dtype=np.float32)
        if not checked and not np.isfinite(train).all():
            raise ValueError(f"{name} contains NaN or inf (among the rows sampled to train the centroids); drop "
                             "or repair those rows (the same rows in every space)")
    init = np.sort(rng.choice(len(train), size=k, replace=False))
    centroids = np.ascontiguousarray(train[init], dtype=np.float32)
    if spherical:
        centroids = _unit_rows(centroids)

    def assign(data: np.ndarray, cents: np.ndarray):
        nonlocal checked
        index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
        if gpu:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(cents)
        blocks = float_chunks(data, chunk, name, check=not checked) if data is x else [(0, data)]
        for start, block in blocks:
            score, a = index.search(block, 1)
            yield start, block, score[:, 0], a[:, 0]
        checked = checked or data is x  # x's rows are checked on the first pass over them only

    for _ in range(niter):
        sums, counts = np.zeros((k, d), dtype=np.float64), np.zeros(k, dtype=np.int64)
        for _, block, _, a in assign(train, centroids):
            onehot = sp.csr_matrix((np.ones(len(a), np.float32), (a, np.arange(len(a)))), shape=(k, len(a)))
            sums += onehot @ block
            counts += np.bincount(a, minlength=k)
        centroids = _split_empty(sums, counts, rng)
        if spherical:
            centroids = _unit_rows(centroids)
    labels, inertia = np.empty(n, dtype=np.int64), 0.0
    x2 = None
    for start, block, score, a in assign(x, centroids):
        labels[start:start + len(a)] = a
        if spherical:  # inner-product scores: ||x - c||^2 = ||x||^2 + ||c||^2 - 2 <x, c>
            x2 = np.einsum("ij,ij->i", block, block)
            c2 = np.einsum("ij,ij->i", centroids, centroids)[a]
            inertia += float(np.sum(np.maximum(x2 + c2 - 2.0 * score, 0.0), dtype=np.float64))
        else:
            inertia += float(np.sum(score, dtype=np.float64))
    return KMeansResult(labels=labels, centroids=centroids, inertia=inertia, k=k, seed=seed, n=n,
                        trained_on=len(train), spherical=bool(spherical), gpu=gpu > 0)


def _split_empty(sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Centroids from per-cluster sums; each empty cluster takes half of the largest one (FAISS's rule)."""
    cents = np.zeros_like(sums)
    full = counts > 0
    cents[full] = sums[full] / counts[full, None]
    counts = counts.astype(np.float64)
    for j in np.flatnonzero(~full):
        big = int(np.argmax(counts))
        nudge = 1.0 + 1e-5 * np.where(rng.random(sums.shape[1]) < 0.5, -1.0, 1.0)
        cents[j], cents[big] = cents[big] * nudge, cents[big] / nudge
        counts[j] = counts[big] = counts[big] / 2
    return np.ascontiguousarray(cents, dtype=np.float32)


def _unit_rows(c: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return np.ascontiguousarray(np.divide(c, norms, out=np.zeros_like(c), where=norms > 0), dtype=np.float32)


def _resolve_gpu(use_gpu: UseGpu) -> int:
    """Number of GPUs FAISS should use (0 = CPU)."""
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu == "auto":
        return n_gpus
    if use_gpu is True:
        if n_gpus == 0:
            raise ValueError("use_gpu=True but this FAISS build sees no GPU; install faiss-gpu or pass use_gpu='auto'")
        return n_gpus
    if use_gpu is False:
        return 0
    raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")




def _as_int(value: object, name: str) -> int:
    """``value`` as a Python int; rejects bools, floats with fractions and non-numbers."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)
