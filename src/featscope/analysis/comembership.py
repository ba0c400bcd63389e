"""K-means co-membership between two embedding spaces of the same images (METHOD.md, analysis 2; Fig. 6).

For labelings A and B of the same N images, the contingency table n_ij (images in cluster i of A and
cluster j of B) with row sums a_i and column sums b_j gives every pair count without visiting pairs:
pairs together in both = sum C(n_ij, 2), together in A = sum C(a_i, 2), together in B = sum C(b_j, 2). So

    P(same in B | same in A) = (sum n_ij^2 - N) / (sum a_i^2 - N)      direction "a_to_b"
    P(same in A | same in B) = (sum n_ij^2 - N) / (sum b_j^2 - N)      direction "b_to_a"

in O(N log N) time (one sort) and O(N + nnz) memory. Counts are exact integers, so the result equals an
explicit count over all i < j pairs to the last bit. When every cluster of the conditioning labeling is a
singleton there is no pair to condition on: the probability is undefined and returned as ``nan``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, fowlkes_mallows_score, normalized_mutual_info_score

from featscope.analysis.arrays import embeddings_or_stream, fits_in_memory, float_chunks, working_copy
from featscope.analysis.clustering import UseGpu, _as_int, _kmeans, _resolve_gpu, clip_k_grid, k_grid

METRICS: tuple[str, ...] = ("a_to_b", "b_to_a", "ari", "nmi", "fowlkes_mallows")


@dataclass(frozen=True, eq=False)
class Contingency:
    """Non-zero cells of the contingency table of two labelings of the same N points.

    Cell p holds ``counts[p]`` points with label ``labels_a[rows[p]]`` in A and ``labels_b[cols[p]]``
    in B. ``labels_a`` / ``labels_b`` are the sorted distinct labels; ``row_sums`` / ``col_sums`` the
    cluster sizes in that order."""

    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    labels_a: np.ndarray
    labels_b: np.ndarray
    row_sums: np.ndarray
    col_sums: np.ndarray
    n: int

    def to_sparse(self) -> sp.csr_matrix:
        """The table as a ``(len(labels_a), len(labels_b))`` CSR matrix of int64 counts."""
        shape = (len(self.labels_a), len(self.labels_b))
        return sp.csr_matrix((self.counts, (self.rows, self.cols)), shape=shape)

    def to_dict(self) -> dict:
        return {"n": self.n, "rows": self.rows.tolist(), "cols": self.cols.tolist(),
                "counts": self.counts.tolist(), "labels_a": self.labels_a.tolist(),
                "labels_b": self.labels_b.tolist()}


@dataclass(frozen=True, eq=False)
class CoMembershipCurve:
    """Co-membership of two spaces against K, over several K-means seeds.

    ``per_seed[m]`` is ``(len(ks), len(seeds))`` for each metric m in :data:`METRICS`; ``mean[m]`` and
    ``std[m]`` (population std, ddof=0) are over seeds, shape ``(len(ks),)``. ``nan`` marks an undefined
    probability (no same-cluster pair in the conditioning space) and propagates into mean/std.
    ``sample`` is the K-means training sample size, ``None`` when centroids were trained on all N points."""

    ks: np.ndarray
    seeds: tuple[int, ...]
    n: int
    per_seed: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    sample: int | None = None

    @property
    def a_to_b(self) -> np.ndarray:
        """Mean over seeds of P(same in B | same in A) at each K."""
        return self.mean["a_to_b"]

    @property
    def b_to_a(self) -> np.ndarray:
        """Mean over seeds of P(same in A | same in B) at each K."""
        return self.mean["b_to_a"]

    def to_dict(self) -> dict:
        """JSON-ready; ``nan`` becomes ``None``."""
        return {"ks": self.ks.tolist(), "seeds": list(self.seeds), "n": self.n, "sample": self.sample,
                "metrics": list(METRICS),
                "per_seed": {m: _json_floats(v) for m, v in self.per_seed.items()},
                "mean": {m: _json_floats(v) for m, v in self.mean.items()},
                "std": {m: _json_floats(v) for m, v in self.std.items()}}


def contingency(a: np.ndarray, b: np.ndarray) -> Contingency:
    """Contingency table of two integer labelings of the same points (any label values, any ranges)."""
    a, b = _check_pair(a, b)
    labels_a, ia = np.unique(a, return_inverse=True)
    labels_b, ib = np.unique(b, return_inverse=True)
    n_b = len(labels_b)
    codes, counts = np.unique(ia.astype(np.int64) * n_b + ib.astype(np.int64), return_counts=True)
    return Contingency(rows=codes // n_b, cols=codes % n_b, counts=counts.astype(np.int64),
                       labels_a=labels_a, labels_b=labels_b,
                       row_sums=np.bincount(ia, minlength=len(labels_a)).astype(np.int64),
                       col_sums=np.bincount(ib, minlength=n_b).astype(np.int64), n=len(a))


def conditional_same_cluster(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(P(same in B | same in A), P(same in A | same in B)) over all unordered pairs of distinct points.

    Either value is ``nan`` when its conditioning labeling has no pair in one cluster (all singletons)."""
    table = contingency(a, b)
    both, in_a, in_b = _pair_counts(table)
    return _ratio(both, in_a), _ratio(both, in_b)


def pair_agreement_scores(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Symmetric agreement of two labelings: adjusted Rand, NMI (arithmetic) and Fowlkes-Mallows (sklearn)."""
    a, b = _check_pair(a, b)
    return {"ari": float(adjusted_rand_score(a, b)), "nmi": float(normalized_mutual_info_score(a, b)),
            "fowlkes_mallows": float(fowlkes_mallows_score(a, b))}


def comembership_from_labels(labels_a: Sequence[np.ndarray], labels_b: Sequence[np.ndarray],
                             ks: Sequence[int] | np.ndarray, seeds: Sequence[int] | None = None, *,
                             sample: int | None = None,
                             progress: Callable[[int, int], None] | None = None) -> CoMembershipCurve:
    """Co-membership curve from precomputed labelings (e.g. cached K-means results).

    ``labels_a[i]`` / ``labels_b[i]`` hold the labelings at ``ks[i]``: either one ``(N,)`` array (one seed)
    or an ``(n_seeds, N)`` array, row s from seed s; both spaces must have the same N and n_seeds.
    ``seeds`` only names the rows (default ``0..n_seeds-1``); ``sample`` is recorded as given."""
    ks_arr = np.asarray(ks)
    if ks_arr.ndim != 1 or ks_arr.size == 0 or not np.issubdtype(ks_arr.dtype, np.integer):
        raise ValueError(f"ks must be a non-empty 1-D sequence of ints, got {ks!r}")
    if len(labels_a) != len(ks_arr) or len(labels_b) != len(ks_arr):
        raise ValueError(f"need one labeling per K: len(ks)={len(ks_arr)}, len(labels_a)={len(labels_a)}, "
                         f"len(labels_b)={len(labels_b)}")
    stacks_a = [np.atleast_2d(np.asarray(l)) for l in labels_a]
    stacks_b = [np.atleast_2d(np.asarray(l)) for l in labels_b]
    shape = stacks_a[0].shape
    for i, (la, lb) in enumerate(zip(stacks_a, stacks_b)):
        if la.ndim != 2 or la.shape != shape or lb.shape != shape:
            raise ValueError(f"labelings at ks[{i}]={int(ks_arr[i])} have shapes {la.shape} (A) and {lb.shape} (B); "
                             f"every entry must be (N,) or (n_seeds, N) with the same shape {shape}")
    n_seeds, n = shape
    seeds_t = tuple(range(n_seeds)) if seeds is None else tuple(int(s) for s in seeds)
    if len(seeds_t) != n_seeds:
        raise ValueError(f"len(seeds)={len(seeds_t)} but the labelings hold {n_seeds} seed(s) per K")

    per_seed = {m: np.full((len(ks_arr), n_seeds), np.nan) for m in METRICS}
    total, done = len(ks_arr) * n_seeds, 0
    for i in range(len(ks_arr)):
        for s in range(n_seeds):
            for m, v in _all_metrics(stacks_a[i][s], stacks_b[i][s]).items():
                per_seed[m][i, s] = v
            done += 1
            if progress is not None:
                progress(done, total)
    return CoMembershipCurve(ks=ks_arr.astype(np.int64), seeds=seeds_t, n=n, per_seed=per_seed,
                             mean={m: v.mean(axis=1) for m, v in per_seed.items()},
                             std={m: v.std(axis=1) for m, v in per_seed.items()}, sample=sample)


def comembership_curve(x_a: np.ndarray, x_b: np.ndarray, ks: Sequence[int] | np.ndarray | None = None,
                       seeds: Sequence[int] = (0, 1, 2), *, niter: int = 20, use_gpu: UseGpu = "auto",
                       sample: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> CoMembershipCurve:
    """Cluster both spaces with K-means at every K and seed and measure co-membership (Fig. 6).

    ``x_a`` (N, d_a) and ``x_b`` (N, d_b) embed the same N images (row i = image i). ``ks`` defaults to
    ``k_grid(2, 1000, 20)`` clipped to N; an explicit K > N is an error. Seed s clusters both spaces.
    ``progress(done, total)`` is called after each K-means run: every (K, seed) in A, then in B."""
    x_a = embeddings_or_stream(x_a, "x_a")  # above IN_MEMORY_MAX: checked for shape and dtype only (see below)
    x_b = embeddings_or_stream(x_b, "x_b")
    if x_a.shape[0] != x_b.shape[0]:
        raise ValueError(f"x_a has {x_a.shape[0]} rows but x_b has {x_b.shape[0]}; both must embed the same images")
    n = x_a.shape[0]
    if ks is None:
        ks_arr = clip_k_grid(k_grid(2, 1000, 20), n)
    else:
        ks_arr = np.asarray(ks)
        if ks_arr.ndim != 1 or ks_arr.size == 0 or not np.issubdtype(ks_arr.dtype, np.integer):
            raise ValueError(f"ks must be a non-empty 1-D sequence of ints, got {ks!r}")
        if ks_arr.min() < 2:
            raise ValueError(f"every K must be >= 2, got {int(ks_arr.min())}")
        if ks_arr.max() > n:
            raise ValueError(f"K={int(ks_arr.max())} exceeds N={n}; clip the grid with clip_k_grid(ks, {n})")
    seeds_t = tuple(int(s) for s in seeds)
    if not seeds_t:
        raise ValueError("seeds is empty; pass at least one seed, e.g. seeds=(0,)")

    niter = _as_int(niter, "niter")
    if niter < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    if sample is not None and _as_int(sample, "sample") < ks_arr.max():
        raise ValueError(f"sample={sample} must be >= the largest K ({int(ks_arr.max())}): each centroid needs a "
                         "training point")
    gpu = _resolve_gpu(use_gpu)
    b_checked = fits_in_memory(x_b)  # checked by embeddings_or_stream; else checked now, before A's hours
    if not b_checked:
        for _ in float_chunks(x_b, name="x_b"):
            pass
        b_checked = True

    # One space at a time, all of its K values and seeds, so that at most one working copy is held: a space
    # above IN_MEMORY_MAX is copied into memory once when the copy fits the working-copy budget, instead of
    # being read and converted on every K-means pass (arrays.working_copy); same labels either way.
    total, done = 2 * len(ks_arr) * len(seeds_t), 0
    labels: list[list[np.ndarray]] = []
    for x, name, checked in ((x_a, "x_a", False), (x_b, "x_b", b_checked)):
        rows = x
        if not fits_in_memory(x) and (sample is None or sample >= n):
            rows, copied = working_copy(x, name, checked=checked)  # B was checked above: not read twice
            checked = checked or copied
        per_k = []
        for k in ks_arr:
            per_seed = []
            for s in seeds_t:
                per_seed.append(_kmeans(rows, checked, int(k), seed=s, niter=niter, spherical=False, gpu=gpu,
                                        sample=sample, name=name).labels)
                checked = True  # a finished run has read (and checked) every row
                done += 1
                if progress is not None:
                    progress(done, total)
            per_k.append(np.stack(per_seed))
        labels.append(per_k)
        del rows
    return comembership_from_labels(labels[0], labels[1], ks_arr, seeds_t, sample=sample)


def _all_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a_to_b, b_to_a = conditional_same_cluster(a, b)
    return {"a_to_b": a_to_b, "b_to_a": b_to_a, **pair_agreement_scores(a, b)}


def _pair_counts(table: Contingency) -> tuple[int, int, int]:
    """2x the numbers of pairs together in both, in A, in B, as exact ints (int64 holds N^2 for N < 3e9)."""
    n = table.n
    return (int(np.dot(table.counts, table.counts)) - n, int(np.dot(table.row_sums, table.row_sums)) - n,
            int(np.dot(table.col_sums, table.col_sums)) - n)


def _ratio(num: int, den: int) -> float:
    return float("nan") if den == 0 else num / den


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D integer labelings of the same non-empty set of points."""
    a, b = np.asarray(a), np.asarray(b)
    for name, v in (("a", a), ("b", b)):
        if v.ndim != 1:
            raise ValueError(f"labels {name} must be 1-D (one label per point), got shape {v.shape}")
        if not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"labels {name} must be integers, got dtype {v.dtype}; "
                             f"check for NaN, then cast with .astype(np.int64)")
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length ({len(a)} vs {len(b)}); both must label the same points")
    if a.size == 0:
        raise ValueError("labelings are empty; pass at least one labelled point")
    return a, b


def _json_floats(v: np.ndarray) -> list:
    return [None if x != x else float(x) for x in v.ravel().tolist()] if v.ndim == 1 else [_json_floats(r) for r in v]
