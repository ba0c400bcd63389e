"""K-grid helpers and FAISS K-means: argument errors first, then all-points training, determinism, sampling."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from featscope.analysis import clustering
from featscope.analysis.clustering import KMeansResult, clip_k_grid, k_grid, kmeans_labels


@pytest.fixture(autouse=True)
def _one_faiss_thread(one_faiss_thread):
    """Every test here runs FAISS on one thread (fixture in conftest.py)."""


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2000, 8)).astype(np.float32)


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"k_min": 1}, "k_min must be >= 2"),
    ({"k_min": 10, "k_max": 5}, "k_max"),
    ({"n": 1}, "n must be >= 2"),
    ({"k_min": 2.5}, "must be an int"),
])
def test_k_grid_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        k_grid(**kwargs)


def test_clip_k_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        clip_k_grid([], 10)
    with pytest.raises(ValueError, match=">= 2"):
        clip_k_grid([1, 5], 10)
    with pytest.raises(ValueError, match="integers"):
        clip_k_grid([2.0, 5.0], 10)
    with pytest.raises(ValueError, match="no K"):
        clip_k_grid([50, 100], 10)


@pytest.mark.parametrize("arr, k, match", [
    (np.zeros((10,)), 2, "2-D"),
    (np.zeros((0, 4)), 2, "empty"),
    (np.zeros((10, 0)), 2, "empty"),
    (np.array([[np.nan, 1.0]] * 5), 2, "NaN"),
    (np.array([["a", "b"]] * 5), 2, "numeric"),
    (np.zeros((10, 3)), 1, "k must be >= 2"),
    (np.zeros((10, 3)), 11, "exceeds the number of points"),
])
def test_kmeans_rejects_bad_input(arr, k, match):
    with pytest.raises(ValueError, match=match):
        kmeans_labels(arr, k)


def test_kmeans_rejects_bad_options(x):
    with pytest.raises(ValueError, match="sample=3 must be >= k=4"):
        kmeans_labels(x, 4, sample=3)
    with pytest.raises(ValueError, match="niter"):
        kmeans_labels(x, 4, niter=0)
    with pytest.raises(ValueError, match="use_gpu"):
        kmeans_labels(x, 4, use_gpu="yes")
    if faiss.get_num_gpus() == 0:
        with pytest.raises(ValueError, match="no GPU"):
            kmeans_labels(x, 4, use_gpu=True)


# ---- k grid -------------------------------------------------------------------------------------

def test_k_grid_is_log_spaced_unique_and_inclusive():
    ks = k_grid(2, 1000, 20)
    assert ks[0] == 2 and ks[-1] == 1000
    assert 20 <= len(ks) <= 22
    assert np.all(np.diff(ks) > 0) and ks.dtype == np.int64
    ratios = ks[1:] / ks[:-1]
    assert ratios[-5:].std() < 0.05  # geometric at the large end
    assert len(k_grid(2, 1000, 15)) >= 15
    np.testing.assert_array_equal(k_grid(2, 6, 20), [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(k_grid(7, 7, 5), [7])


def test_clip_k_grid_keeps_supported_ks():
    np.testing.assert_array_equal(clip_k_grid(np.array([2, 10, 100, 1000]), 150), [2, 10, 100])
    np.testing.assert_array_equal(clip_k_grid([5, 2, 5], 5), [2, 5])


# ---- k-means ------------------------------------------------------------------------------------

def test_kmeans_labels_every_point_and_trains_on_all(x):
    res = kmeans_labels(x, 4, seed=0)
    assert isinstance(res, KMeansResult)
    assert res.labels.shape == (2000,) and res.labels.dtype == np.int64
    assert res.labels.min() >= 0 and res.labels.max() < 4
    assert res.trained_on == 2000 and not res.sampled
    assert res.centroids.shape == (4, 8)
    # Same as faiss trained explicitly on all points ...
    full = faiss.Kmeans(8, 4, niter=20, seed=0, max_points_per_centroid=10_000)
    full.train(x)
    np.testing.assert_allclose(res.centroids, full.centroids, rtol=1e-5, atol=1e-5)
    # ... and unlike faiss's default, which trains on 256 * k = 1024 of the 2000 points.
    default = faiss.Kmeans(8, 4, niter=20, seed=0)
    default.train(x)
    assert not np.allclose(res.centroids, default.centroids, atol=1e-4)


def test_kmeans_inertia_is_sum_of_squared_distances(x):
    for spherical in (False, True):
        res = kmeans_labels(x, 5, seed=1, spherical=spherical)
        d2 = ((x - res.centroids[res.labels]) ** 2).sum(axis=1)
        assert res.inertia == pytest.approx(float(d2.sum()), rel=1e-4)
        # every point sits with its nearest centroid (by the metric in use)
        if spherical:
            np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, rtol=1e-5)


def test_kmeans_is_deterministic_per_seed(x):
    a, b = kmeans_labels(x, 6, seed=3), kmeans_labels(x, 6, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    c = kmeans_labels(x, 6, seed=4)
    assert not np.array_equal(a.centroids, c.centroids)


def test_kmeans_sample_is_explicit_flagged_and_seeded(x):
    res = kmeans_labels(x, 4, seed=0, sample=500)
    assert res.sampled and res.trained_on == 500 and res.n == 2000
    assert res.labels.shape == (2000,)
    again = kmeans_labels(x, 4, seed=0, sample=500)
    np.testing.assert_array_equal(res.labels, again.labels)
    assert res.to_dict()["sampled"] is True
    whole = kmeans_labels(x, 4, seed=0, sample=5000)  # sample >= N: all points, not flagged
    assert not whole.sampled


def test_kmeans_accepts_float64_and_non_contiguous_input(x):
    x64 = np.asfortranarray(x.astype(np.float64))
    np.testing.assert_array_equal(kmeans_labels(x64, 4).labels, kmeans_labels(x, 4).labels)


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 4)) * 100
    truth = np.repeat(np.arange(5), 40)
    pts = centres[truth] + rng.normal(size=(200, 4))
    labels = kmeans_labels(pts, 5, seed=0).labels
    # a bijection between found clusters and true blobs
    assert len({(t, l) for t, l in zip(truth, labels)}) == 5


def test_identical_points_share_a_cluster_even_when_k_exceeds_distinct_points():
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct points, 4 copies each
    for spherical in (False, True):
        labels = kmeans_labels(x, 6, seed=0, spherical=spherical).labels
        assert all(len(np.unique(labels[4 * g: 4 * g + 4])) == 1 for g in range(3))
    assert kmeans_labels(np.zeros((10, 3)), 5).inertia == 0.0


# ---- a set too large to copy into memory ---------------------------------------------------------

def _lloyd(x: np.ndarray, k: int, seed: int, niter: int) -> tuple[np.ndarray, float]:
    """Plain numpy Lloyd's iterations from the same seeded initial rows: the reference for the streaming path."""
    c = x[np.sort(np.random.default_rng(seed).choice(len(x), size=k, replace=False))].astype(np.float64)
    for _ in range(niter):
        labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        c = np.stack([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    return np.argmin(d2, axis=1), float(d2.min(axis=1).sum())


def test_a_matrix_too_large_for_memory_is_clustered_in_chunks_like_plain_lloyd(monkeypatch, tmp_path):
    import featscope.analysis.arrays as arrays

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 8)) * 4
    x = (centres[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 8))).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)  # 3000 x 8 float32 no longer "fits"
    monkeypatch.setattr(arrays, "WORKING_COPY_MAX", 0)  # nor does a working copy: streamed
    monkeypatch.setattr(arrays, "CHUNK", 700)
    got = kmeans_labels(mapped, 6, seed=4, niter=10)
    want_labels, want_inertia = _lloyd(x.astype(np.float32).astype(np.float64), 6, 4, 10)
    assert got.n == got.trained_on == 3000 and not got.sampled and got.labels.dtype == np.int64
    np.testing.assert_array_equal(got.labels, want_labels)
    assert got.inertia == pytest.approx(want_inertia, rel=1e-4)
    again = kmeans_labels(mapped, 6, seed=4, niter=10)
    np.testing.assert_array_equal(again.labels, got.labels)  # deterministic
    sampled = kmeans_labels(mapped, 6, seed=4, niter=10, sample=500)
    assert sampled.trained_on == 500 and sampled.sampled and len(sampled.labels) == 3000
    bad = np.array(mapped)
    bad[2500, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        kmeans_labels(bad, 6)


def test_a_memory_mapped_set_within_the_working_copy_budget_is_clustered_on_a_copy_with_the_same_result(
        monkeypatch, tmp_path):
    """Above IN_MEMORY_MAX: Lloyd's iterations on a float32 working copy when it fits the budget, on the memory
    map itself when it does not; the same labels, centroids and inertia, bit for bit, and plain Lloyd's."""
    import featscope.analysis.arrays as arrays

    rng = np.random.default_rng(8)
    centres = rng.normal(size=(5, 12)) * 3
    x = (centres[rng.integers(0, 5, 2000)] + rng.normal(size=(2000, 12))).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)
    seen, real = [], clustering._kmeans_streaming

    def spy(rows, *a, **kw):
        seen.append((isinstance(rows, np.memmap), rows.dtype, kw["checked"]))
        return real(rows, *a, chunk=300, **kw)

    monkeypatch.setattr(clustering, "_kmeans_streaming", spy)
    results = []
    for budget in (2000 * 12 * 4, 2000 * 12 * 4 - 1):  # exactly the copy's size, then one byte short
        monkeypatch.setattr(arrays, "WORKING_COPY_MAX", budget)
        results.append(kmeans_labels(mapped, 5, seed=2, niter=8))
    assert seen == [(False, np.float32, True), (True, np.float16, False)]
    copy, streamed = results
    np.testing.assert_array_equal(copy.labels, streamed.labels)
    np.testing.assert_array_equal(copy.centroids, streamed.centroids)
    assert copy.inertia == streamed.inertia
    want_labels, want_inertia = _lloyd(x.astype(np.float32).astype(np.float64), 5, 2, 8)
    np.testing.assert_array_equal(copy.labels, want_labels)
    assert copy.inertia == pytest.approx(want_inertia, rel=1e-4)
    monkeypatch.setattr(arrays, "WORKING_COPY_MAX", 10**9)
    kmeans_labels(mapped, 5, seed=2, niter=8, sample=400)  # a sample: no copy of every row for one pass
    assert seen[-1] == (True, np.float16, False)
    bad = x.copy()
    bad[np.random.default_rng(2).choice(2000, size=400, replace=False)[7], 1] = np.inf  # a sampled row
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="NaN or inf .among the rows sampled"):
        kmeans_labels(np.load(tmp_path / "bad.npy", mmap_mode="r"), 5, seed=2, niter=8, sample=400)


def test_working_copy_copies_checks_or_leaves_the_rows_to_stream(monkeypatch, tmp_path):
    import featscope.analysis.arrays as arrays

    x = np.arange(600, dtype=np.float16).reshape(100, 6) / 7
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 100)
    rows, in_memory = arrays.working_copy(mapped, budget=100 * 6 * 4)
    assert in_memory and rows.dtype == np.float32 and not isinstance(rows, np.memmap)
    np.testing.assert_array_equal(rows, x.astype(np.float32))
    rows, in_memory = arrays.working_copy(mapped, budget=100 * 6 * 4 - 1)
    assert not in_memory and rows is mapped
    held = x.astype(np.float32)
    rows, in_memory = arrays.working_copy(held, budget=0)  # already float32 in memory: used as it is
    assert in_memory and rows is held
    held[57, 2] = np.inf
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(rows 0\.\.99\)"):
        arrays.working_copy(held, budget=0)
    bad = x.copy()
    bad[99, 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"x_b contains NaN or inf"):
        arrays.working_copy(np.load(tmp_path / "bad.npy", mmap_mode="r"), "x_b", budget=10**9)
