"""Load test of the REST API: neighbour queries and thumbnails from 20 concurrent clients.

Builds a tiny data set with one extracted embedding set in a temp dir, starts ``uvicorn`` in a subprocess
on a free loopback port, runs the clients for ``--seconds`` (each stops by itself at the deadline) and
prints requests/s, p50/p95/p99 latency and the error count. Target: zero errors, p95 <= 200 ms.

    python benchmarks/bench_api.py --seconds 30 --clients 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(root: Path, n_images: int) -> dict:
    """A labelled folder of ``n_images`` small PNGs, a random-init ResNet-18, one embedding set."""
    from featscope.config import Settings
    from featscope.extractors.types import Preprocess
    from featscope.workspace import Workspace

    rng = np.random.default_rng(0)
    for i in range(n_images):
        cls = f"c{i % 4}"
        (root / "imgs" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / "imgs" / cls / f"{i:04d}.png")
    ws = Workspace(Settings(data_dir=root / "data", num_workers=0, batch_size=32))
    ws.add_dataset(root / "imgs", name="bench")
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r18", preprocess=Preprocess(resize=72, crop=64))
    (es,) = ws.extract("r18", "bench")
    return {"embedding_set": es.id, "images": [im.id for im in ws.images("bench")]}


def _client(base: str, world: dict, deadline: float, seed: int, lat: list[float], errors: list[str]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=10.0) as c:
        while time.perf_counter() < deadline:
            image = rng.choice(world["images"])
            if rng.random() < 0.5:
                url = f"/api/v1/embedding-sets/{world['embedding_set']}/neighbours?image={image}&k=10"
            else:
                url = f"/api/v1/images/{image}/thumbnail?size={rng.choice([64, 128])}"
            t0 = time.perf_counter()
            try:
                r = c.get(url)
                ok = r.status_code == 200
            except httpx.HTTPError as e:
                ok, r = False, e
            lat.append(time.perf_counter() - t0)
            if not ok:
                errors.append(f"{url}: {getattr(r, 'status_code', r)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="featscope-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        world = _prepare(root, args.images)
        print(f"setup: {args.images} images, embedding set {world['embedding_set']} in {time.perf_counter() - t0:.1f} s")
        port = _free_port()
        env = {**os.environ, "FEATSCOPE_DATA_DIR": str(root / "data"), "FEATSCOPE_NUM_WORKERS": "0"}
        env.pop("FEATSCOPE_TOKEN", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "featscope.server.app:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise SystemExit("the server did not start within 30 s")
            # Warm the caches once (index load, first thumbnails are made on demand during the run).
            httpx.get(f"{base}/api/v1/embedding-sets/{world['embedding_set']}/neighbours?image={world['images'][0]}")
            lat: list[float] = []
            errors: list[str] = []
            deadline = time.perf_counter() + args.seconds
            threads = [threading.Thread(target=_client, args=(base, world, deadline, i, lat, errors))
                       for i in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 30)
            wall = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
    ms = np.array(lat) * 1000.0
    p50, p95, p99 = (float(np.percentile(ms, q)) if len(ms) else float("nan") for q in (50, 95, 99))
    print(f"clients={args.clients} seconds={wall:.1f} requests={len(ms)} errors={len(errors)}")
    print(f"throughput: {len(ms) / wall:.1f} requests/s")
    print(f"latency ms: p50={p50:.1f} p95={p95:.1f} p99={p99:.1f}")
    if errors:
        print("first errors:", json.dumps(errors[:5]))
    print(f"target (0 errors, p95 <= 200 ms): {'met' if not errors and p95 <= 200 else 'NOT met'}")


if __name__ == "__main__":
    main()
