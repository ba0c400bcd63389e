"""The linear and k-NN probes of :mod:`featscope.analysis.probes` for features too large to copy into memory.

scikit-learn's L-BFGS logistic regression needs the training rows in memory as float64 (11 GB for the
650,000 training rows of a million 2048-d images), so a set above ``arrays.IN_MEMORY_MAX`` is fitted here
with torch's L-BFGS on the same objective (multinomial cross-entropy on standardised features plus
``||W||^2 / (2 C)`` per sample, intercept unpenalised, float64), its loss and gradient summed over row
chunks read from the (memory-mapped) features: one pass over the training rows per evaluation, memory
O(chunk D + classes D). The C search, refit and Wilson interval follow :func:`probes.linear_probe`.
The k-NN probe searches the train+val rows through a FAISS IVF index tuned to recall@10 >= 0.95 (the embedding
set's stored index when the caller passes it, :mod:`featscope.analysis.knn`).
"""

from __future__ import annotations

import numpy as np

from featscope.analysis.arrays import CHUNK


def scaler(x: np.ndarray, rows: np.ndarray, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (population std, 1 where it is 0: StandardScaler's convention) of ``x[rows]``, in float64."""
    total, sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for block in _blocks(x, rows, chunk):
        total += block.sum(axis=0)
        sq += np.einsum("nd,nd->d", block, block)
    mean = total / len(rows)
    std = np.sqrt(np.maximum(sq / len(rows) - mean * mean, 0.0))
    return mean, np.where(std > 0, std, 1.0)


def _blocks(x: np.ndarray, rows: np.ndarray, chunk: int):
    for s in range(0, len(rows), chunk):
        block = np.asarray(x[rows[s:s + chunk]], dtype=np.float64)
        if not np.isfinite(block).all():
            raise ValueError("x contains NaN or inf; drop or repair those rows first")
        yield block


def fit(x: np.ndarray, y: np.ndarray, rows: np.ndarray, n_classes: int, c: float, mean: np.ndarray,
        scale: np.ndarray, max_iter: int, init: tuple[np.ndarray, np.ndarray] | None = None,
        chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray, bool]:
    """Multinomial logistic regression on standardised ``x[rows]``; returns (coef, intercept, converged)."""
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
        opt.zero_grad()
        total = 0.0
        for s, block in zip(range(0, n, chunk), _blocks(x, rows, chunk)):
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


def predict(x: np.ndarray, rows: np.ndarray, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
            scale: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Class codes predicted for ``x[rows]``."""
    out = [np.argmax(((block - mean) / scale) @ coef.T + intercept, axis=1) for block in _blocks(x, rows, chunk)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def knn_votes(x: np.ndarray, db_rows: np.ndarray, query_rows: np.ndarray, k: int, chunk: int = 4096,
              prebuilt=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cosine neighbours (positions into ``db_rows``, similarities) of each query row among ``db_rows``, via
    an IVF index tuned to recall@10 >= 0.95 (``prebuilt``, an index of x's rows built beforehand: searched among
    ``db_rows`` once its recall there is measured, instead of building one); returns them with how they were
    found (:func:`featscope.analysis.knn.approximate_search`)."""
    from featscope.analysis.knn import approximate_search

    return approximate_search(x, db_rows, query_rows, k, prebuilt=prebuilt, chunk=chunk)
