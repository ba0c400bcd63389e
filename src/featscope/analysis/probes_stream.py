"""The linear and k-NN probes of :mod:`featscope.analysis.probes` for features too large to copy into memory.

scikit-learn's L-BFGS logistic regression needs the training rows in memory as float64 (11 GB for the
650,000 training rows of a million 2048-d images), so a set above ``arrays.IN_MEMORY_MAX`` is fitted here
on the same objective (multinomial cross-entropy on standardised features, mean over the rows, plus
``||W||^2 / (2 C n)``, intercept unpenalised) with the same solver and stopping rule as scikit-learn's
``lbfgs`` (scipy's L-BFGS-B, ``gtol=1e-4`` on the gradient's largest entry, ``ftol=64 eps``, 50 line-search
steps), its loss and gradient written here as sums over row blocks:

- the training rows are standardised once into a float32 working copy when it fits
  :func:`arrays.working_copy_budget` (5.3 GB for 650,000 x 2048), instead of being read from the memory-mapped
  float16 set and converted on every evaluation (half of each evaluation's time in the torch/float64
  version this replaced); above the budget the blocks are re-read and converted on every pass;
- the two matrix products of an evaluation (logits, gradient) run in float32 (twice float64's speed) with
  the softmax, the loss and the sums over blocks in float64: float32 rounding in the products (about
  1e-7 relative) stays far below the stopping tolerance;
- the data term at the warm start of each C (the previous C's solution) is the one last evaluated, so it
  is reused; the refit on train+val starts cold, as the in-memory path's.

For two classes the objective differs from the in-memory path's: scikit-learn fits one weight vector (a
sigmoid), this a two-row softmax with both rows penalised, which is the binary model with C doubled.

The C search, refit and Wilson interval follow :func:`probes.linear_probe`. The k-NN probe searches the
train+val rows through a FAISS IVF index tuned to recall@10 >= 0.95 (the embedding set's stored index when
the caller passes it, :mod:`featscope.analysis.knn`).
"""

from __future__ import annotations

import numpy as np

from featscope.analysis import arrays

TOL = 1e-4  # scikit-learn LogisticRegression's default tol (gtol of its L-BFGS-B)


def scaler(x: np.ndarray, rows: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (population std, 1 where it is 0: StandardScaler's convention) of ``x[rows]``, in float64."""
    total, sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for block in _blocks(x, rows, chunk or arrays.CHUNK):
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


class Standardised:
    """The rows ``(x[rows] - mean) / scale`` as float32 blocks of ``chunk`` rows (see the module docstring).

    Held as one in-memory working copy when its ``len(rows) * D * 4`` bytes fit ``budget`` (default
    :func:`arrays.working_copy_budget`), else read from ``x`` and standardised block by block on every pass.
    Both give the same blocks, bit for bit, so the probe's result does not depend on the budget."""

    def __init__(self, x: np.ndarray, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                 chunk: int | None = None, budget: int | None = None) -> None:
        self.x, self.rows, self.chunk, self.dim = x, rows, int(chunk or arrays.CHUNK), x.shape[1]
        self.mean, self.scale = mean.astype(np.float32), scale.astype(np.float32)
        self.copy: np.ndarray | None = None
        if self.nbytes <= (arrays.working_copy_budget() if budget is None else budget):
            copy = np.empty((len(rows), self.dim), dtype=np.float32)
            for s, block in self._read():
                copy[s:s + len(block)] = block
            self.copy = copy

    @property
    def nbytes(self) -> int:
        """Bytes of the working copy (held or not)."""
        return len(self.rows) * self.dim * 4

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self):
        for s in range(0, len(self.rows), self.chunk):
            block = np.asarray(self.x[self.rows[s:s + self.chunk]], dtype=np.float32)
            if not np.isfinite(block).all():
                raise ValueError("x contains NaN or inf; drop or repair those rows first")
            block -= self.mean
            block /= self.scale
            yield s, block

    def blocks(self):
        """``(start, float32 block)`` over the rows, in order."""
        if self.copy is None:
            yield from self._read()
        else:
            for s in range(0, len(self.rows), self.chunk):
                yield s, self.copy[s:s + self.chunk]


class CrossEntropy:
    """Mean multinomial cross-entropy of softmax(x W^T + b) over ``data``'s rows with class codes ``y``, and
    its gradient, at ``params`` = [W.ravel(), b] (float64). Remembers its last evaluation: L-BFGS-B's first
    evaluation at a warm start (the previous C's last point) is then free."""

    def __init__(self, data: Standardised, y: np.ndarray, n_classes: int) -> None:
        self.data, self.y, self.k = data, np.asarray(y, dtype=np.intp), int(n_classes)
        self.evaluations = 0
        self._last: tuple[np.ndarray, float, np.ndarray] | None = None

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        if self._last is not None and np.array_equal(self._last[0], params):
            return self._last[1], self._last[2]
        k, d = self.k, self.data.dim
        w32, b = params[:k * d].reshape(k, d).astype(np.float32), params[k * d:]
        loss, gw, gb = 0.0, np.zeros((k, d)), np.zeros(k)
        for s, xb in self.data.blocks():
            z = (xb @ w32.T).astype(np.float64)  # float32 product, float64 softmax and sums
            z += b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            total = p.sum(axis=1)
            at = (np.arange(len(xb)), self.y[s:s + len(xb)])
            loss += float(np.log(total).sum() - z[at].sum())
            p /= total[:, None]
            p[at] -= 1.0  # d loss / d z = softmax - one-hot
            gb += p.sum(axis=0)
            gw += p.astype(np.float32).T @ xb
        n = len(self.data)
        grad = np.concatenate([gw.ravel(), gb]) / n
        self._last = (params.copy(), loss / n, grad)
        self.evaluations += 1
        return loss / n, grad


def fit(term: CrossEntropy, c: float, max_iter: int,
        init: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Minimise ``term + ||W||^2 / (2 C n)`` from ``init`` (coef, intercept; zeros when None) with scikit-learn
    lbfgs's L-BFGS-B settings; returns (coef, intercept, converged: fewer than ``max_iter`` iterations,
    scikit-learn's rule)."""
    from scipy.optimize import minimize

    k, d, n = term.k, term.data.dim, len(term.data)
    x0 = np.zeros(k * d + k) if init is None else np.concatenate([np.ravel(init[0]), np.ravel(init[1])])
    x0 = x0.astype(np.float64)
    reg = 1.0 / (c * n)

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = term(params)
        w = params[:k * d]
        grad = grad.copy()
        grad[:k * d] += reg * w
        return loss + 0.5 * reg * float(w @ w), grad

    res = minimize(objective, x0, method="L-BFGS-B", jac=True,
                   options={"maxiter": max_iter, "maxls": 50, "gtol": TOL, "ftol": 64 * np.finfo(float).eps})
    return res.x[:k * d].reshape(k, d).copy(), res.x[k * d:].copy(), bool(res.nit < max_iter)


def predict_standardised(data: Standardised, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Class codes predicted for ``data``'s rows."""
    w32 = coef.astype(np.float32)
    out = [np.argmax((xb @ w32.T).astype(np.float64) + intercept, axis=1) for _, xb in data.blocks()]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def predict(x: np.ndarray, rows: np.ndarray, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
            scale: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Class codes predicted for ``x[rows]`` in float64 (the test rows: as :meth:`ProbeResult.predict` would)."""
    blocks = _blocks(x, rows, chunk or arrays.CHUNK)
    out = [np.argmax(((block - mean) / scale) @ coef.T + intercept, axis=1) for block in blocks]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def knn_votes(x: np.ndarray, db_rows: np.ndarray, query_rows: np.ndarray, k: int, chunk: int = 4096,
              prebuilt=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cosine neighbours (positions into ``db_rows``, similarities) of each query row among ``db_rows``, via
    an IVF index tuned to recall@10 >= 0.95 (``prebuilt``, an index of x's rows built beforehand: searched among
    ``db_rows`` once its recall there is measured, instead of building one); returns them with how they were
    found (:func:`featscope.analysis.knn.approximate_search`)."""
    from featscope.analysis.knn import approximate_search

    return approximate_search(x, db_rows, query_rows, k, prebuilt=prebuilt, chunk=chunk)
