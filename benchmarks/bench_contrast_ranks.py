"""Contrast pairs (close in A, distant in B by rank) of sets too large for memory: exact ranks of the candidates
lowest in B vs B's capped k-NN graph.

Registers ``bench_scale.py``'s pair of clustered synthetic sets (float16; space B a coarser clustering of space
A's images) of ``--n`` images with stored IVF-PQ indexes (what a million 2048-d images get) and sets the
analyses' in-memory limit below them, so ``contrast`` (ranks) takes its large-set path. It then runs twice in
this process, ``force=True``:

    baseline   B's ``rank_cap``-NN graph from its stored IVF-PQ index (every row searched, ``rerank * (cap + 1)``
               candidates re-scored exactly per row), ranks read off that graph: what the analysis did before
    featscope  the candidates ranked exactly, lowest B cosine first, one pass over B per few hundred, until
               ``n_pairs`` are at the cap (``pairs._capped_lowest_in_b``)

and prints wall and CPU seconds of each, their ratio, how many of the pairs the two lists share, and how many of
each list's pairs are at the cap by an exact count (the graph's ranks are approximate: a neighbour its search
missed puts a pair at the cap that is not). Load averages are printed at the start and end. Run niced, e.g.
``nice -n 10 python benchmarks/bench_contrast_ranks.py --n 50000 --dim 2048``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_stored_index import _timed, register_pair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--n-pairs", type=int, default=50)
    ap.add_argument("--workdir", default="/tmp/featscope-contrast-ranks")
    args = ap.parse_args()

    import faiss  # noqa: F401  (imported before the workspace: the threads FAISS sees are this process's)

    import featscope.analysis.arrays as arrays
    import featscope.analysis.pairs as pairs

    size = args.n * args.dim * 4
    arrays.IN_MEMORY_MAX = size - 1
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"load average at start: {os.getloadavg()}; N={args.n:,} x {args.dim}", flush=True)
    try:
        ws, a, b = register_pair(work, args.n, args.dim, size - 1)
        run = lambda: ws.contrast_pairs(a, b, n_pairs=args.n_pairs, force=True)  # noqa: E731
        saved = pairs._capped_lowest_in_b
        pairs._capped_lowest_in_b = lambda *x, **kw: None  # the graph path
        try:
            base, base_s, base_cpu = _timed(run)
        finally:
            pairs._capped_lowest_in_b = saved
        got, got_s, got_cpu = _timed(run)
        assert got.data["knn"]["b"]["exact"] and not base.data["knn"]["b"]["exact"]
        cap = got.data["knn"]["rank_cap"]
        xb = pairs._Space(ws.load_embeddings(b).vectors, "x_b")  # the sets share their images, in one order
        lists = {}
        for name, res in (("baseline", base), ("featscope", got)):
            i, j = (np.array([p[c] for p in res.data["pairs"]], dtype=np.int64) for c in ("i", "j"))
            both = pairs._capped_exact_ranks(xb, np.concatenate([i, j]), np.concatenate([j, i]), cap)
            lists[name] = (set(zip(i.tolist(), j.tolist())), int(np.sum(np.minimum(both[:len(i)], both[len(i):]) == cap)))
        shared = len(lists["baseline"][0] & lists["featscope"][0])
        print(f"\n{'path':<10} {'seconds':>8} {'(cpu)':>8}  pairs at the cap by exact count")
        print(f"{'baseline':<10} {base_s:>8.1f} {base_cpu:>8.1f}  {lists['baseline'][1]} of {len(lists['baseline'][0])}"
              f" (B's graph: recall@10 {base.data['knn']['recall_b']:.3f})")
        print(f"{'featscope':<10} {got_s:>8.1f} {got_cpu:>8.1f}  {lists['featscope'][1]} of {len(lists['featscope'][0])}"
              f" ({got.data['knn']['b']['pairs_ranked']} candidates ranked)")
        print(f"ratio (baseline / featscope): {base_s / got_s:.2f}x wall, {base_cpu / max(got_cpu, 1e-9):.2f}x CPU; "
              f"pairs in both lists: {shared} of {args.n_pairs}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
