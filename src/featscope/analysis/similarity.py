"""Representation similarity between two embeddings of the same images: linear CKA and k-NN alignment.

Linear CKA (Kornblith et al. 2019) compares two spaces as wholes, invariant to rotations and isotropic
scaling; it is computed here in *feature* space, ``chunk`` rows at a time, so N = 1,000,000 images
with D ~ 2048 features only ever holds D x D matrices (never N x N). Mutual k-NN alignment compares
local structure: how many of each image's neighbours (cosine) are shared by the two spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featscope.analysis.knn import PrebuiltIndex
from featscope.analysis.pairs import neighbourhood_agreement

_DEFAULT_CHUNK = 8192


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False, chunk: int = _DEFAULT_CHUNK) -> float:
    """Linear CKA between embeddings ``x`` (N, D1) and ``y`` (N, D2) of the same N images.

    ``CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))`` with linear kernels on column-centred data.
    The biased estimator gives ``||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. ``debiased=True`` uses
    the unbiased HSIC estimator (Song et al. 2012), which removes the upward bias CKA has when D is
    large relative to N (needs N >= 4); it can be slightly negative for unrelated spaces.
    Accumulation is float64 in two passes over the rows (means, then cross-products).
    """
    _check_chunk(chunk)
    x, y = np.asarray(x), np.asarray(y)  # no copy for arrays and memmaps: rows are read chunk by chunk
    _check_pair(x, y, "x", "y")
    mx, my = _column_mean(x, "x", chunk), _column_mean(y, "y", chunk)
    cross = _hsic(x, y, mx, my, debiased, chunk)
    return _ratio(cross, _hsic(x, x, mx, mx, debiased, chunk), _hsic(y, y, my, my, debiased, chunk))


def cka_matrix(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, debiased: bool = False,
               chunk: int = _DEFAULT_CHUNK) -> np.ndarray:
    """Linear CKA of every layer of one backbone (``xs``, rows) against every layer of another
    (``ys``, columns), all embedding the same N images. Each layer's self-similarity is computed once."""
    _check_chunk(chunk)
    if len(xs) == 0 or len(ys) == 0:
        raise ValueError("xs and ys must each hold at least one (N, D) array (one per layer)")
    xs, ys = [np.asarray(x) for x in xs], [np.asarray(y) for y in ys]
    for p, x in enumerate(xs):
        _check_pair(x, ys[0], f"xs[{p}]", "ys[0]")
    for q, y in enumerate(ys):
        _check_pair(xs[0], y, "xs[0]", f"ys[{q}]")
    mxs = [_column_mean(x, f"xs[{p}]", chunk) for p, x in enumerate(xs)]
    mys = [_column_mean(y, f"ys[{q}]", chunk) for q, y in enumerate(ys)]
    self_x = [_hsic(x, x, m, m, debiased, chunk) for x, m in zip(xs, mxs)]
    self_y = [_hsic(y, y, m, m, debiased, chunk) for y, m in zip(ys, mys)]
    out = np.empty((len(xs), len(ys)), dtype=np.float64)
    for p, (x, mx) in enumerate(zip(xs, mxs)):
        for q, (y, my) in enumerate(zip(ys, mys)):
            out[p, q] = _ratio(_hsic(x, y, mx, my, debiased, chunk), self_x[p], self_y[q])
    return out


def mutual_knn_alignment(x: np.ndarray, y: np.ndarray, k: int = 10, *, index_x: PrebuiltIndex | None = None,
                         index_y: PrebuiltIndex | None = None) -> float:
    """Mean over images of |kNN_X(i) ∩ kNN_Y(i)| / k (cosine neighbours, the image itself excluded).

    1 when every image has the same k neighbours in both spaces; about k / (N - 1) for unrelated ones.
    ``index_x``, ``index_y``: prebuilt indexes of spaces too large for memory (:mod:`featscope.analysis.pairs`).
    """
    return neighbourhood_agreement(x, y, k, n_worst=0, index_a=index_x, index_b=index_y).mean


def _hsic(x: np.ndarray, y: np.ndarray, mx: np.ndarray, my: np.ndarray, debiased: bool, chunk: int) -> float:
    """Unnormalised HSIC of column-centred X and Y with linear kernels K = XX^T, L = YY^T.

    Biased: ``||X^T Y||_F^2`` (= tr(KL) for centred data; the 1/(N-1)^2 factor cancels in CKA).
    Unbiased (Song et al. 2012), with K~, L~ = K, L with zeroed diagonals and n = N:
        [tr(K~L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)).
    With r_i = ||x_i||^2, s_i = ||y_i||^2 and centred columns (X^T 1 = 0, so K1 = 0):
        tr(K~L~) = ||X^T Y||_F^2 - sum r_i s_i,   1'K~1 = -sum r_i,   1'L~1 = -sum s_i,
        1'K~L~1 = (K1 - r)'(L1 - s) = sum r_i s_i,
    so every term comes from D1 x D2 cross-products and per-row norms: O(N D1 D2), no N x N matrix.
    """
    n = len(x)
    cross = np.zeros((x.shape[1], y.shape[1]), dtype=np.float64)
    sum_r = sum_s = sum_rs = 0.0
    for s in range(0, n, chunk):
        a = np.asarray(x[s:s + chunk], dtype=np.float64) - mx
        b = a if y is x else np.asarray(y[s:s + chunk], dtype=np.float64) - my
        cross += a.T @ b
        if debiased:
            r, q = np.einsum("nd,nd->n", a, a), np.einsum("nd,nd->n", b, b)
            sum_r, sum_s, sum_rs = sum_r + r.sum(), sum_s + q.sum(), sum_rs + r @ q
    fro2 = float(np.sum(cross * cross))
    if not debiased:
        return fro2
    return ((fro2 - sum_rs) + sum_r * sum_s / ((n - 1) * (n - 2)) - 2.0 * sum_rs / (n - 2)) / (n * (n - 3))


def _ratio(cross: float, self_x: float, self_y: float) -> float:
    if self_x <= 0 or self_y <= 0:
        raise ValueError("CKA is undefined: one embedding has no variance across images (all rows equal"
                         " after centring, or its debiased self-HSIC is not positive); check the inputs")
    return float(cross / np.sqrt(self_x * self_y))


def _column_mean(x: np.ndarray, name: str, chunk: int) -> np.ndarray:
    """float64 column means in one chunked pass, checking finiteness on the way (no full copy)."""
    total = np.zeros(x.shape[1], dtype=np.float64)
    for s in range(0, len(x), chunk):
        block = np.asarray(x[s:s + chunk], dtype=np.float64)
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or inf (rows {s}..{s + len(block) - 1}); drop or repair "
                             f"those images in every space before comparing")
        total += block.sum(axis=0)
    return total / len(x)


def _check_pair(x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> None:
    for arr, name in ((x, xname), (y, yname)):
        if getattr(arr, "ndim", None) != 2:
            raise ValueError(f"{name} must be a 2-D (N images, D features) array, got shape "
                             f"{getattr(arr, 'shape', None)}")
        if arr.shape[1] == 0:
            raise ValueError(f"{name} has no features (shape {arr.shape})")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if len(x) != len(y):
        raise ValueError(f"{xname} has {len(x)} rows but {yname} has {len(y)}; both must embed the same "
                         f"images in the same order (row i = image i)")
    if len(x) < 4:
        raise ValueError(f"CKA needs at least 4 images (the debiased estimator divides by N - 3), got {len(x)}")


def _check_chunk(chunk: int) -> None:
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer (rows per block), got {chunk!r}")
