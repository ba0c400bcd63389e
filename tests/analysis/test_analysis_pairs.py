"""Neighbour pairs: error cases first, then all-pairs brute-force references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featscope.analysis.pairs import (
    _knn_pairs,
    _Space,
    close_in_a_distant_in_b_clusters,
    close_in_a_distant_in_b_ranks,
    closest_pairs,
    neighbourhood_agreement,
)


def _data(n: int = 120, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _cos(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return u @ u.T


def _brute_pairs(x: np.ndarray) -> list[tuple[float, int, int]]:
    s = _cos(x)
    n = len(x)
    return sorted(((s[i, j], i, j) for i in range(n) for j in range(i + 1, n)), key=lambda t: (-t[0], t[1], t[2]))


def _brute_rank(s: np.ndarray, i: int, j: int) -> int:
    """Rank of j in i's list by explicit argsort (self removed, most similar first)."""
    others = [t for t in np.argsort(-s[i], kind="stable") if t != i]
    return others.index(j)


def _brute_knn(x: np.ndarray, k: int) -> list[set[int]]:
    s = _cos(x)
    np.fill_diagonal(s, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in s]


# ---- error cases -------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, -1, 120, 500, 2.5, True])
def test_bad_k_says_the_range(k):
    with pytest.raises(ValueError, match="1 <= k < N"):
        closest_pairs(_data(), k=k)


def test_mismatched_n_between_spaces():
    with pytest.raises(ValueError, match="same images"):
        close_in_a_distant_in_b_ranks(_data(120), _data(100))
    with pytest.raises(ValueError, match="same images"):
        neighbourhood_agreement(_data(120), _data(100))


def test_nan_and_inf_rejected():
    x = _data()
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        closest_pairs(x)
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        neighbourhood_agreement(_data(), x)


@pytest.mark.parametrize("x", [np.zeros((0, 4)), np.zeros((5, 0)), np.zeros(5)])
def test_empty_or_wrong_rank_rejected(x):
    with pytest.raises(ValueError):
        closest_pairs(x, k=1)


def test_bad_n_pairs_and_chunk():
    with pytest.raises(ValueError, match="n_pairs"):
        closest_pairs(_data(), n_pairs=0)
    with pytest.raises(ValueError, match="chunk"):
        closest_pairs(_data(), chunk=0)
    with pytest.raises(ValueError, match="n_worst"):
        neighbourhood_agreement(_data(), _data(seed=1), n_worst=-1)


def test_bad_labels():
    x = _data()
    good = np.zeros(len(x), dtype=int)
    with pytest.raises(ValueError, match="one label per image"):
        close_in_a_distant_in_b_clusters(good[:-1], good, x)
    with pytest.raises(ValueError, match="integer"):
        close_in_a_distant_in_b_clusters(good.astype(float), good, x)


# ---- brute-force references --------------------------------------------------------------------

@pytest.mark.parametrize("n_pairs", [1, 10, 40])
def test_closest_pairs_equal_brute_force_when_k_ge_n_pairs(n_pairs):
    x = _data(150, 8)
    got = closest_pairs(x, n_pairs, k=n_pairs)
    want = _brute_pairs(x)[:n_pairs]
    assert list(zip(got.i.tolist(), got.j.tolist())) == [(i, j) for _, i, j in want]
    np.testing.assert_allclose(got.score, [s for s, _, _ in want], rtol=0, atol=1e-6)
    assert (got.i < got.j).all() and (np.diff(got.score) <= 0).all()


def test_closest_pairs_small_k_is_a_subset_of_candidates():
    x = _data(150, 8)
    got = closest_pairs(x, 1000, k=3)  # more pairs asked than candidates exist
    assert len(got) <= 150 * 3
    assert len(set(zip(got.i.tolist(), got.j.tolist()))) == len(got)  # each unordered pair once


def test_duplicates_pair_with_score_one_and_self_never_matches():
    x = _data(60, 8)
    x[10] = x[20]
    x[30] = x[20]
    got = closest_pairs(x, 3, k=5)
    assert set(zip(got.i.tolist(), got.j.tolist())) == {(10, 20), (10, 30), (20, 30)}
    np.testing.assert_allclose(got.score, 1.0, atol=1e-6)
    assert (got.i != got.j).all()


def test_closest_pairs_chunked_equals_unchunked_and_deterministic():
    x = _data(200, 12)
    a = closest_pairs(x, 50, k=10, chunk=7)
    b = closest_pairs(x, 50, k=10)
    c = closest_pairs(x, 50, k=10)
    for p, q in ((a, b), (b, c)):
        assert p.to_dict() == q.to_dict()
    json.dumps(a.to_dict())


def test_cluster_definition_matches_brute_force():
    rng = np.random.default_rng(3)
    x = _data(120, 6)
    la = rng.integers(0, 8, size=120)
    lb = rng.integers(0, 3, size=120)
    k = 119  # every pair is a candidate: result must equal the all-pairs filter
    got = close_in_a_distant_in_b_clusters(la, lb, x, 30, k=k)
    want = [(s, i, j) for s, i, j in _brute_pairs(x) if la[i] == la[j] and lb[i] != lb[j]][:30]
    assert list(zip(got.i.tolist(), got.j.tolist())) == [(i, j) for _, i, j in want]
    assert (got.extra["cluster_a"] == la[got.i]).all()
    assert (got.extra["cluster_b_i"] != got.extra["cluster_b_j"]).all()
    json.dumps(got.to_dict())


def test_cluster_definition_candidates_are_knn_pairs():
    x = _data(120, 6)
    la = np.zeros(120, dtype=np.int64)
    lb = np.arange(120) % 2
    got = close_in_a_distant_in_b_clusters(la, lb, x, 10_000, k=4)
    nb = _brute_knn(x, 4)
    for i, j in zip(got.i.tolist(), got.j.tolist()):
        assert j in nb[i] or i in nb[j]
        assert lb[i] != lb[j]


def test_rank_definition_matches_argsort_ranks():
    xa, xb = _data(100, 8, seed=1), _data(100, 8, seed=2)
    got = close_in_a_distant_in_b_ranks(xa, xb, 10_000, k=5, chunk=9)
    sb = _cos(xb)
    na = _brute_knn(xa, 5)
    want_pairs = {(min(i, j), max(i, j)) for i in range(100) for j in na[i]}
    assert set(zip(got.i.tolist(), got.j.tolist())) == want_pairs
    for p, (i, j) in enumerate(zip(got.i.tolist(), got.j.tolist())):
        rij, rji = _brute_rank(sb, i, j), _brute_rank(sb, j, i)
        assert got.extra["rank_b_ij"][p] == rij and got.extra["rank_b_ji"][p] == rji
        assert got.extra["rank_b"][p] == min(rij, rji)
        assert got.extra["score_b"][p] == pytest.approx(sb[i, j], abs=1e-6)
    assert (np.diff(got.extra["rank_b"]) <= 0).all()
    json.dumps(got.to_dict())


def test_rank_definition_chunked_equals_unchunked_and_top_n():
    xa, xb = _data(150, 8, seed=4), _data(150, 8, seed=5)
    full = close_in_a_distant_in_b_ranks(xa, xb, 10_000, k=6)
    small = close_in_a_distant_in_b_ranks(xa, xb, 20, k=6, chunk=1)
    assert small.to_dict() == {name: col[:20] for name, col in full.to_dict().items()}


def test_rank_memory_budget_batches_give_the_same_ranks(monkeypatch):
    from featscope.analysis import pairs

    xa, xb = _data(90, 8, seed=8), _data(90, 8, seed=9)
    want = close_in_a_distant_in_b_ranks(xa, xb, 10_000, k=4).to_dict()
    monkeypatch.setattr(pairs, "_COMPARE_BUDGET", 200)  # 2 query rows per block, 2 pairs per batch
    assert close_in_a_distant_in_b_ranks(xa, xb, 10_000, k=4).to_dict() == want


def _tie_rank(s: np.ndarray, i: int, j: int) -> int:
    """Rank of j in i's list by argsort (self removed, most similar first), ties sharing the better rank:
    the first place in the sorted list whose similarity equals cos(i, j)."""
    others = [t for t in np.argsort(-s[i], kind="stable") if t != i]
    return next(p for p, t in enumerate(others) if s[i, t] == s[i, j])


@pytest.mark.parametrize("budget", [None, 150])
def test_rank_counting_matches_argsort_ranks_with_ties_and_hubs(monkeypatch, budget):
    """B holds exact duplicates (tied similarities) and A a hub (one image in many images' k-NN lists, so one
    query row has far more pairs than a comparison batch): the counted ranks equal argsort ranks with ties
    sharing the better rank, in every block / batch layout."""
    from featscope.analysis import pairs

    rng = np.random.default_rng(11)
    n = 70
    xa = rng.normal(size=(n, 6)).astype(np.float32)
    xa[1:30] = xa[0] + 0.05 * rng.normal(size=(29, 6)).astype(np.float32)  # image 0: everyone's neighbour
    # B: four entries of +-1 per vector (norm exactly 2), so every normalised product is a sum of +-0.25 and
    # exact whatever the BLAS or block shape: ties are real ties on any machine
    base = np.zeros((25, 6), np.float32)
    base[np.arange(25)[:, None], np.argsort(rng.random((25, 6)), axis=1)[:, :4]] = rng.choice([-1.0, 1.0], (25, 4))
    xb = base[rng.integers(0, 25, size=n)]  # 70 images over at most 25 distinct vectors: many exact ties
    xb[::7] *= 2.0  # rescaled copies tie in cosine as well (a power of two: still exact)
    if budget is not None:
        monkeypatch.setattr(pairs, "_COMPARE_BUDGET", budget)  # 2 rows per block, 2 pairs per comparison
    got = close_in_a_distant_in_b_ranks(xa, xb, 10_000, k=6, chunk=5)
    xbn = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    sb = xbn @ xbn.T  # float32 like the code: duplicates tie exactly
    assert len(np.unique(np.round(sb, 5))) < n * (n - 1) // 4  # the test has ties to break
    assert np.bincount(np.concatenate([got.i, got.j]), minlength=n).max() > 20  # and a hub
    for p, (i, j) in enumerate(zip(got.i.tolist(), got.j.tolist())):
        rij, rji = _tie_rank(sb, i, j), _tie_rank(sb, j, i)
        assert (got.extra["rank_b_ij"][p], got.extra["rank_b_ji"][p]) == (rij, rji), (i, j)
        assert got.extra["rank_b"][p] == min(rij, rji)
    order = np.lexsort((got.j, got.i, -got.score, -got.extra["rank_b"]))
    assert (order == np.arange(len(got))).all()  # most distant in B first, then A cosine, then (i, j)


def test_identical_spaces_rank_zero_for_mutual_nearest():
    x = _data(80, 8)
    got = close_in_a_distant_in_b_ranks(x, x * 3.0, 10_000, k=1)
    assert (got.extra["rank_b"] == 0).all()  # B is A rescaled: every A-1NN pair is rank 0 in B


def test_neighbourhood_agreement_matches_brute_force():
    xa = _data(120, 8, seed=6)
    xb = xa + 0.5 * _data(120, 8, seed=7)
    got = neighbourhood_agreement(xa, xb, k=7, n_worst=5, chunk=11)
    na, nb = _brute_knn(xa, 7), _brute_knn(xb, 7)
    want = np.array([len(a & b) / 7 for a, b in zip(na, nb)])
    np.testing.assert_array_equal(got.per_image, want)
    assert got.mean == pytest.approx(want.mean())
    assert got.worst.tolist() == np.lexsort((np.arange(120), want))[:5].tolist()
    json.dumps(got.to_dict())


def test_neighbourhood_agreement_identical_spaces_is_one():
    x = _data(50, 4)
    got = neighbourhood_agreement(x, 2.0 * x, k=5)
    assert got.mean == 1.0 and (got.per_image == 1.0).all()


# ---- spaces too large to copy into memory --------------------------------------------------------

@pytest.fixture
def big(monkeypatch, tmp_path):
    """Two clustered float16 spaces of 3000 images, memory-mapped, with the in-memory limit set below them."""
    import featscope.analysis.arrays as arrays

    rng = np.random.default_rng(5)
    spaces = []
    for name, n_centres in (("a", 40), ("b", 3)):
        c = rng.normal(size=(n_centres, 24)) * 3
        x = (c[rng.integers(0, n_centres, 3000)] + rng.normal(size=(3000, 24))).astype(np.float16)
        np.save(tmp_path / f"{name}.npy", x)
        spaces.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 10_000)
    return spaces


def _exact_knn(x: np.ndarray, k: int) -> np.ndarray:
    s = _cos(np.asarray(x, dtype=np.float32))
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def test_closest_pairs_of_a_space_too_large_for_memory_come_from_a_tuned_ivf_index(big):
    xa, _ = big
    got = closest_pairs(xa, 20, k=10)
    assert got.info["exact"] is False and got.info["recall"] >= 0.95 and got.info["index"] in ("ivf", "ivfpq")
    s = _cos(np.asarray(xa, dtype=np.float32))
    iu, ju = np.triu_indices(3000, 1)
    top = np.argsort(-s[iu, ju], kind="stable")[:20]
    want = set(zip(iu[top].tolist(), ju[top].tolist()))
    # approximate neighbours (recall >= 0.95): nearly all of the 20 closest of 4.5 million pairs are found ...
    assert len(want & set(zip(got.i.tolist(), got.j.tolist()))) >= 18 and all(got.i < got.j)
    np.testing.assert_allclose(got.score, s[got.i, got.j], atol=1e-6)  # ... with exact cosines


def test_agreement_and_capped_ranks_of_spaces_too_large_for_memory(big):
    xa, xb = big
    ag = neighbourhood_agreement(xa, xb, 10)
    ka, kb = _exact_knn(xa, 10), _exact_knn(xb, 10)
    exact = np.array([len(set(p) & set(q)) / 10 for p, q in zip(ka, kb)])
    assert ag.info["exact"] is False and abs(ag.mean - exact.mean()) < 0.03
    pl = close_in_a_distant_in_b_ranks(xa, xb, 30, k=5, rank_cap=25)
    assert pl.info["rank_cap"] == 25 and len(pl) == 30
    assert pl.info["b"]["exact"] is True and pl.info["recall_b"] == 1.0 and pl.info["b"]["pairs_ranked"] >= 30
    # the exact answer among the same candidates (A's 5-NN pairs through the same index): brute-force ranks
    ci, cj, _ = _knn_pairs(_Space(xa, "x_a"), 5, 4096)
    sa, sb = _cos(np.asarray(xa, dtype=np.float32)), _cos(np.asarray(xb, dtype=np.float32))
    rank = np.minimum([min(_brute_rank(sb, i, j), _brute_rank(sb, j, i)) for i, j in zip(ci, cj)], 25)
    want = np.lexsort((cj, ci, -sa[ci, cj], sb[ci, cj], -rank))[:30]
    assert list(zip(pl.i.tolist(), pl.j.tolist())) == list(zip(ci[want].tolist(), cj[want].tolist()))
    np.testing.assert_array_equal(pl.extra["rank_b"], rank[want])
    assert (pl.extra["rank_b"] == 25).all()  # B has 3 clusters: plenty of distant pairs
    # pairs tied at the cap come lowest B cosine first
    assert np.all(np.diff(pl.extra["score_b"]) >= -1e-12)


def test_capped_ranks_of_a_large_space_are_exact_and_fall_back_to_its_graph_when_few_pairs_reach_the_cap(
        big, monkeypatch):
    """Ranks counted in passes over B (small passes and blocks here, so the walk takes several and blocks start
    inside B) give brute force's list: when n_pairs reach the cap, when every candidate is ranked (too few at the
    cap), and the counts themselves (self and partner never counted; a duplicated partner ties, not counted).
    When the passes allowed rank neither, B's rank_cap-NN graph gives the ranks; it is loaded only then."""
    import featscope.analysis.pairs as pairs

    xa, xb = big
    monkeypatch.setattr(pairs, "_RANKED_PER_PASS", 7)
    monkeypatch.setattr(pairs, "_RANK_CHUNK", 700)
    ci, cj, _ = _knn_pairs(_Space(xa, "x_a"), 5, 4096)
    sa = _cos(np.asarray(xa, dtype=np.float32))

    def brute(x, cap, n_pairs):
        s = _cos(np.asarray(x, dtype=np.float32))
        rank = np.minimum([min(_brute_rank(s, i, j), _brute_rank(s, j, i)) for i, j in zip(ci, cj)], cap)
        want = np.lexsort((cj, ci, -sa[ci, cj], s[ci, cj], -rank))[:n_pairs]
        return list(zip(ci[want].tolist(), cj[want].tolist())), rank[want]

    monkeypatch.setattr(pairs, "_RANK_PASSES", 10_000)
    for x, cap, walked_more in ((xb, 2900, True), (xa, 25, True)):  # some lowest-in-B below the cap; B = A: all
        got = close_in_a_distant_in_b_ranks(xa, x, 30, k=5, rank_cap=cap)
        pairs_want, rank_want = brute(x, cap, 30)
        assert got.info["b"]["exact"] is True and (got.info["b"]["pairs_ranked"] > 30) == walked_more
        assert list(zip(got.i.tolist(), got.j.tolist())) == pairs_want
        np.testing.assert_array_equal(got.extra["rank_b"], rank_want)
    assert got.info["b"]["pairs_ranked"] == len(ci)  # B = A: every candidate ranked, few at the cap

    sb = _cos(np.asarray(xb, dtype=np.float32))
    rng = np.random.default_rng(0)
    q = rng.integers(0, 3000, 400)
    partner = (q + rng.integers(1, 2999, 400)) % 3000
    for cap in (10, 2999):
        got = pairs._capped_exact_ranks(_Space(xb, "x_b"), q, partner, cap)
        np.testing.assert_array_equal(got, np.minimum([_brute_rank(sb, a, b) for a, b in zip(q, partner)], cap))
    dup = np.array(xb)
    dup[1500] = dup[7]  # row 1500 duplicates row 7: as a partner of 7's neighbours it ties, never counts above
    sd = _cos(dup.astype(np.float32))
    q, partner = np.array([3, 7, 7]), np.array([7, 1500, 8])
    got = pairs._capped_exact_ranks(_Space(dup, "x_b"), q, partner, 2999)
    assert got[1] == 0 and got[0] == int(np.sum(np.delete(sd[3], [3, 7]) > sd[3, 7]))
    assert got[2] == int(np.sum(np.delete(sd[7], [7, 8]) > sd[7, 8]))

    monkeypatch.setattr(pairs, "_RANK_PASSES", 4)  # 28 candidates: too few for 30 pairs: the graph at once
    loaded = []
    same = close_in_a_distant_in_b_ranks(xa, xa, 30, k=5, rank_cap=25, index_b=lambda: loaded.append(1))
    assert loaded == [1] and "pairs_ranked" not in same.info["b"] and same.info["b"]["exact"] is False
    assert (same.extra["rank_b"] < 25).all()
    monkeypatch.setattr(pairs, "_capped_exact_ranks", lambda *a, **k: pytest.fail("a pass that cannot succeed"))
    close_in_a_distant_in_b_ranks(xa, xb, 30, k=5, rank_cap=25)


def test_progress_reports_every_row_of_each_graph_in_order(big):
    """``progress(done, total)`` over the k-NN graphs a function searches: rising, complete at the end, and the
    same pairs as without it; in memory (one exact graph) and too large for memory (IVF graphs of A, then B)."""
    x = _data()
    calls = []
    got = closest_pairs(x, 10, k=5, chunk=50, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(50, 120), (100, 120), (120, 120)]
    assert got.to_dict() == closest_pairs(x, 10, k=5, chunk=50).to_dict()
    xa, xb = big
    for fn, graphs in ((lambda **kw: close_in_a_distant_in_b_ranks(xa, xb, 30, k=5, rank_cap=25, **kw), 2),
                       (lambda **kw: neighbourhood_agreement(xa, xb, 10, **kw), 2),
                       (lambda **kw: closest_pairs(xa, 20, k=10, **kw), 1)):
        calls = []
        fn(progress=lambda d, t: calls.append((d, t)))
        done = [d for d, _ in calls]
        assert {t for _, t in calls} == {graphs * 3000} and done == sorted(set(done)) and done[-1] == graphs * 3000
        assert 3000 in done
