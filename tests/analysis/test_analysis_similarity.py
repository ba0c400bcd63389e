"""Linear CKA and mutual k-NN alignment: error cases, then direct N x N Gram-matrix references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from featscope.analysis.similarity import cka_matrix, linear_cka, mutual_knn_alignment


def _data(n: int = 60, d: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _hsic_gram(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    """HSIC straight from N x N kernel matrices (the textbook formulas)."""
    n = len(k)
    if not debiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(k @ h @ l @ h))
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return float((np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3)))


def _cka_gram(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    k, l = x @ x.T, y @ y.T
    return _hsic_gram(k, l, debiased) / np.sqrt(_hsic_gram(k, k, debiased) * _hsic_gram(l, l, debiased))


# ---- error cases -------------------------------------------------------------------------------

def test_mismatched_n():
    with pytest.raises(ValueError, match="same images"):
        linear_cka(_data(60), _data(50))
    with pytest.raises(ValueError, match="same images"):
        mutual_knn_alignment(_data(60), _data(50))
    with pytest.raises(ValueError, match="same images"):
        cka_matrix([_data(60)], [_data(60), _data(50)])


def test_nan_rejected():
    x = _data()
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(x, _data(), chunk=4)
    with pytest.raises(ValueError, match="NaN"):
        mutual_knn_alignment(_data(), x)


@pytest.mark.parametrize("x", [np.zeros((0, 3)), np.zeros((3, 3)), np.zeros((10, 0)), np.zeros(10)])
def test_empty_too_few_or_wrong_shape(x):
    with pytest.raises(ValueError):
        linear_cka(x, x)


def test_constant_embedding_is_undefined():
    with pytest.raises(ValueError, match="no variance"):
        linear_cka(np.ones((20, 4)), _data(20, 4))


def test_bad_chunk_and_empty_layer_lists():
    with pytest.raises(ValueError, match="chunk"):
        linear_cka(_data(), _data(), chunk=0)
    with pytest.raises(ValueError, match="at least one"):
        cka_matrix([], [_data()])


def test_bad_k_for_alignment():
    with pytest.raises(ValueError, match="1 <= k < N"):
        mutual_knn_alignment(_data(20), _data(20), k=20)


# ---- references --------------------------------------------------------------------------------

@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(50, 8, 12), (120, 30, 5), (20, 40, 40)])
def test_cka_matches_gram_matrix_formula(debiased, shape):
    n, d1, d2 = shape
    x = _data(n, d1, seed=1) + 3.0  # a non-zero mean exercises the centring
    y = x[:, :min(d1, d2)] @ _data(min(d1, d2), d2, seed=2) + _data(n, d2, seed=3)
    want = _cka_gram(x, y, debiased)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(want, rel=1e-6)
    assert linear_cka(x, y, debiased=debiased, chunk=7) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariances(debiased):
    x = _data(80, 12, seed=4)
    y = np.tanh(x @ _data(12, 9, seed=5))
    base = linear_cka(x, y, debiased=debiased)
    q = ortho_group.rvs(12, random_state=6)
    assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(base, rel=1e-9)
    assert linear_cka(7.5 * x, 0.01 * y, debiased=debiased) == pytest.approx(base, rel=1e-9)
    assert linear_cka(x + 100.0, y, debiased=debiased) == pytest.approx(base, rel=1e-7)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, rel=1e-12)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(linear_cka(y, x, debiased=debiased), rel=1e-12)


def test_debiased_is_near_zero_for_independent_wide_features():
    x, y = _data(100, 200, seed=7), _data(100, 200, seed=8)
    assert linear_cka(x, y) > 0.5  # the biased estimator is inflated when D >> N
    assert abs(linear_cka(x, y, debiased=True)) < 0.05


def test_cka_accepts_float32():
    x = _data(64, 6, seed=9)
    y = x @ _data(6, 6, seed=10)
    assert linear_cka(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(linear_cka(x, y), rel=1e-5)


def test_cka_reads_a_memmap_and_lists(tmp_path):
    x = _data(64, 6, seed=15)
    y = np.sin(x)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    assert linear_cka(mm, y, chunk=10) == pytest.approx(_cka_gram(x.astype(np.float32), y, False), rel=1e-6)
    assert linear_cka(x.tolist(), y.tolist()) == pytest.approx(linear_cka(x, y), rel=1e-12)


def test_cka_matrix_matches_pairwise():
    xs = [_data(40, d, seed=s) for d, s in ((5, 1), (8, 2), (3, 3))]
    ys = [xs[0] @ _data(5, 4, seed=4), _data(40, 6, seed=5)]
    for debiased in (False, True):
        m = cka_matrix(xs, ys, debiased=debiased, chunk=16)
        assert m.shape == (3, 2)
        want = [[linear_cka(x, y, debiased=debiased) for y in ys] for x in xs]
        np.testing.assert_allclose(m, want, rtol=1e-12)


def test_mutual_knn_alignment_matches_brute_force():
    x = _data(100, 8, seed=11)
    y = x + 0.7 * _data(100, 8, seed=12)

    def knn(z, k):
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        s = u @ u.T
        out = []
        for i in range(len(z)):
            order = [j for j in np.argsort(-s[i], kind="stable") if j != i]
            out.append(set(order[:k]))
        return out

    for k in (1, 5, 20):
        nx, ny = knn(x, k), knn(y, k)
        want = np.mean([len(a & b) / k for a, b in zip(nx, ny)])
        assert mutual_knn_alignment(x, y, k=k) == pytest.approx(want, abs=1e-12)
    assert mutual_knn_alignment(x, 4.0 * x, k=5) == 1.0


def test_deterministic():
    x, y = _data(90, 7, seed=13), _data(90, 5, seed=14)
    assert linear_cka(x, y, debiased=True) == linear_cka(x, y, debiased=True)
    assert mutual_knn_alignment(x, y, 4) == mutual_knn_alignment(x, y, 4)
