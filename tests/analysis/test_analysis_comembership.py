"""Co-membership: errors first, then exact agreement with brute-force pair counting and a constructed refinement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, fowlkes_mallows_score, normalized_mutual_info_score

from featscope.analysis.clustering import kmeans_labels
from featscope.analysis.comembership import (
    METRICS, CoMembershipCurve, comembership_curve, comembership_from_labels, conditional_same_cluster,
    contingency, pair_agreement_scores)


@pytest.fixture(autouse=True)
def _one_faiss_thread(one_faiss_thread):
    """Every test here runs FAISS on one thread (fixture in conftest.py)."""


def brute_force(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """P(B|A), P(A|B) by looking at every pair i < j."""
    i, j = np.triu_indices(len(a), k=1)
    same_a, same_b = a[i] == a[j], b[i] == b[j]
    both = int(np.sum(same_a & same_b))
    na, nb = int(same_a.sum()), int(same_b.sum())
    return (both / na if na else float("nan")), (both / nb if nb else float("nan"))


def brute_force_loop(a, b) -> tuple[float, float]:
    both = na = nb = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sa, sb = a[i] == a[j], b[i] == b[j]
            both += sa and sb
            na += sa
            nb += sb
    return (both / na if na else float("nan")), (both / nb if nb else float("nan"))


# ---- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, match", [
    (np.array([0, 1, 2]), np.array([0, 1]), "differ in length"),
    (np.array([], dtype=int), np.array([], dtype=int), "empty"),
    (np.array([[0, 1]]), np.array([[0, 1]]), "1-D"),
    (np.array([0.0, np.nan]), np.array([0, 1]), "integers"),
    (np.array([0, 1]), np.array(["x", "y"]), "integers"),
])
def test_labelings_are_validated(a, b, match):
    for fn in (contingency, conditional_same_cluster, pair_agreement_scores):
        with pytest.raises(ValueError, match=match):
            fn(a, b)


def test_curve_rejects_bad_input():
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(30, 3)), rng.normal(size=(30, 5))
    with pytest.raises(ValueError, match="same images"):
        comembership_curve(xa, xb[:20], ks=[2])
    with pytest.raises(ValueError, match="exceeds N=30"):
        comembership_curve(xa, xb, ks=[2, 31])
    with pytest.raises(ValueError, match=">= 2"):
        comembership_curve(xa, xb, ks=[1, 2])
    with pytest.raises(ValueError, match="seeds is empty"):
        comembership_curve(xa, xb, ks=[2], seeds=())
    with pytest.raises(ValueError, match="NaN"):
        comembership_curve(np.full((30, 3), np.nan), xb, ks=[2])
    with pytest.raises(ValueError, match="2-D"):
        comembership_curve(xa[:, 0], xb, ks=[2])


def test_from_labels_rejects_mismatches():
    la = [np.zeros(10, dtype=int), np.zeros(10, dtype=int)]
    with pytest.raises(ValueError, match="one labeling per K"):
        comembership_from_labels(la, la[:1], [2, 3])
    with pytest.raises(ValueError, match="same shape"):
        comembership_from_labels(la, [np.zeros(10, dtype=int), np.zeros(9, dtype=int)], [2, 3])
    with pytest.raises(ValueError, match="seed"):
        comembership_from_labels(la, la, [2, 3], seeds=(0, 1))
    with pytest.raises(ValueError, match="ks"):
        comembership_from_labels(la, la, [2.0, 3.0])


# ---- exact formula vs brute force -----------------------------------------------------------------

@pytest.mark.parametrize("n, ka, kb", [(1, 1, 1), (2, 1, 2), (7, 1, 3), (50, 3, 5), (200, 10, 4),
                                       (301, 40, 40), (500, 2, 150)])
@pytest.mark.parametrize("seed", [0, 1])
def test_conditional_equals_brute_force(n, ka, kb, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, ka, n), rng.integers(0, kb, n)
    got, want = conditional_same_cluster(a, b), brute_force(a, b)
    np.testing.assert_array_equal(got, want)  # exact, nan == nan


def test_conditional_equals_explicit_loop_with_odd_labels():
    rng = np.random.default_rng(5)
    a = rng.choice([-7, 3, 1000, 2**40], size=60)         # non-contiguous, negative, huge
    b = rng.choice([5, 6], size=60).astype(np.int16)       # different range and dtype
    assert conditional_same_cluster(a, b) == brute_force_loop(a, b)


def test_all_singletons_give_nan_and_k1_gives_one():
    n = 20
    single, one = np.arange(n), np.zeros(n, dtype=int)
    p_ab, p_ba = conditional_same_cluster(single, one)
    assert np.isnan(p_ab) and p_ba == 0.0
    p_ab, p_ba = conditional_same_cluster(one, one)
    assert p_ab == 1.0 and p_ba == 1.0
    assert all(np.isnan(conditional_same_cluster(single, single)))


def test_contingency_sums_and_cells():
    rng = np.random.default_rng(2)
    a, b = rng.integers(-3, 9, 400) * 10, rng.integers(100, 107, 400)
    t = contingency(a, b)
    assert t.counts.sum() == 400 == t.n
    dense = t.to_sparse().toarray()
    np.testing.assert_array_equal(dense.sum(axis=1), t.row_sums)
    np.testing.assert_array_equal(dense.sum(axis=0), t.col_sums)
    np.testing.assert_array_equal(t.labels_a, np.unique(a))
    for r, c, cnt in zip(t.rows, t.cols, t.counts):
        assert cnt == np.sum((a == t.labels_a[r]) & (b == t.labels_b[c])) > 0
    json.dumps(t.to_dict())


def test_pair_agreement_scores_match_sklearn():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 6, 300), rng.integers(0, 9, 300)
    s = pair_agreement_scores(a, b)
    assert s == {"ari": adjusted_rand_score(a, b), "nmi": normalized_mutual_info_score(a, b),
                 "fowlkes_mallows": fowlkes_mallows_score(a, b)}


# ---- curves -------------------------------------------------------------------------------------

def refinement_spaces(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Space B: 4 locations, each shared by 64 identical points. Space A: the same 4 groups, 1000 apart,
    each spread into 8 small blobs. Identical points always share a K-means cluster, so every B
    clustering is a union of the 4 groups; for K >= 4 every A clustering splits within groups (for
    K < 4 A must merge groups, not necessarily the ones B merges, so the claim needs K >= 4)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(4), 64)
    locations_b = rng.normal(size=(4, 3)) * 50
    x_b = locations_b[group]
    sub = rng.normal(size=(4, 8, 6)) * 20
    x_a = np.eye(4, 6)[group] * 1000 + sub[group, np.tile(np.repeat(np.arange(8), 8), 4)]
    x_a = x_a + rng.normal(size=x_a.shape) * 0.1
    return x_a, x_b


def test_curve_refinement_gives_exact_one_in_refining_direction():
    x_a, x_b = refinement_spaces()
    ks = [4, 8, 16, 32]
    calls = []
    curve = comembership_curve(x_a, x_b, ks=ks, seeds=(0, 1), niter=20, use_gpu=False,
                               progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 16) for i in range(1, 17)]  # every (K, seed) in A, then in B
    # precondition: every A cluster lies inside one B group (so the claim below is exact)
    for k in ks:
        for s in (0, 1):
            la = kmeans_labels(x_a, k, seed=s).labels
            lb = kmeans_labels(x_b, k, seed=s).labels
            assert all(len(np.unique(lb[la == c])) == 1 for c in np.unique(la))
    assert np.all(curve.per_seed["a_to_b"] == 1.0)
    assert np.all(curve.per_seed["b_to_a"][1:] < 1.0)  # K >= 8: A splits what B keeps together
    np.testing.assert_array_equal(curve.a_to_b, np.ones(4))
    np.testing.assert_array_equal(curve.std["a_to_b"], np.zeros(4))


def test_curve_shapes_means_stds_and_json():
    rng = np.random.default_rng(4)
    x_a, x_b = rng.normal(size=(150, 5)), rng.normal(size=(150, 7))
    ks = np.array([2, 5, 12])
    curve = comembership_curve(x_a, x_b, ks=ks, seeds=(0, 1, 2), use_gpu=False)
    assert isinstance(curve, CoMembershipCurve) and curve.n == 150 and curve.sample is None
    np.testing.assert_array_equal(curve.ks, ks)
    for m in METRICS:
        assert curve.per_seed[m].shape == (3, 3)
        np.testing.assert_allclose(curve.mean[m], curve.per_seed[m].mean(axis=1))
        np.testing.assert_allclose(curve.std[m], curve.per_seed[m].std(axis=1))
    # every cell equals the metrics recomputed from that (K, seed)'s labelings
    for i, k in enumerate(ks):
        for s in range(3):
            la, lb = kmeans_labels(x_a, int(k), seed=s).labels, kmeans_labels(x_b, int(k), seed=s).labels
            assert curve.per_seed["a_to_b"][i, s] == brute_force(la, lb)[0]
            assert curve.per_seed["b_to_a"][i, s] == brute_force(la, lb)[1]
            assert curve.per_seed["ari"][i, s] == adjusted_rand_score(la, lb)
            assert curve.per_seed["nmi"][i, s] == normalized_mutual_info_score(la, lb)
            assert curve.per_seed["fowlkes_mallows"][i, s] == fowlkes_mallows_score(la, lb)
    d = json.loads(json.dumps(curve.to_dict()))
    assert d["ks"] == [2, 5, 12] and len(d["per_seed"]["ari"]) == 3


def test_curve_default_grid_is_clipped_and_sample_recorded():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 4))
    curve = comembership_curve(x, x, seeds=(0,), use_gpu=False)
    assert curve.ks[0] == 2 and curve.ks[-1] <= 40 and curve.sample is None
    sampled = comembership_curve(x, x, ks=[2, 5], seeds=(0,), use_gpu=False, sample=30)
    assert sampled.sample == 30 and sampled.to_dict()["sample"] == 30
    # same space on both sides, same seed -> identical labelings
    defined = ~np.isnan(curve.per_seed["a_to_b"][:, 0])
    assert np.all(curve.per_seed["a_to_b"][defined, 0] == 1.0)


def test_from_labels_accepts_one_seed_vectors_and_cached_stacks():
    rng = np.random.default_rng(7)
    la = [rng.integers(0, k, 80) for k in (2, 6)]
    lb = [rng.integers(0, k, 80) for k in (2, 6)]
    curve = comembership_from_labels(la, lb, [2, 6], seeds=[11])
    assert curve.seeds == (11,) and curve.per_seed["a_to_b"].shape == (2, 1)
    assert curve.per_seed["a_to_b"][1, 0] == brute_force(la[1], lb[1])[0]
    assert np.all(curve.std["ari"] == 0.0)
    stacked = comembership_from_labels([np.stack([l, l]) for l in la], [np.stack([l, l]) for l in lb], [2, 6])
    assert stacked.seeds == (0, 1)
    np.testing.assert_array_equal(stacked.mean["a_to_b"], curve.mean["a_to_b"])


def test_memory_mapped_spaces_are_copied_once_each_one_at_a_time(monkeypatch, tmp_path):
    """Spaces above IN_MEMORY_MAX: each is copied into memory once (within the working-copy budget) and the
    copy dropped before the other space is read; the curve is the one streamed from the memory maps (no
    budget), bit for bit, which is the one built from each space's own K-means labels."""
    import weakref

    import featscope.analysis.arrays as arrays
    import featscope.analysis.clustering as clustering
    import featscope.analysis.comembership as cm

    rng = np.random.default_rng(12)
    x_a, x_b = rng.normal(size=(400, 6)).astype(np.float16), rng.normal(size=(400, 9)).astype(np.float16)
    np.save(tmp_path / "a.npy", x_a)
    np.save(tmp_path / "b.npy", x_b)
    a, b = (np.load(tmp_path / f"{s}.npy", mmap_mode="r") for s in "ab")
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)
    monkeypatch.setattr(arrays, "WORKING_COPY_MAX", 0)
    streamed = comembership_curve(a, b, ks=[3, 7], seeds=(0, 1), use_gpu=False)
    labels = [[np.stack([kmeans_labels(x, k, seed=s).labels for s in (0, 1)]) for k in (3, 7)] for x in (a, b)]
    want = comembership_from_labels(*labels, [3, 7], seeds=(0, 1))

    monkeypatch.setattr(arrays, "WORKING_COPY_MAX", 400 * 9 * 4)
    copies, real = [], arrays.working_copy

    def recording(x, name="x", budget=None, *, checked=False):
        assert all(ref() is None for ref in copies), "the previous space's copy is still held"
        rows, in_memory = real(x, name, budget, checked=checked)
        assert in_memory and rows.dtype == np.float32 and not isinstance(rows, np.memmap)
        copies.append(weakref.ref(rows))
        return rows, in_memory

    checks, chunks = [], arrays.float_chunks

    def counting(x, chunk=arrays.CHUNK, name="x", check=True):
        if check:
            checks.append(name)
        return chunks(x, chunk, name, check)

    for module in (arrays, cm, clustering):
        monkeypatch.setattr(module, "float_chunks", counting)
    monkeypatch.setattr(cm, "working_copy", recording)
    got = comembership_curve(a, b, ks=[3, 7], seeds=(0, 1), use_gpu=False)
    assert len(copies) == 2
    assert sorted(checks) == ["x_a", "x_b"]  # each space's rows checked for NaN once, not once per copy or run
    for m in METRICS:
        np.testing.assert_array_equal(got.per_seed[m], streamed.per_seed[m])
        np.testing.assert_array_equal(got.per_seed[m], want.per_seed[m])


def test_a_bad_second_space_or_niter_is_refused_before_any_clustering(monkeypatch, tmp_path):
    import featscope.analysis.arrays as arrays

    rng = np.random.default_rng(13)
    x_a, x_b = rng.normal(size=(300, 4)).astype(np.float16), rng.normal(size=(300, 5)).astype(np.float16)
    x_b[299, 4] = np.nan
    np.save(tmp_path / "a.npy", x_a)
    np.save(tmp_path / "b.npy", x_b)
    a, b = (np.load(tmp_path / f"{s}.npy", mmap_mode="r") for s in "ab")
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 1000)
    calls = []
    for budget in (0, 10**9):  # streamed, then on working copies
        monkeypatch.setattr(arrays, "WORKING_COPY_MAX", budget)
        with pytest.raises(ValueError, match="x_b contains NaN or inf"):
            comembership_curve(a, b, ks=[2, 3], seeds=(0,), use_gpu=False, progress=lambda d, t: calls.append(d))
    assert calls == []  # refused before A was clustered
    monkeypatch.setattr(arrays, "WORKING_COPY_MAX", 0)  # A streamed: its rows are checked as K-means reads them
    for sample in (None, 200):  # every row, or the rows sampled to train the centroids
        with pytest.raises(ValueError, match="x_a contains NaN or inf"):
            comembership_curve(b, a, ks=[2, 3], seeds=(0,), sample=sample, use_gpu=False)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="niter"):
            comembership_curve(x_a[:, :2], x_a[:, 2:], ks=[2], seeds=(0,), niter=bad, use_gpu=False)
    curve = comembership_curve(x_a[:, :2], x_a[:, 2:], ks=[2], seeds=(0,), niter=np.int64(3), use_gpu=False)
    assert curve.ks.tolist() == [2]
