"""Projections and Procrustes alignment: error cases first, then exact and structural checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from featscope.analysis.projection import _knn_graph, align_procrustes, project, project_pair

_FAST = dict(n_iter=100, early_exaggeration_iter=50, n_jobs=1)


def _blobs(n_per: int = 100, n_cls: int = 3, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_cls, d)) * 10
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(n_cls), n_per)


def _knn_purity(coords: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nb = np.argsort(d, axis=1)[:, :k]
    return float((labels[nb] == labels[:, None]).mean())


# ---- error cases -------------------------------------------------------------------------------

def test_project_errors():
    x, _ = _blobs(n_per=20)
    with pytest.raises(ValueError, match="method"):
        project(x, "mds")
    with pytest.raises(ValueError, match="perplexity"):
        project(x, "tsne", perplexity=30.0)  # N=60 -> must be < 20
    with pytest.raises(ValueError, match="2-D"):
        project(x[0])
    with pytest.raises(ValueError, match="NaN"):
        project(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="metric"):
        project(x, "pca", metric="manhattan")
    with pytest.raises(ValueError, match="n_neighbors"):
        project(x, "umap", n_neighbors=100)
    with pytest.raises(ValueError, match="pca_dims"):
        project(x, "tsne", perplexity=5, pca_dims=1)
    with pytest.raises(ValueError, match="n_jobs"):
        project(x, "pca", n_jobs=0)
    with pytest.raises(ValueError, match="fft_ints_in_interval"):
        project(x, "tsne", perplexity=5, fft_ints_in_interval=0)
    with pytest.raises(ValueError, match="fft_min_intervals"):
        project(x, "tsne", perplexity=5, fft_min_intervals=0)
    with pytest.raises(ValueError, match="k must be"):
        _knn_graph(x, len(x), threads=1)


def test_procrustes_errors():
    with pytest.raises(ValueError, match="same shape"):
        align_procrustes(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="one location"):
        align_procrustes(np.random.default_rng(0).normal(size=(5, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="same N"):
        project_pair(np.zeros((5, 2)), np.zeros((4, 2)))


# ---- Procrustes --------------------------------------------------------------------------------

@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_similarity_transform(reflect):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 2))
    rot = special_ortho_group.rvs(2, random_state=2)
    if reflect:
        rot = rot @ np.diag([1.0, -1.0])
    other = 3.7 * ref @ rot + np.array([5.0, -2.0])
    al = align_procrustes(ref, other)
    np.testing.assert_allclose(al.aligned, ref, atol=1e-6)
    assert al.scale == pytest.approx(1 / 3.7, rel=1e-9)
    np.testing.assert_allclose(al.rotation @ al.rotation.T, np.eye(2), atol=1e-9)
    np.testing.assert_allclose(al.scale * other @ al.rotation + al.translation, al.aligned, atol=1e-9)


# ---- projections -------------------------------------------------------------------------------

def test_pca_shape_and_determinism():
    x, _ = _blobs()
    a = project(x, "pca", metric="euclidean")
    assert a.coords.shape == (300, 2) and a.coords.dtype == np.float32 and a.method == "pca"
    np.testing.assert_array_equal(a.coords, project(x, "pca", metric="euclidean").coords)
    json.dumps(a.to_dict())


def test_tsne_separates_blobs_and_is_deterministic():
    x, labels = _blobs()
    a = project(x, "tsne", perplexity=20, pca_dims=10, **_FAST)
    assert a.coords.shape == (300, 2) and a.coords.dtype == np.float32
    assert a.params["pca_dims"] == 10 and a.params["perplexity"] == 20
    assert _knn_purity(a.coords, labels) > 0.95
    b = project(x, "tsne", perplexity=20, pca_dims=10, **_FAST)
    np.testing.assert_allclose(a.coords, b.coords, atol=1e-5)


def test_umap_shape_and_determinism():
    x, labels = _blobs(n_per=60)
    a = project(x, "umap", n_neighbors=10, seed=3)
    b = project(x, "umap", n_neighbors=10, seed=3)
    assert a.coords.shape == (180, 2)
    np.testing.assert_allclose(a.coords, b.coords, atol=1e-5)
    assert _knn_purity(a.coords, labels) > 0.95


def test_project_pair_aligns_second_to_first():
    x, _ = _blobs(n_per=40)
    rot = special_ortho_group.rvs(20, random_state=0)
    pa, pb = project_pair(x, 2.0 * x @ rot, method="pca", metric="euclidean")
    # a rotated, scaled copy of the features has the same PCA map up to reflection/scale
    np.testing.assert_allclose(pb.coords, pa.coords, atol=1e-3)
    assert pb.params["aligned_to"] == "first"


# ---- exact k-NN graph (FAISS) behind the t-SNE affinities -----------------------------------------

def _brute_knn(x: np.ndarray, k: int):
    d = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nb = np.argsort(d, axis=1, kind="stable")[:, :k]
    return nb, np.sqrt(np.take_along_axis(d, nb, axis=1))


def test_knn_graph_matches_brute_force(one_faiss_thread):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 7)).astype(np.float32)  # continuous data: no distance ties
    idx, dist = _knn_graph(x, 9, threads=1)
    ref_idx, ref_dist = _brute_knn(x, 9)
    assert idx.shape == dist.shape == (120, 9) and idx.dtype == np.int64 and dist.dtype == np.float64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert (idx != np.arange(120)[:, None]).all()
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_knn_graph_keeps_duplicates_and_drops_only_self(one_faiss_thread):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(30, 4)).astype(np.float32)
    x = np.concatenate([base, base[:5], base[:5]])  # rows 0-4 appear three times
    idx, dist = _knn_graph(x, 3, threads=1)
    assert (idx != np.arange(len(x))[:, None]).all()
    for i in range(5):
        twins = {i, 30 + i, 35 + i} - {i}
        assert set(idx[i, :2]) == twins and np.allclose(dist[i, :2], 0.0, atol=1e-3)


def test_tsne_uses_faiss_knn_and_records_params(one_faiss_thread):
    x, labels = _blobs()
    a = project(x, "tsne", perplexity=10, pca_dims=10, fft_ints_in_interval=1.0, fft_min_intervals=50, **_FAST)
    assert a.params["knn"] == "faiss-exact" and a.params["k_neighbors"] == 30
    assert a.params["fft_ints_in_interval"] == 1.0 and a.params["fft_min_intervals"] == 50
    assert _knn_purity(a.coords, labels) > 0.95


def test_tsne_fft_path_small_grid(one_faiss_thread):
    # project() only picks openTSNE's FFT gradients from N = 10,000 up (too big for a unit test): run them
    # here on tiny data with the FAISS neighbours and featscope's default grid (1.5 units, >= 30 intervals).
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    x, labels = _blobs()
    idx, dist = _knn_graph(x, 30, threads=1)
    aff = PerplexityBasedNN(perplexity=10, knn_index=PrecomputedNeighbors(idx, dist))
    emb = TSNE(n_iter=100, early_exaggeration_iter=50, negative_gradient_method="fft", ints_in_interval=1.5,
               min_num_intervals=30, random_state=0).fit(x, affinities=aff)
    assert _knn_purity(np.asarray(emb), labels) > 0.95


# ---- features too large to copy into memory ------------------------------------------------------

def test_features_too_large_for_memory_are_reduced_by_exact_streamed_pca(monkeypatch, tmp_path):
    import featscope.analysis.arrays as arrays

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(1500, 12)) * np.linspace(5, 0.5, 12)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    want = project(x.astype(np.float32), "pca", n_components=3, metric="euclidean").coords  # sklearn, in memory
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(arrays, "CHUNK", 400)
    got = project(mapped, "pca", n_components=3, metric="euclidean")
    assert got.params["pca"] == "streamed" and got.coords.shape == (1500, 3) and got.coords.dtype == np.float32
    for c in range(3):  # the same components up to sign
        assert abs(np.corrcoef(got.coords[:, c], want[:, c])[0, 1]) > 0.9999
    np.testing.assert_allclose(np.abs(got.coords), np.abs(want), atol=2e-3)
    tsne = project(mapped, "tsne", pca_dims=5, perplexity=10, n_iter=50, early_exaggeration_iter=50)
    assert tsne.params["pca"] == "streamed" and tsne.params["pca_dims"] == 5 and tsne.coords.shape == (1500, 2)
    with pytest.raises(ValueError, match="pass pca_dims"):
        project(mapped, "umap", pca_dims=None)
