"""2-D maps of an embedding space (METHOD.md, analysis 4: t-SNE of Conv5 features, Fig. 7).

``project`` turns (N, D) features into (N, n_components) coordinates with t-SNE (openTSNE,
FFT-accelerated for large N, on an exact FAISS k-NN graph), UMAP (umap-learn) or PCA (scikit-learn). ``align_procrustes`` and
``project_pair`` put a second backbone's map into the first one's frame, so the two pictures can be
compared side by side without an arbitrary rotation or reflection between them.

Metric: ``"cosine"`` (featscope's default everywhere) L2-normalises the rows first and then works
with Euclidean distances. The chordal distance between unit vectors, sqrt(2 - 2 cos), is monotone in
cosine similarity, so neighbourhoods are exactly the cosine ones, and - unlike a cosine metric
evaluated *after* PCA - it survives the PCA pre-reduction (a centring and a rotation, then truncation).

t-SNE neighbours: openTSNE would find them itself with Annoy (approximate, and slow even on 50 dims);
``_knn_graph`` instead runs an exact FAISS ``IndexFlatL2`` search on the (PCA-reduced) rows, and the
perplexity-calibrated affinities are built from those precomputed neighbours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA

from featscope.analysis.arrays import as_embeddings

Method = Literal["tsne", "umap", "pca"]
Metric = Literal["cosine", "euclidean"]
_METHODS = ("tsne", "umap", "pca")
_METRICS = ("cosine", "euclidean")


@dataclass(frozen=True, eq=False)
class Projection:
    """``coords`` (N, n_components) float32, row i = image i; ``method`` and the ``params`` it ran with."""

    coords: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"method", "params", "coords": [[x, y], ...]}``."""
        return {"method": self.method, "params": dict(self.params), "coords": self.coords.tolist()}


class Alignment(NamedTuple):
    """``aligned = scale * other @ rotation + translation`` (least squares onto the reference)."""

    aligned: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray


# Below this many points ``n_jobs=-1`` means one thread: the per-iteration work is too small to share,
# and threads spin-waiting on a busy machine made a 200-point t-SNE take 11.9 s instead of 0.6 s.
_SMALL_N = 5000


def _resolve_n_jobs(n_jobs: int, n: int | None = None) -> int:
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be -1 (all cores) or a positive int, got {n_jobs!r}")
    if n_jobs == -1:
        return 1 if n is not None and n < _SMALL_N else (os.cpu_count() or 1)
    return int(n_jobs)


def check_params(n: int, d: int, method: str, *, n_components: int = 2, perplexity: float = 30.0,
                 n_neighbors: int = 15, min_dist: float = 0.1, pca_dims: int | None = 50, metric: str = "cosine",
                 n_iter: int = 500, early_exaggeration_iter: int = 250, fft_ints_in_interval: float = 1.5,
                 fft_min_intervals: int = 30) -> None:
    """Refuse parameters :func:`project` cannot use on ``n`` points of ``d`` dimensions (ValueError saying
    why); cheap, so a caller can check a request before it loads any vectors."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be a positive int, got {n_components!r}")
    if n <= n_components + 1:
        raise ValueError(f"need more than n_components + 1 = {n_components + 1} rows to project, got N={n}")
    if method == "pca" and n_components > min(n, d):
        raise ValueError(f"PCA gives at most min(N, D) = {min(n, d)} components; lower n_components")
    if pca_dims is not None and (not isinstance(pca_dims, (int, np.integer)) or pca_dims < n_components):
        raise ValueError(f"pca_dims must be None or an int >= n_components ({n_components}), "
                         f"got {pca_dims!r}")
    if method == "tsne":
        if not perplexity > 0 or not perplexity < n / 3:
            raise ValueError(f"perplexity must be in (0, N/3) = (0, {n / 3:.1f}) for N={n} points, "
                             f"got {perplexity}; lower perplexity (5-50 is usual) or project more points")
        if n_iter < 1 or early_exaggeration_iter < 0:
            raise ValueError("n_iter must be >= 1 and early_exaggeration_iter >= 0")
        if not fft_ints_in_interval > 0 or not isinstance(fft_min_intervals, (int, np.integer)) \
                or fft_min_intervals < 1:
            raise ValueError(f"fft_ints_in_interval must be > 0 and fft_min_intervals a positive int, got "
                             f"{fft_ints_in_interval!r} and {fft_min_intervals!r}")
    if method == "umap":
        if not 2 <= n_neighbors < n:
            raise ValueError(f"n_neighbors must be in [2, N) = [2, {n}), got {n_neighbors}")
        if min_dist < 0:
            raise ValueError(f"min_dist must be >= 0, got {min_dist}")


def project(x: np.ndarray, method: Method = "tsne", *, n_components: int = 2, perplexity: float = 30.0,
            n_neighbors: int = 15, min_dist: float = 0.1, pca_dims: int | None = 50, seed: int | None = 0,
            n_jobs: int = -1, metric: Metric = "cosine", n_iter: int = 500,
            early_exaggeration_iter: int = 250, fft_ints_in_interval: float = 1.5,
            fft_min_intervals: int = 30) -> Projection:
    """Project features ``x`` (N, D) to ``n_components`` dimensions.

    - ``"tsne"``: openTSNE with PCA initialisation (stable global layout, reproducible for a seed),
      ``n_jobs`` threads (-1: all cores from 5,000 points up, one below), FFT-interpolated gradients (O(N) per iteration) from 10,000 points up;
      below that openTSNE's Barnes-Hut is faster (FFT's fixed grid cost dominates), and it is also
      used for n_components > 2, which the FFT method does not support.
      Affinities: perplexity-calibrated Gaussians on each point's exact k = min(N - 1, 3 * perplexity)
      nearest neighbours (FAISS ``IndexFlatL2`` on the PCA-reduced rows, ``n_jobs`` threads).
      ``early_exaggeration_iter`` + ``n_iter`` optimisation steps (openTSNE's defaults: 250 + 500);
      lower them for quick previews.
      FFT grid (only used by the FFT method): the embedding's bounding box is cut into
      max(``fft_min_intervals``, extent / ``fft_ints_in_interval``) intervals per axis, with 3
      interpolation points each. openTSNE's defaults (1 and 50) keep intervals <= 1 unit wide; ours
      (1.5 and 30) make intervals up to 1.5 units wide, which shrinks the FFT grid (its cost grows
      with the square of the map's extent and dominates late iterations) about 2x for a small loss
      of gradient accuracy (10,000-point benchmark: KL 2.155 vs 2.129, 10-NN preservation 0.196
      vs 0.208). Pass 1 and 50 for openTSNE's exact behaviour.
    - ``"umap"``: umap-learn. A fixed ``seed`` makes UMAP deterministic but umap-learn then runs
      single-threaded (it disables parallelism for reproducibility); pass ``seed=None`` for speed.
    - ``"pca"``: the first ``n_components`` principal components (``pca_dims`` is ignored).

    ``pca_dims``: t-SNE/UMAP first reduce to this many principal components (randomized, seeded
    PCA), which removes noise dimensions and makes neighbour search far cheaper; ``None`` skips it,
    as does a value >= min(N, D).
    """
    arr = as_embeddings(x)
    n, d = arr.shape
    check_params(n, d, method, n_components=n_components, perplexity=perplexity, n_neighbors=n_neighbors,
                 min_dist=min_dist, pca_dims=pca_dims, metric=metric, n_iter=n_iter,
                 early_exaggeration_iter=early_exaggeration_iter, fft_ints_in_interval=fft_ints_in_interval,
                 fft_min_intervals=fft_min_intervals)
    threads = _resolve_n_jobs(n_jobs, n)

    if metric == "cosine":
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
    params: dict[str, Any] = {"n_components": int(n_components), "metric": metric, "seed": seed}

    if method == "pca":
        coords = PCA(n_components=n_components, random_state=seed).fit_transform(arr)
        return Projection(np.ascontiguousarray(coords, dtype=np.float32), "pca", params)

    used_pca = pca_dims is not None and pca_dims < min(n, d)
    if used_pca:
        arr = PCA(n_components=pca_dims, svd_solver="randomized", random_state=seed).fit_transform(arr)
    params["pca_dims"] = int(pca_dims) if used_pca else None
    arr = np.ascontiguousarray(arr, dtype=np.float32)

    if method == "tsne":
        k = min(n - 1, int(3 * perplexity))
        coords = _tsne(arr, n_components, perplexity, k, seed, threads, n_iter, early_exaggeration_iter,
                       float(fft_ints_in_interval), int(fft_min_intervals))
        params.update(perplexity=float(perplexity), k_neighbors=k, knn="faiss-exact", n_iter=int(n_iter),
                      early_exaggeration_iter=int(early_exaggeration_iter),
                      fft_ints_in_interval=float(fft_ints_in_interval),
                      fft_min_intervals=int(fft_min_intervals), n_jobs=threads)
    else:
        coords = _umap(arr, n_components, n_neighbors, min_dist, seed, threads)
        params.update(n_neighbors=int(n_neighbors), min_dist=float(min_dist),
                      n_jobs=1 if seed is not None else threads)
    return Projection(np.ascontiguousarray(coords, dtype=np.float32), method, params)


def _knn_graph(arr: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-NN of every row of ``arr`` (N, d) among the other rows.

    Returns ``(indices, distances)``, both (N, k), nearest first; ``indices`` int64 positions,
    ``distances`` float64 Euclidean distances. FAISS ``IndexFlatL2`` with ``threads`` OpenMP threads
    (restored afterwards). A row's own position is removed by position, never by distance, so exact
    duplicates stay each other's neighbours at distance 0; if duplicates pushed a row's own position
    out of its top k + 1, the last hit is dropped instead.
    """
    n, d = arr.shape
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N) = [1, {n}), got {k}")
    x = np.ascontiguousarray(arr, dtype=np.float32)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        index = faiss.IndexFlatL2(d)
        index.add(x)
        sq, found = index.search(x, k + 1)
    finally:
        faiss.omp_set_num_threads(before)
    drop = found == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    indices = found[keep].reshape(n, k).astype(np.int64, copy=False)
    distances = np.sqrt(np.maximum(sq[keep].reshape(n, k), 0.0), dtype=np.float64)
    return indices, distances


def _tsne(arr: np.ndarray, n_components: int, perplexity: float, k: int, seed: int | None, threads: int,
          n_iter: int, early_exaggeration_iter: int, ints_in_interval: float,
          min_num_intervals: int) -> np.ndarray:
    # imported here: heavy, and only t-SNE needs it
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    indices, distances = _knn_graph(arr, k, threads)
    affinities = PerplexityBasedNN(perplexity=perplexity, knn_index=PrecomputedNeighbors(indices, distances),
                                   n_jobs=threads)
    tsne = TSNE(n_components=n_components, perplexity=perplexity, initialization="pca",
                metric="euclidean", n_jobs=threads, random_state=seed, n_iter=n_iter,
                early_exaggeration_iter=early_exaggeration_iter,
                ints_in_interval=ints_in_interval, min_num_intervals=min_num_intervals,
                negative_gradient_method="auto" if n_components <= 2 else "bh")
    return np.asarray(tsne.fit(arr, affinities=affinities))


def _umap(arr: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, seed: int | None,
          threads: int) -> np.ndarray:
    import umap  # imported here: numba compilation makes the import slow

    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist,
                        metric="euclidean", random_state=seed, n_jobs=1 if seed is not None else threads)
    return np.asarray(reducer.fit_transform(arr))


def align_procrustes(reference: np.ndarray, other: np.ndarray) -> Alignment:
    """Similarity transform (orthogonal map, uniform scale, shift) taking ``other`` onto ``reference``.

    Both are (N, k) coordinates of the same N points. Least squares after centring: the orthogonal
    matrix comes from ``scipy.linalg.orthogonal_procrustes`` (reflections allowed: a mirrored map
    is the same map), the scale is trace(S) / ||other_centred||^2 where S are the singular values.
    """
    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != oth.shape:
        raise ValueError(f"reference and other must be 2-D arrays of the same shape (same points, same "
                         f"dimensions), got {ref.shape} and {oth.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(oth).all()):
        raise ValueError("coordinates contain NaN or inf")
    mu_ref, mu_oth = ref.mean(axis=0), oth.mean(axis=0)
    a, b = oth - mu_oth, ref - mu_ref
    norm_sq = float((a * a).sum())
    if norm_sq == 0.0:
        raise ValueError("other has all points at one location; there is nothing to align")
    rotation, sv_sum = orthogonal_procrustes(a, b)
    scale = float(sv_sum) / norm_sq
    translation = mu_ref - scale * mu_oth @ rotation
    aligned = scale * oth @ rotation + translation
    return Alignment(aligned, rotation, scale, translation)


def project_pair(x_a: np.ndarray, x_b: np.ndarray, **kwargs: Any) -> tuple[Projection, Projection]:
    """Project two backbones' features of the same N images with the same parameters (``project``'s
    keywords) and align the second map onto the first (``align_procrustes``)."""
    a, b = np.asarray(x_a), np.asarray(x_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"x_a and x_b must be (N, D_a) and (N, D_b) features of the same N images, got "
                         f"shapes {a.shape} and {b.shape}")
    pa = project(a, **kwargs)
    pb = project(b, **kwargs)
    al = align_procrustes(pa.coords, pb.coords)
    params = dict(pb.params, aligned_to="first", procrustes_scale=al.scale)
    return pa, Projection(al.aligned.astype(np.float32), pb.method, params)
