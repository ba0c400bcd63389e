"""featscope ``linear_probe`` against a plain ``LogisticRegression(max_iter=1000)``, same split.

Data: N class-structured, ReLU'd feature vectors of dimension D (class centres in a 64-d latent space,
noise, a random linear lift to D, ReLU), as in bench_projection. The plain baseline fits
``LogisticRegression(max_iter=1000)`` (C=1, raw unscaled features) on train+val and scores test;
featscope standardises, searches C over ``np.logspace(-4, 2, 7)`` on val, refits on train+val.
Both report seconds and test top-1; featscope adds its 95% Wilson interval and the chosen C.

    .venv/bin/python benchmarks/bench_probe.py [--n 5000] [--dim 2048] [--classes 50] [--noise 3.0]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from featscope.analysis.probes import linear_probe, make_splits


def make_features(n: int, dim: int, n_classes: int, noise: float,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` ReLU'd, class-structured feature vectors (float32) and their class names."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    centres = rng.normal(size=(n_classes, 64)) * 2.0
    latent = centres[labels] + noise * rng.normal(size=(n, 64))
    lift = rng.normal(size=(64, dim)) / 8.0
    x = np.maximum(latent @ lift, 0.0) + 0.1 * rng.normal(size=(n, dim))
    return x.astype(np.float32), np.array([f"c{c:03d}" for c in labels])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--noise", type=float, default=3.0, help="latent noise; higher = harder problem")
    args = ap.parse_args()

    x, labels = make_features(args.n, args.dim, args.classes, args.noise)
    splits = make_splits(labels, seed=0)
    print(f"N={args.n} D={args.dim} classes={args.classes} train/val/test="
          f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}")

    t0 = time.perf_counter()
    res = linear_probe(x, labels, splits)
    t_ours = time.perf_counter() - t0
    print(f"featscope linear_probe: {t_ours:8.2f} s  test top-1 {100 * res.accuracy:5.1f}% "
          f"[{100 * res.ci_low:.1f}, {100 * res.ci_high:.1f}]  best C {res.best_c:g}  "
          f"converged {res.converged}")
    per_c = ", ".join(f"{c:g}: {100 * a:.1f}%" for c, a in zip(res.c_grid, res.val_accuracy))
    print(f"  val top-1 per C: {per_c}")

    fit_rows = np.concatenate([splits.train, splits.val])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        plain = LogisticRegression(max_iter=1000).fit(x[fit_rows], labels[fit_rows])
    t_plain = time.perf_counter() - t0
    acc = float(np.mean(plain.predict(x[splits.test]) == labels[splits.test]))
    print(f"plain LogisticRegression: {t_plain:6.2f} s  test top-1 {100 * acc:5.1f}%  "
          f"converged {not any(issubclass(w.category, ConvergenceWarning) for w in caught)}")


if __name__ == "__main__":
    main()
