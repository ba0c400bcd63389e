"""Neighbour analyses of sets too large for memory: searching each set's stored index vs building and tuning one.

Registers a pair of clustered synthetic embedding sets (float16, space B a coarser clustering of space A's
images: ``bench_scale.py``'s data) of ``--n`` images, whose stored indexes are IVF (``--index-memory-max``
below the vectors' size: IVF-PQ, what a million 2048-d images get), and sets the analyses' in-memory limit
below the sets (``--in-memory-max``), so closest pairs, contrast pairs (ranks) and neighbourhood agreement take
their IVF path as at a million images. Each analysis then runs twice in this process, ``force=True``:

    baseline   the build-and-tune path (what every call did before): an IVF index built and its nprobe tuned
               for each space, then searched (the workspace told that no stored index can serve)
    stored     each set's stored index searched as it is: nothing built or tuned

and the table gives wall and CPU seconds of each, their ratio, and whether the two results are identical (the
stored index is built by the same code with the same parameters, so they should be). The stored indexes'
own build + tune time (paid once, at extraction or import) is printed too. Load averages are printed at the
start and end: the machine may be shared. Run niced, e.g.
``nice -n 10 python benchmarks/bench_stored_index.py --n 100000 --dim 2048``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_scale as scale  # noqa: E402  (the scale benchmark's data: same vectors, same catalog rows)

ANALYSES = ("closest", "contrast", "agreement")


def _without_source(data):
    if isinstance(data, dict):
        return {k: _without_source(v) for k, v in data.items() if k != "index_source"}
    if isinstance(data, list):
        return [_without_source(v) for v in data]
    return data


def _sources(data) -> set[str]:
    if isinstance(data, dict):
        return set().union(*(_sources(v) for v in data.values()), {data["index_source"]} if "index_source" in data
                           else set())
    if isinstance(data, list):
        return set().union(*(_sources(v) for v in data)) if data else set()
    return set()


def _run(ws, name: str, a: int, b: int):
    if name == "closest":
        return ws.closest_pairs([a, b], force=True)
    if name == "contrast":
        return ws.contrast_pairs(a, b, force=True)
    return ws.agreement(a, b, force=True)


def _timed(fn):
    cpu0, t0 = os.times(), time.perf_counter()
    out = fn()
    cpu1 = os.times()
    return out, time.perf_counter() - t0, (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)


def register_pair(work: Path, n: int, dim: int, memory_max: int):
    """``(workspace, set A, set B)``: bench_scale's pair of ``n`` synthetic images registered under ``work``, each
    set with its stored index (IVF-PQ when its vectors exceed ``memory_max`` bytes); prints each index."""
    from featscope.config import Settings
    from featscope.workspace import Workspace

    ws = Workspace(Settings(data_dir=work / "data", num_workers=0, flat_index_max=min(100_000, n - 1),
                            index_memory_max=memory_max))
    scale._register_backbones(ws)
    scale._register_images(ws, n, work, images=False)
    ids = []
    for space in "ab":
        vectors = scale._vectors(work / f"{space}.npy", n, dim, space)
        es, seconds, _ = _timed(functools.partial(ws.import_embeddings, f"synthetic-{space}", "scale", vectors,
                                                  tap="conv5", dtype="float16"))
        meta = ws.ctx.store.get("index", es.artifact_key, verify=False).meta
        print(f"stored index of space {space}: {meta['kind']}, nlist {meta['nlist']}, nprobe {meta['nprobe']}, "
              f"rerank {meta['rerank']}, recall@10 {meta['recall_at_10']:.3f}; import {seconds:.1f} s (index "
              f"build {meta['build_seconds']:.1f} s + tune {meta['tune_seconds']:.1f} s, paid once)", flush=True)
        ids.append(es.id)
        del vectors
        (work / f"{space}.npy").unlink()
    return ws, ids[0], ids[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--analyses", default=",".join(ANALYSES))
    ap.add_argument("--in-memory-max", type=int, default=None,
                    help="bytes (default: just below the sets' float32 size, so they take the IVF path)")
    ap.add_argument("--index-memory-max", type=int, default=None,
                    help="bytes an IVF index's vectors may take, for the stored indexes and the baseline's "
                         "(default: below the sets' size: IVF-PQ, as at a million images)")
    ap.add_argument("--workdir", default="/tmp/featscope-stored-index")
    args = ap.parse_args()

    import faiss  # noqa: F401  (imported before the workspace: the threads FAISS sees are this process's)

    import featscope.analysis.arrays as arrays
    import featscope.analysis.knn as knn
    from featscope.cache.index import build_index
    from featscope.workspace import indexes

    size = args.n * args.dim * 4
    arrays.IN_MEMORY_MAX = args.in_memory_max if args.in_memory_max is not None else size - 1
    memory_max = args.index_memory_max if args.index_memory_max is not None else size - 1
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"load average at start: {os.getloadavg()}; N={args.n:,} x {args.dim}; in-memory limit "
          f"{arrays.IN_MEMORY_MAX:,} B; index memory limit {memory_max:,} B", flush=True)
    try:
        ws, a, b = register_pair(work, args.n, args.dim, memory_max)
        rows = []
        for name in [s for s in args.analyses.split(",") if s]:
            with_baseline = ws, name, a, b
            saved = indexes.analysis_index, knn.build_index
            indexes.analysis_index = lambda *x, **kw: (None, "baseline: the build-and-tune path")
            knn.build_index = functools.partial(build_index, memory_max=memory_max)  # the kind the stored one is
            try:
                base, base_s, base_cpu = _timed(lambda: _run(*with_baseline))
            finally:
                indexes.analysis_index, knn.build_index = saved
            got, got_s, got_cpu = _timed(lambda: _run(*with_baseline))
            same = _without_source(got.data) == _without_source(base.data)
            rows.append((name, base_s, base_cpu, got_s, got_cpu, same, _sources(base.data), _sources(got.data)))
            print(f"{name}: baseline {base_s:.1f} s ({_sources(base.data)}), stored {got_s:.1f} s "
                  f"({_sources(got.data)}), identical results: {same}; load average {os.getloadavg()}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'analysis':<10} {'baseline s':>11} {'(cpu)':>8} {'stored s':>9} {'(cpu)':>8} {'ratio':>6}  identical")
    for name, bs, bc, gs, gc, same, _, _ in rows:
        print(f"{name:<10} {bs:>11.1f} {bc:>8.1f} {gs:>9.1f} {gc:>8.1f} {bs / gs:>5.2f}x  {same}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
