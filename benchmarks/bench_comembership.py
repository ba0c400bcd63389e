"""featscope ``comembership_curve`` against the naive approach, side by side in one run (METHOD.md, analysis 2).

featscope: FAISS K-means on all N points of both spaces at each K, then exact pair probabilities from
the contingency table (O(N log N)) plus ARI / NMI / Fowlkes-Mallows. Baseline: scikit-learn ``KMeans``
(same K, ``n_init=1``, ``max_iter`` = featscope's ``niter``, ``random_state`` = seed, its default
k-means++ init) on both spaces, then explicit pair counting over all i < j (vectorised over chunks
of rows, O(N^2)) and the same sklearn scores.

Data: N random float32 vectors per space (independent Gaussians) unless ``--embeddings A.npy B.npy``
gives real cached embeddings (same rows = same images). K: ``--n-k`` log-spaced values from 2 to 1000,
clipped to N; one seed. The baseline can be slow, so ``--baseline-ks`` times it on a subset of K; the
ratio is then reported on that subset only, with featscope re-timed on exactly the same K.

Correctness check: the baseline's labelings are fed to featscope's formula too, and the max abs
difference from the explicit pair counts is printed (expected 0).

    .venv/bin/python benchmarks/bench_comembership.py [--n 20000] [--dim 2048] [--n-k 15] [--seed 0]
        [--niter 20] [--baseline-ks 2 10 100] [--threads T] [--embeddings A.npy B.npy]

``--threads`` caps both sides' thread pools (FAISS's OpenMP and sklearn's via threadpoolctl). On a
machine whose cores are busy with other work, OpenMP spin-waiting makes multi-threaded K-means on
either side erratic (10-20x slower); use ``--threads 1`` there and compare like with like.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from threadpoolctl import threadpool_limits
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, fowlkes_mallows_score, normalized_mutual_info_score

from featscope.analysis.clustering import clip_k_grid, k_grid
from featscope.analysis.comembership import comembership_curve, conditional_same_cluster


def explicit_pair_probabilities(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> tuple[float, float]:
    """(P(same B | same A), P(same A | same B)) by comparing every pair i < j, ``chunk`` rows at a time."""
    n = len(a)
    cols = np.arange(n)
    both = in_a = in_b = 0
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        upper = cols[None, :] > np.arange(i0, i1)[:, None]
        sa = (a[i0:i1, None] == a[None, :]) & upper
        sb = (b[i0:i1, None] == b[None, :]) & upper
        both += int(np.count_nonzero(sa & sb))
        in_a += int(np.count_nonzero(sa))
        in_b += int(np.count_nonzero(sb))
    return (both / in_a if in_a else float("nan")), (both / in_b if in_b else float("nan"))


def baseline(x_a: np.ndarray, x_b: np.ndarray, ks: np.ndarray, seed: int, niter: int, chunk: int) -> dict:
    """sklearn KMeans + explicit pair counting at each K; returns labels, probabilities and timings."""
    out = {"labels": [], "p": [], "t_kmeans": 0.0, "t_count": 0.0}
    for k in ks:
        t0 = time.perf_counter()
        la = KMeans(n_clusters=int(k), n_init=1, max_iter=niter, random_state=seed).fit_predict(x_a)
        lb = KMeans(n_clusters=int(k), n_init=1, max_iter=niter, random_state=seed).fit_predict(x_b)
        t1 = time.perf_counter()
        p = explicit_pair_probabilities(la, lb, chunk)
        adjusted_rand_score(la, lb), normalized_mutual_info_score(la, lb), fowlkes_mallows_score(la, lb)
        t2 = time.perf_counter()
        out["t_kmeans"] += t1 - t0
        out["t_count"] += t2 - t1
        out["labels"].append((la, lb))
        out["p"].append(p)
        print(f"  baseline K={int(k):5d}: kmeans {t1 - t0:8.2f} s, pair count + scores {t2 - t1:8.2f} s", flush=True)
    return out


def timed_curve(x_a: np.ndarray, x_b: np.ndarray, ks: np.ndarray, seed: int, niter: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    curve = comembership_curve(x_a, x_b, ks=ks, seeds=(seed,), niter=niter)
    return time.perf_counter() - t0, curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--n-k", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=1024, help="rows per block of the explicit pair count")
    ap.add_argument("--baseline-ks", type=int, nargs="+", default=None,
                    help="time the baseline on these K only (default: every K of the grid)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both sides (default: all cores)")
    ap.add_argument("--embeddings", nargs=2, metavar=("A.npy", "B.npy"), default=None)
    args = ap.parse_args()
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)
        with threadpool_limits(limits=args.threads):
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    """The whole comparison for parsed command-line ``args``."""

    if args.embeddings:
        x_a, x_b = (np.ascontiguousarray(np.load(p), dtype=np.float32) for p in args.embeddings)
        if x_a.shape[0] != x_b.shape[0]:
            raise SystemExit(f"{args.embeddings[0]} has {x_a.shape[0]} rows, {args.embeddings[1]} {x_b.shape[0]}")
        source = f"embeddings {args.embeddings[0]} {x_a.shape}, {args.embeddings[1]} {x_b.shape}"
    else:
        rng = np.random.default_rng(args.seed)
        x_a = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        x_b = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        source = f"random float32, N={args.n}, dim={args.dim} (both spaces)"
    n = x_a.shape[0]
    ks = clip_k_grid(k_grid(2, 1000, args.n_k), n)
    base_ks = ks if args.baseline_ks is None else clip_k_grid(np.array(args.baseline_ks), n)
    subset = args.baseline_ks is not None and not np.array_equal(base_ks, ks)

    print(f"data: {source}")
    print(f"threads: {args.threads or 'all'} (FAISS sees {faiss.omp_get_max_threads()})")
    print(f"K grid ({len(ks)}): {ks.tolist()}; seed {args.seed}; niter / max_iter {args.niter}")
    print(f"baseline K ({'SUBSET' if subset else 'full grid'}): {base_ks.tolist()}")

    t_fs_full, curve = timed_curve(x_a, x_b, ks, args.seed, args.niter)
    print(f"featscope comembership_curve, full grid: {t_fs_full:.2f} s")
    for k, p_ab, p_ba in zip(curve.ks, curve.a_to_b, curve.b_to_a):
        print(f"  K={int(k):5d}  P(B|A)={p_ab:.6f}  P(A|B)={p_ba:.6f}")

    if subset:
        t_fs, _ = timed_curve(x_a, x_b, base_ks, args.seed, args.niter)
        print(f"featscope comembership_curve, baseline subset: {t_fs:.2f} s")
    else:
        t_fs = t_fs_full

    base = baseline(x_a, x_b, base_ks, args.seed, args.niter, args.chunk)
    t_base = base["t_kmeans"] + base["t_count"]

    diffs, count_times = [], []
    for (la, lb), p in zip(base["labels"], base["p"]):
        t0 = time.perf_counter()
        q = conditional_same_cluster(la, lb)
        count_times.append(time.perf_counter() - t0)
        diffs.append(max(abs(q[0] - p[0]), abs(q[1] - p[1])))

    label = "SUBSET of K " + str(base_ks.tolist()) if subset else "full K grid"
    print()
    print(f"=== timings on {label} ===")
    print(f"featscope (FAISS K-means + contingency formula + scores): {t_fs:10.2f} s")
    print(f"baseline  (sklearn KMeans + explicit pair count + scores): {t_base:10.2f} s "
          f"(kmeans {base['t_kmeans']:.2f} s, pair count + scores {base['t_count']:.2f} s)")
    print(f"ratio baseline / featscope: {t_base / t_fs:.1f}x (target >= 20x)")
    print(f"counting alone: explicit {base['t_count']:.3f} s vs formula {sum(count_times):.4f} s "
          f"({base['t_count'] / max(sum(count_times), 1e-9):.0f}x)")
    print(f"identical labelings -> max |formula - explicit pair count| = {max(diffs):.3g} over {len(diffs)} K")


if __name__ == "__main__":
    main()
