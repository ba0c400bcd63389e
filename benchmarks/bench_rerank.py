"""The IVF-PQ exact re-rank (``featscope.cache.index._rerank``) against the implementation it replaced.

Every analysis above the in-memory limit that searches a stored IVF-PQ index spends most of its time here
(the k-NN probe at 300k: 295 s of 327 s). Data: ``bench_scale``'s clustered 2048-d vectors (float16,
memory-mapped; 1000 clusters), an IVF-PQ index built by ``build_index`` (what a million vectors get) and tuned
by ``tune_nprobe`` for recall@20. Two query sets of ``--queries`` indexed rows, searched for ``k + 1`` as
:func:`featscope.cache.index.neighbours` does, at the tuned re-rank depth (or ``--rerank``):

    probe   random rows in random order (the k-NN probe's test rows, ``approximate_search``)
    graph   rows in inverted-list order (``knn_graph``: closest and contrast pairs, agreement)

For each, FAISS's candidates are computed once, then re-ranked by

    baseline   the previous ``_rerank`` (kept below, verbatim): blocks of ~10 queries, each gathering a
               (block, candidates, D) float32 copy of its rows (read, converted, normalised per block)
    featscope  the current ``_rerank``

and the table gives ms per query, the ratio, and whether the results agree: scores within 1e-6 and the same
positions, except between candidates whose exact cosines are within that of each other (which of two tied
candidates comes first is float32 rounding). Load averages are printed: the machine may be shared. Run niced:

    nice -n 15 python benchmarks/bench_rerank.py [--n 100000] [--queries 4096] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import _vectors  # noqa: E402


# ---------------------------------------------------------------- baseline: the replaced implementation
def _baseline_rerank(q: np.ndarray, cand: np.ndarray, vectors: np.ndarray, k: int,
                     budget: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosines of each query's candidate rows (read from ``vectors``, a few rows per query), best ``k``;
    queries go in blocks whose gathered candidates take at most ``budget`` bytes as float32."""
    from featscope.cache.index import normalize

    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    positions = np.full((len(q), k), -1, dtype=np.int64)
    block = max(1, budget // (cand.shape[1] * q.shape[1] * 4))
    for s in range(0, len(q), block):
        c = cand[s:s + block]
        rows = np.unique(c[c >= 0])
        if rows.size == 0:
            continue
        unit = normalize(np.asarray(vectors[rows]))
        where = np.searchsorted(rows, np.maximum(c, 0))
        sims = np.einsum("qd,qcd->qc", q[s:s + block], unit[where])
        sims[c < 0] = -np.inf
        if sims.shape[1] > k:  # the best k of each row, then only those sorted (candidates may be thousands)
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(part, np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable"), 1)
        else:
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores[s:s + block] = np.take_along_axis(sims, top, 1)
        positions[s:s + block] = np.where(np.isfinite(scores[s:s + block]), np.take_along_axis(c, top, 1), -1)
    return scores, positions


# ---------------------------------------------------------------- agreement
def agreement(old: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray], tol: float = 1e-6) -> dict:
    """How the two results differ: the largest score difference, positions that differ, and those of them
    that are not explained by a near tie (another candidate of the query within ``tol`` of that score)."""
    (so, po), (sn, pn) = old, new
    same_missing = bool(((po < 0) == (pn < 0)).all() and (np.isneginf(so) == np.isneginf(sn)).all())
    finite = np.isfinite(so) & np.isfinite(sn)
    diff = float(np.abs(so[finite] - sn[finite]).max()) if finite.any() else 0.0
    moved = np.argwhere(po != pn)
    unexplained = 0
    for i, j in moved:
        others = np.delete(so[i], j)
        if not (np.abs(others - so[i, j]) <= tol).any() and abs(so[i, j] - so[i, -1]) > tol:
            unexplained += 1
    return {"max_score_diff": diff, "moved": len(moved), "unexplained": unexplained,
            "identical": same_missing and diff <= tol and unexplained == 0}


# ---------------------------------------------------------------- run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=4096, help="rows per query set (one search call, as analyses make)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--rerank", type=int, default=None, help="re-rank depth (default: the tuned one)")
    ap.add_argument("--threads", type=int, default=1, help="FAISS / BLAS / torch threads")
    ap.add_argument("--workdir", default=None, help="folder for the vectors (default: a temporary one, deleted)")
    args = ap.parse_args()

    import faiss
    import torch

    from featscope.cache import index as ci

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}  (threads {args.threads}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')})", flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        t = time.perf_counter()
        x = _vectors(Path(tmp) / "x.npy", args.n, args.dim, "a")
        index = ci.build_index(x, flat_max=0, memory_max=1)  # IVF-PQ, as a million 2048-d vectors get
        tuning = ci.tune_nprobe(index, x, k=args.k, queries=300)
        rerank = tuning.rerank if args.rerank is None else args.rerank
        print(f"{args.n} x {args.dim} float16, IVF-PQ nlist {faiss.extract_index_ivf(index).nlist}, tuned nprobe "
              f"{tuning.nprobe}, depth {tuning.rerank} (recall@{args.k} {tuning.recall:.3f}); re-rank depth used "
              f"{rerank}: {rerank * (args.k + 1)} candidates per query  [{time.perf_counter() - t:.0f} s]", flush=True)
        rng = np.random.default_rng(0)
        sets = {"probe": rng.permutation(args.n)[:args.queries],
                "graph": ci._list_order(index)[args.n // 3:args.n // 3 + args.queries]}
        print(f"\n{'queries':8} {'n':>6} {'baseline ms/q':>14} {'featscope ms/q':>15} {'ratio':>7}  agreement")
        for name, rows in sets.items():
            q = np.empty((len(rows), args.dim), dtype=np.float32)
            up = np.argsort(rows)
            q[up] = ci.normalize(np.asarray(x[rows[up]]))
            _, cand = index.search(q, rerank * (args.k + 1))
            t = time.perf_counter()
            old = _baseline_rerank(q, cand, x, args.k + 1)
            t_old = time.perf_counter() - t
            t = time.perf_counter()
            new = ci._rerank(q, cand, x, args.k + 1)
            t_new = time.perf_counter() - t
            a = agreement(old, new)
            print(f"{name:8} {len(rows):>6} {1000 * t_old / len(rows):>14.3f} {1000 * t_new / len(rows):>15.3f} "
                  f"{t_old / t_new:>7.1f}  identical={a['identical']} (max score diff {a['max_score_diff']:.1e}, "
                  f"{a['moved']} near-tie swaps, {a['unexplained']} unexplained)", flush=True)
        del x
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
