"""Scale benchmark: a pair of embedding sets of up to a million images through every path, time and memory.

For each size N it registers a data set of N images (catalog rows only; ``--images`` writes small PNGs and
registers the folder instead) and two embedding sets of clustered synthetic 2048-d vectors (float16 on disk,
space B a coarser, re-drawn clustering of space A's images, so the spaces agree partly, as two backbones
do), built with ``Workspace.import_embeddings``: no network runs. Then, each step in its own process:

    register      writing both sets + building and tuning their FAISS indexes (IVF / IVF-PQ above 100k)
    query         neighbour queries through the REST API (uvicorn): first query, then p50/p95 of --queries
    comembership  the co-membership curve, K-means on every point, default K grid, one seed
    closest       closest pairs in both spaces          contrast   close in A, distant in B (ranks)
    tsne, umap    openTSNE / umap-learn map of all points of space A
    probe         the linear probe (C search, refit) and k-NN probe of space A
    cka           linear CKA of the pair (chunked)
    raster        the dashboard projection page's server-side raster (featscope.analysis.raster + PNG) of
                  the t-SNE map when one was made at this N, else of clustered 2-D points

Each step's wall time and peak memory (VmHWM: resident set including memory-mapped pages; and the peak
of anonymous memory, sampled) are printed in a table. Steps that cannot reach N here in reasonable time
are capped (``--max-n step=N``; defaults below) or stopped after ``--timeout-min``; the growth between the
sizes that ran is printed with the extrapolation to one million. Data go to ``--workdir`` (under /tmp)
and are deleted afterwards (``--keep`` keeps them). Run it niced: ``nice -n 10 python benchmarks/bench_scale.py``.

The dashboard's page timing itself (browser, WebGL overlay) comes from the dashboard benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

STEPS = ("register", "query", "comembership", "closest", "contrast", "tsne", "umap", "probe", "cka", "raster")
# Largest N each step is run at by default on a 2-core CPU (None: any): above these the run takes hours
# (K-means over the whole K grid, k-NN graphs, t-SNE/UMAP, probe fitting grow with N or faster). Measured at
# 1M on 2 cores (``--max-n STEP=any``): contrast 28 min, UMAP 39 min, probe 40 min, closest 50 min, t-SNE
# 79 min; co-membership took 32 min at 300k, about 1.8 h at 1M by its linear growth per K-means iteration.
DEFAULT_MAX_N = {"comembership": 300_000, "closest": 300_000, "contrast": 300_000, "tsne": 300_000,
                 "umap": 300_000, "probe": 300_000}
CLASSES, CLUSTERS_A = 100, 1000


# ---------------------------------------------------------------- measurement (in each step's process)
class Memory:
    """Peak resident (VmHWM) and a sampled peak of anonymous memory of this process (and optionally another)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak_anon, self.interval, self.stop = 0, interval, threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak_anon = max(self.peak_anon, status_kib("RssAnon") * 1024)

    def result(self) -> dict:
        self.stop.set()
        self.peak_anon = max(self.peak_anon, status_kib("RssAnon") * 1024)
        return {"peak_rss": status_kib("VmHWM") * 1024, "peak_anon": self.peak_anon}


def status_kib(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- synthetic data
def _vectors(path: Path, n: int, dim: int, space: str, chunk: int = 32768) -> np.ndarray:
    """Clustered float16 vectors written chunk by chunk to ``path`` (.npy) and memory-mapped back.

    Image i belongs to cluster i * 7919 % 1000 of space A (class = cluster % 100); space B groups A's
    clusters in pairs (500 clusters) around centres of its own, so B is coarser and rotated relative to A."""
    rng = np.random.default_rng(0 if space == "a" else 1)
    k = CLUSTERS_A if space == "a" else CLUSTERS_A // 2
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        cluster = cluster_of(rows)
        if space == "b":
            cluster = cluster // 2
        noise = np.random.default_rng([7 if space == "a" else 8, start]).normal(size=(len(rows), dim))
        out[start:start + len(rows)] = centres[cluster] + 0.8 * noise.astype(np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def cluster_of(rows: np.ndarray) -> np.ndarray:
    return (rows * 7919) % CLUSTERS_A


def _register_images(ws, n: int, workdir: Path, images: bool) -> str:
    """A data set of ``n`` images: PNG files (``images``) or catalog rows only; returns its name."""
    from sqlalchemy import insert

    from featscope.catalog import Dataset, Image

    labels = [f"class{c % CLASSES:03d}" for c in cluster_of(np.arange(n))]
    if images:
        from PIL import Image as PILImage

        root = workdir / "images"
        for i, lab in enumerate(labels):
            (root / lab).mkdir(parents=True, exist_ok=True)
            colour = np.array([int(lab[-3:]) * 2, (i * 13) % 255, 128], dtype=np.uint8)
            PILImage.fromarray(np.broadcast_to(colour, (16, 16, 3)).copy()).save(root / lab / f"{i:07d}.png")
        ws.add_dataset(root, name="scale")
        return "scale"
    with ws.ctx.session() as s:
        ds = Dataset(name="scale", root=str(workdir / "images"), source_path=str(workdir / "images"),
                     format="synthetic", fingerprint=f"synthetic-{n}", n_images=n, classes=sorted(set(labels)),
                     summary=f"{n} synthetic images (catalog rows only)")
        s.add(ds)
        s.flush()
        for start in range(0, n, 50_000):
            s.execute(insert(Image), [{"dataset_id": ds.id, "position": i, "relpath": f"{labels[i]}/{i:07d}.png",
                                       "label": labels[i], "boxes": []} for i in range(start, min(n, start + 50_000))])
    return "scale"


def _register_backbones(ws) -> None:
    from featscope.catalog import Backbone

    with ws.ctx.session() as s:
        for name in ("synthetic-a", "synthetic-b"):
            s.add(Backbone(name=name, spec=f"synthetic:{name}", source="synthetic", arch="synthetic",
                           fingerprint=name, taps=["conv5"]))


# ---------------------------------------------------------------- steps
def _workspace(data: Path):
    from featscope.config import Settings
    from featscope.workspace import Workspace

    return Workspace(Settings(data_dir=data, num_workers=0))


def _sets(ws) -> tuple[int, int]:
    a, b = (ws.embedding_sets(backbone=f"synthetic-{s}")[0].id for s in "ab")
    return a, b


def step_register(data: Path, n: int, dim: int, images: bool) -> dict:
    ws = _workspace(data)
    _register_backbones(ws)
    _register_images(ws, n, data.parent, images)
    notes = {}
    for space in "ab":
        src = data.parent / f"{space}.npy"
        vectors = _vectors(src, n, dim, space)
        es = ws.import_embeddings(f"synthetic-{space}", "scale", vectors, tap="conv5", dtype="float16")
        meta = ws.ctx.store.get("index", es.artifact_key, verify=False).meta
        notes[space] = {k: meta.get(k) for k in ("kind", "nlist", "nprobe", "rerank", "recall_at_10", "recall_below_target", "code_bytes",
                                                  "build_seconds", "tune_seconds")}
        del vectors
        src.unlink()
    return {"index": notes}


def step_query(data: Path, n: int, queries: int) -> dict:
    import httpx

    ws = _workspace(data)
    a, _ = _sets(ws)
    port = _free_port()
    env = {**os.environ, "FEATSCOPE_DATA_DIR": str(data), "FEATSCOPE_NUM_WORKERS": "0"}
    env.pop("FEATSCOPE_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "featscope.server.app:create_app",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                               "--no-access-log"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        rng = np.random.default_rng(0)
        ids = rng.integers(1, n + 1, size=queries + 1)  # catalog image ids of the synthetic data set
        with httpx.Client(base_url=base, timeout=600) as c:
            t0 = time.perf_counter()
            r = c.get(f"/api/v1/embedding-sets/{a}/neighbours", params={"image": int(ids[0]), "k": 10})
            first = time.perf_counter() - t0
            r.raise_for_status()
            lat = []
            for i in ids[1:]:
                t0 = time.perf_counter()
                c.get(f"/api/v1/embedding-sets/{a}/neighbours", params={"image": int(i), "k": 10}).raise_for_status()
                lat.append(time.perf_counter() - t0)
        server_rss = status_kib("VmHWM", server.pid) * 1024
        server_anon = status_kib("RssAnon", server.pid) * 1024
    finally:
        server.terminate()
        server.wait(timeout=60)
    ms = np.array(lat) * 1000
    return {"first_query_s": round(first, 3), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "queries": queries,
            "server_peak_rss": server_rss, "server_anon": server_anon}


def step_analysis(data: Path, step: str) -> dict:
    ws = _workspace(data)
    a, b = _sets(ws)
    say = lambda line: print(f"  {step}: {line}", file=sys.stderr, flush=True)  # noqa: E731
    if step == "comembership":
        res = ws.comembership(a, b, seeds=(0,), force=True, on_message=say,
                              progress=lambda d, t: say(f"K-means run {d}/{t}"))
        i = res.data["ks"].index(max(res.data["ks"]))
        return {"ks": len(res.data["ks"]), "a_to_b_at_kmax": res.data["mean"]["a_to_b"][i],
                "b_to_a_at_kmax": res.data["mean"]["b_to_a"][i]}
    if step == "closest":
        res = ws.closest_pairs([a, b], force=True, on_message=say)
        return {"knn": [s["knn"] for s in res.data["spaces"]]}
    if step == "contrast":
        res = ws.contrast_pairs(a, b, force=True, on_message=say)
        return {"knn": res.data["knn"]}
    if step in ("tsne", "umap"):
        res = ws.projection([a], method=step, force=True, on_message=say)
        return {"params": {k: v for k, v in res.data["params"].items() if k in ("knn", "pca", "pca_dims", "n_jobs")}}
    if step == "probe":
        res = ws.probe(a, force=True, on_message=say)
        return {k: res.data[k] for k in ("accuracy", "best_c", "knn_accuracy", "n_classes", "converged")}
    if step == "cka":
        from featscope.analysis.similarity import linear_cka

        infos = {e.id: e for e in ws.embedding_sets()}
        xs = [ws.ctx.store.get("embeddings", infos[i].artifact_key, mmap=True).array("embeddings") for i in (a, b)]
        return {"cka": linear_cka(xs[0], xs[1])}
    raise ValueError(step)


def step_raster(data: Path, n: int) -> dict:
    from featscope.analysis.raster import raster, to_png
    from featscope.workspace.analyses import NotCached

    ws = _workspace(data)
    a, _ = _sets(ws)
    labels = [f"class{c % CLASSES:03d}" for c in cluster_of(np.arange(n))]
    try:
        coords = ws.projection([a], method="tsne", cached_only=True).arrays["coords_0"]
        source = "t-SNE map"
    except NotCached:
        rng = np.random.default_rng(0)
        coords = rng.normal(size=(CLUSTERS_A, 2))[cluster_of(np.arange(n))] * 10 + rng.normal(size=(n, 2))
        source = "clustered 2-D points (no t-SNE map at this N)"
    t0 = time.perf_counter()
    raster(coords[:1000], labels=labels[:1000], width=64, height=64)  # datashader compiles its kernels once
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    png = to_png(raster(coords, labels=labels, width=1200, height=800))
    return {"source": source, "png_bytes": len(png), "raster_s": round(time.perf_counter() - t0, 3),
            "first_call_compile_s": round(warm, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_step(args) -> None:
    """Child process: one step at one N; prints a RESULT line with seconds, memory and notes."""
    mem = Memory()
    data = Path(args.workdir) / f"n{args.n}" / "data"
    t0 = time.perf_counter()
    if args.run_step == "register":
        notes = step_register(data, args.n, args.dim, args.images)
    elif args.run_step == "query":
        notes = step_query(data, args.n, args.queries)
    elif args.run_step == "raster":
        notes = step_raster(data, args.n)
    else:
        notes = step_analysis(data, args.run_step)
    seconds = time.perf_counter() - t0
    cpu = os.times()  # CPU time of this step's process (all threads): wall time on a shared machine is not its cost
    print("RESULT " + json.dumps({"seconds": seconds, "cpu_seconds": round(cpu.user + cpu.system, 1), **mem.result(),
                                  "notes": notes}, default=str), flush=True)


# ---------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated N")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--max-n", action="append", default=[], help="STEP=N: largest N to run STEP at")
    ap.add_argument("--timeout-min", type=float, default=60.0, help="stop a step after this many minutes")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--images", action="store_true", help="write PNG files and register the folder")
    ap.add_argument("--workdir", default="/tmp/featscope-scale")
    ap.add_argument("--keep", action="store_true", help="keep the data afterwards")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print the table of earlier runs' --json files "
                                                                 "(a later file's row replaces an earlier one's)")
    ap.add_argument("--run-step", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_step:
        run_step(args)
        return
    if args.table:
        merged: dict[tuple[str, int], dict] = {}
        for f in args.table:
            merged.update({(r["step"], r["n"]): r for r in json.loads(Path(f).read_text())})
        rows = sorted(merged.values(), key=lambda r: (r["n"], STEPS.index(r["step"])))
        _print_table(rows, sorted({r["n"] for r in rows}))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s for s in args.steps.split(",") if s]
    max_n = dict(DEFAULT_MAX_N)
    for item in args.max_n:
        name, _, value = item.partition("=")
        max_n[name] = int(value) if value.lower() not in ("", "none", "any") else None
    results: list[dict] = []
    for n in sizes:
        root = Path(args.workdir) / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for step in ["register", *[s for s in steps if s != "register"]]:
            if step != "register" and max_n.get(step) is not None and n > max_n[step]:
                results.append({"step": step, "n": n, "status": f"not run (capped at {max_n[step]:,})"})
                continue
            results.append(_child(args, step, n))
            _print_row(results[-1])
            if args.json:  # after every step: a long run stopped half-way keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1, default=str))
            if step == "register" and results[-1]["status"] != "ok":
                break
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    _print_table(results, sizes)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


def _child(args, step: str, n: int) -> dict:
    """One step in its own process, with the machine's 1/5/15-minute load averages when it ended."""
    return {**_run_child(args, step, n), "load_avg": [round(v, 2) for v in os.getloadavg()]}


def _run_child(args, step: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--run-step", step, "--n", str(n), "--dim", str(args.dim), "--workdir",
           args.workdir, "--queries", str(args.queries)] + (["--images"] if args.images else [])
    print(f"[{time.strftime('%H:%M:%S')}] {step} at N={n:,} ...", file=sys.stderr, flush=True)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_min * 60)
    except subprocess.TimeoutExpired as e:
        status = f"stopped after {args.timeout_min:g} min"
        done = _kmeans_progress(e.stderr, n) if step == "comembership" else None
        if done:
            status += (f" at K-means run {done[0]}/{done[1]}, {done[2]:.0%} of the K-means work: about "
                       f"{_duration(args.timeout_min * 60 / max(done[2], 1e-9))} in all")
        searched = _last_progress_line(e.stderr, "rows searched")
        if step in ("closest", "contrast") and searched:
            status += f" ({searched})"
        return {"step": step, "n": n, "status": status}
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode or line is None:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"step": step, "n": n, "status": f"failed ({out.returncode}): {' | '.join(tail)}"}
    return {"step": step, "n": n, "status": "ok", **json.loads(line[len("RESULT "):])}


def _kmeans_progress(stderr: bytes | str | None, n: int) -> tuple[int, int, float] | None:
    """(K-means runs done, runs, share of the work done) from a co-membership step's progress lines (every K
    of the grid in A, then in B; one seed); K-means costs N * K * D per iteration, so the share is the done
    runs' sum of K over the two grids' sum."""
    from featscope.analysis.clustering import clip_k_grid, k_grid

    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    marks = [line.rsplit("run ", 1)[-1] for line in text.splitlines() if "comembership: K-means run " in line]
    if not marks:
        return None
    done, total = (int(v) for v in marks[-1].split("/"))
    grid = clip_k_grid(k_grid(2, 1000, 20), n)
    g = len(grid)
    return done, total, float((grid[:min(done, g)].sum() + grid[:max(done - g, 0)].sum()) / (2 * grid.sum()))


def _last_progress_line(stderr: bytes | str | None, marker: str) -> str | None:
    """The last progress line holding ``marker`` (a pair step's "...: 400,000 of 1,000,000 rows searched"),
    without the step's prefix: how far a step that was stopped had got."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    lines = [line.split(": ", 1)[-1] for line in text.splitlines() if marker in line]
    return lines[-1] if lines else None


def _gib(b: float | None) -> str:
    return "" if b is None else f"{b / 2**30:.2f}"


def _print_row(r: dict) -> None:
    if r["status"] == "ok":
        print(f"{r['step']:<13} N={r['n']:>9,}  {r['seconds']:9.1f} s  peak RSS {_gib(r['peak_rss'])} GiB  "
              f"anon {_gib(r['peak_anon'])} GiB  {json.dumps(r['notes'], default=str)}", flush=True)
    else:
        print(f"{r['step']:<13} N={r['n']:>9,}  {r['status']}", flush=True)


def _print_table(results: list[dict], sizes: list[int]) -> None:
    print("\n| step | N | time | peak RSS (GiB) | peak anon (GiB) | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        load = f"; load avg {'/'.join(str(v) for v in r['load_avg'])}" if r.get("load_avg") else ""
        if r["status"] != "ok":
            print(f"| {r['step']} | {r['n']:,} | {r['status']} | | | {load[2:]} |")
            continue
        notes = r["notes"]
        if r["step"] == "query":
            rss = max(r["peak_rss"], notes["server_peak_rss"])
            t = f"p50 {notes['p50_ms']} ms, p95 {notes['p95_ms']} ms"
            extra = f"first query {notes['first_query_s']} s; server peak RSS {_gib(notes['server_peak_rss'])} GiB{load}"
            print(f"| query | {r['n']:,} | {t} | {_gib(rss)} | {_gib(notes['server_anon'])} | {extra} |")
            continue
        cpu = f" (CPU {_duration(r['cpu_seconds'])})" if "cpu_seconds" in r else ""
        print(f"| {r['step']} | {r['n']:,} | {_duration(r['seconds'])}{cpu} | {_gib(r['peak_rss'])} | "
              f"{_gib(r['peak_anon'])} | {json.dumps(notes, default=str)}{load} |")
    print("\nGrowth (time ~ N^e between the two largest sizes each step ran at; CPU time where both runs recorded it,"
          " as wall time on a shared machine follows its load) and the extrapolation to 1,000,000:")
    steps = list(dict.fromkeys(r["step"] for r in results))
    for step in steps:
        done = [r for r in results if r["step"] == step and r["status"] == "ok"]
        key = "cpu_seconds" if len(done) >= 2 and all("cpu_seconds" in r for r in done) else "seconds"
        ran = sorted((r["n"], r[key]) for r in done)
        if len(ran) < 2 or ran[-1][0] >= 1_000_000:
            continue
        (n1, t1), (n2, t2) = ran[-2], ran[-1]
        e = math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")
        print(f"  {step}{' (CPU)' if key == 'cpu_seconds' else ''}: {_duration(t1)} at {n1:,}, {_duration(t2)} at {n2:,}: e = {e:.2f}; "
              f"at 1,000,000 about {_duration(t2 * (1_000_000 / n2) ** e)}")


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


if __name__ == "__main__":
    main()
