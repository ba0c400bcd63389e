"""IVF-PQ recall tuning on a hard set: clusters of 2,000 near-equidistant 2048-d vectors (float16, memory-mapped),
as space B of ``bench_scale.py`` has at one million images, forced to IVF-PQ (vectors larger than
``memory_max``, as ``FEATSCOPE_INDEX_MEMORY_MAX`` does).

Prints the index built, the ``nprobe`` / re-rank depth / recall@10 that ``tune_nprobe`` chose (target 0.95 against
exact search) and its tuning time, then single-query latency at that setting. ``--baseline FILE`` also tunes the
same index with another version of ``featscope/cache/index.py`` (e.g. ``git show 0e07c1d:src/featscope/cache/
index.py > /tmp/old.py``: the tuner of the first million-image run, whose re-rank cap of 64 left this set at
recall 0.848) and prints both. Run niced: ``nice -n 10 python benchmarks/bench_index_recall.py --n 200000``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from featscope.cache import index as tuner


def clustered(path: Path, n: int, dim: int, per_cluster: int = 2000) -> np.ndarray:
    """``n`` float16 vectors, cluster centre + 0.8 * noise, written in chunks and memory-mapped back."""
    clusters = max(1, n // per_cluster)
    centres = np.random.default_rng(1).normal(size=(clusters, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, 32768):
        rows = np.arange(start, min(n, start + 32768))
        noise = np.random.default_rng([8, start]).normal(size=(len(rows), dim)).astype(np.float32)
        out[start:start + len(rows)] = centres[(rows * 7919) % clusters] + 0.8 * noise
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--baseline", help="another index.py whose tune_nprobe to compare")
    ap.add_argument("--queries", type=int, default=200, help="single-row queries timed at the chosen setting")
    args = ap.parse_args()
    tuners = [("featscope", tuner)]
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_index", args.baseline)
        module = importlib.util.module_from_spec(spec)
        sys.modules["baseline_index"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        tuners.insert(0, ("baseline", module))
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        x = clustered(Path(tmp) / "x.npy", args.n, args.dim)
        t0 = time.perf_counter()
        index = tuner.build_index(x, flat_max=0, memory_max=args.n * args.dim * 4 - 1)
        print(f"built {tuner.index_kind(index)}: nlist {index.nlist}, "
              f"{tuner.faiss.downcast_index(index).pq.M} bytes per vector, {time.perf_counter() - t0:.0f} s", flush=True)
        chosen = {}
        for name, module in tuners:
            t0 = time.perf_counter()
            tu = module.tune_nprobe(index, x)
            chosen[name] = tu
            print(f"{name}: " + json.dumps({"nprobe": tu.nprobe, "rerank": tu.rerank, "recall_at_10": round(tu.recall, 4),
                                            "target": tu.target, "tune_s": round(time.perf_counter() - t0, 1),
                                            "measured": len(tu.tried)}), flush=True)
        tu = chosen["featscope"]
        tuner.faiss.extract_index_ivf(index).nprobe = tu.nprobe
        lat = []
        for row in np.random.default_rng(5).integers(0, args.n, args.queries):
            t0 = time.perf_counter()
            tuner.neighbours(index, x, [int(row)], 10, rerank=tu.rerank)
            lat.append(time.perf_counter() - t0)
        ms = 1000 * np.array(lat)
        print(f"single-row query at nprobe {tu.nprobe}, re-rank {tu.rerank}: p50 {np.percentile(ms, 50):.1f} ms, "
              f"p95 {np.percentile(ms, 95):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
