"""The linear probe's streamed path (features too large for memory) against the implementation it replaced.

Both fit the same objective on the same memory-mapped float16 vectors (bench_scale's clustered vectors:
1000 clusters, class = cluster % 100), same split and C grid (``np.logspace(-4, 2, 7)``), with the streamed
path forced (``arrays.IN_MEMORY_MAX = 0``):

- baseline ``torch-chunked``: the previous ``_streamed_linear_probe`` (kept below, verbatim apart from names):
  torch L-BFGS in float64, every loss evaluation reads each row chunk from the memory map, converts it to
  float64 and standardises it;
- ``featscope``: :func:`featscope.analysis.probes.linear_probe` (``probes_stream``: L-BFGS-B as scikit-learn,
  standardised float32 working copy, float32 products with float64 sums, free first evaluation per C,
  warm-started refit).

Prints seconds, loss evaluations, the ratio baseline / featscope, and each result (best C, test and validation
accuracy, coefficient difference), which must agree. ``--budget 0`` runs featscope without a working copy
(blocks re-read and converted on every evaluation). Run niced on a shared machine:

    nice -n 15 .venv/bin/python benchmarks/bench_probe_stream.py [--n 60000] [--dim 2048] [--threads 1]
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
from bench_scale import CLASSES, _vectors, cluster_of  # noqa: E402

import featscope.analysis.arrays as arrays  # noqa: E402
from featscope.analysis import probes_stream as ps  # noqa: E402
from featscope.analysis.probes import ProbeResult, Splits, linear_probe, make_splits, wilson_interval  # noqa: E402


# ---------------------------------------------------------------- baseline: the replaced implementation
def _baseline_fit(x, y, rows, n_classes, c, mean, scale, max_iter, init=None, chunk=arrays.CHUNK, counter=None):
    """torch L-BFGS (float64) with the loss and gradient summed over chunks read and converted on each call."""
    import torch
    import torch.nn.functional as F

    d = x.shape[1]
    w = torch.zeros(n_classes, d, dtype=torch.float64) if init is None else torch.tensor(init[0])
    b = torch.zeros(n_classes, dtype=torch.float64) if init is None else torch.tensor(init[1])
    w.requires_grad_(True)
    b.requires_grad_(True)
    labels = torch.from_numpy(y[rows].astype(np.int64))
    n = len(rows)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-4, tolerance_change=1e-10,
                            history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        counter[0] += 1
        opt.zero_grad()
        total = 0.0
        for s, block in zip(range(0, n, chunk), ps._blocks(x, rows, chunk)):
            z = torch.from_numpy((block - mean) / scale) @ w.T + b
            loss = F.cross_entropy(z, labels[s:s + chunk], reduction="sum") / n
            loss.backward()
            total += float(loss.detach())
        penalty = (w * w).sum() / (2.0 * c * n)
        penalty.backward()
        return torch.tensor(total + float(penalty.detach()), dtype=torch.float64)

    opt.step(closure)
    n_iter = opt.state[opt._params[0]].get("n_iter", max_iter)
    return w.detach().numpy().copy(), b.detach().numpy().copy(), bool(n_iter < max_iter)


def baseline_probe(arr: np.ndarray, codes: np.ndarray, classes: np.ndarray, splits: Splits, grid: np.ndarray,
                   max_iter: int, counter: list[int]) -> ProbeResult:
    """The replaced ``probes._streamed_linear_probe``: C search with warm starts, cold refit on train+val."""
    n_cls, train = len(classes), splits.train
    mean, scale = ps.scaler(arr, train)
    val_acc, init = np.full(grid.size, np.nan), None
    for i in np.argsort(grid, kind="stable"):
        coef, intercept, _ = _baseline_fit(arr, codes, train, n_cls, float(grid[i]), mean, scale, max_iter, init,
                                           counter=counter)
        init = (coef, intercept)
        val_acc[i] = float(np.mean(ps.predict(arr, splits.val, coef, intercept, mean, scale) == codes[splits.val]))
    best = int(min(np.flatnonzero(val_acc == val_acc.max()), key=lambda j: grid[j]))
    fit_rows = np.sort(np.concatenate([train, splits.val]))
    mean, scale = ps.scaler(arr, fit_rows)
    coef, intercept, converged = _baseline_fit(arr, codes, fit_rows, n_cls, float(grid[best]), mean, scale, max_iter,
                                               counter=counter)
    correct = int(np.sum(ps.predict(arr, splits.test, coef, intercept, mean, scale) == codes[splits.test]))
    low, high = wilson_interval(correct, len(splits.test))
    return ProbeResult(accuracy=correct / len(splits.test), ci_low=low, ci_high=high, n_test=len(splits.test),
                       best_c=float(grid[best]), c_grid=grid, val_accuracy=val_acc, coef=coef, intercept=intercept,
                       scaler_mean=mean, scaler_scale=scale, classes=classes, converged=converged)


# ---------------------------------------------------------------- run
def _count_evaluations() -> list[int]:
    """Count featscope's loss evaluations (CrossEntropy calls that computed, not the remembered ones)."""
    counter = [0]
    original = ps.CrossEntropy.__call__

    def counted(self, params):
        before = self.evaluations
        out = original(self, params)
        counter[0] += self.evaluations - before
        return out

    ps.CrossEntropy.__call__ = counted
    return counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads of both")
    ap.add_argument("--budget", type=int, default=None, help="featscope's working-copy bytes (default: derived)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="where the vectors go (default: a temp dir)")
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-probe-stream-")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"vectors-{args.n}x{args.dim}.npy"
    x = np.load(path, mmap_mode="r") if path.exists() else _vectors(path, args.n, args.dim, "a")
    labels = np.array([f"class{c % CLASSES:03d}" for c in cluster_of(np.arange(args.n))])
    splits = make_splits(labels, seed=0)
    codes, classes = np.unique(labels, return_inverse=True)[1], np.unique(labels)
    grid = np.logspace(-4, 2, 7)
    arrays.IN_MEMORY_MAX = 0  # force the streamed path
    print(f"N={args.n} D={args.dim} classes={len(classes)} train/val/test={len(splits.train)}/{len(splits.val)}/"
          f"{len(splits.test)} threads={args.threads} load average {os.getloadavg()[0]:.2f}", flush=True)

    arrays.WORKING_COPY_MAX = args.budget
    counter = _count_evaluations()
    t0 = time.perf_counter()
    new = linear_probe(x, labels, splits, c_grid=grid, blas_threads=args.threads)
    t_new = time.perf_counter() - t0
    _report("featscope", new, t_new, counter[0])
    if args.skip_baseline:
        return
    base_counter = [0]
    t0 = time.perf_counter()
    with threadpool_limits(limits=args.threads, user_api="blas"):
        old = baseline_probe(x, codes, classes, splits, grid, 1000, base_counter)
    t_old = time.perf_counter() - t0
    _report("torch-chunked (baseline)", old, t_old, base_counter[0])
    diff = float(np.max(np.abs(new.predict_proba(x[splits.test]) - old.predict_proba(x[splits.test]))))
    print(f"ratio baseline / featscope: {t_old / t_new:.1f}x   same best C: {new.best_c == old.best_c}   "
          f"test accuracy {new.accuracy:.4f} vs {old.accuracy:.4f}   max |proba difference| on test {diff:.2e}   "
          f"load average {os.getloadavg()[0]:.2f}")


def _report(name: str, res: ProbeResult, seconds: float, evaluations: int) -> None:
    val = ", ".join(f"{c:g}: {a:.4f}" for c, a in zip(res.c_grid, res.val_accuracy))
    print(f"{name:>26}: {seconds:7.1f} s  {evaluations} loss evaluations  best C {res.best_c:g}  test top-1 "
          f"{res.accuracy:.4f}  converged {res.converged}\n{'':>28}val top-1 per C: {val}", flush=True)


if __name__ == "__main__":
    main()
