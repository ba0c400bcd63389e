"""Neighbours of spaces too large for memory through a prebuilt index: same results as building one, nothing
built, part of the indexed rows searched correctly (brute-force references), misuse refused."""

from __future__ import annotations

import numpy as np
import pytest

import featscope.analysis.knn as knn
from featscope.analysis.knn import PrebuiltIndex, approximate_knn, approximate_search
from featscope.analysis.pairs import (close_in_a_distant_in_b_clusters, close_in_a_distant_in_b_ranks, closest_pairs,
                                      neighbourhood_agreement)
from featscope.analysis.similarity import mutual_knn_alignment
from featscope.cache.index import build_index, tune_nprobe


def _clustered(path, name: str, n: int, centres: int, seed: int) -> np.ndarray:
    """Well-separated clusters of 24-d float16 vectors, written to ``path/name.npy`` and memory-mapped back."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, 24)) * 3
    x = (c[rng.integers(0, centres, n)] + rng.normal(size=(n, 24))).astype(np.float16)
    np.save(path / f"{name}.npy", x)
    return np.load(path / f"{name}.npy", mmap_mode="r")


@pytest.fixture
def big(monkeypatch, tmp_path, one_faiss_thread):
    """Two memory-mapped spaces of 3000 images with the in-memory limit set below them (the IVF path)."""
    import featscope.analysis.arrays as arrays

    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 10_000)
    return _clustered(tmp_path, "a", 3000, 40, 5), _clustered(tmp_path, "b", 3000, 3, 6)


def _prebuilt(x: np.ndarray, rows: np.ndarray | None = None, **build) -> PrebuiltIndex:
    """The index the analyses would build for ``x`` (same call, same seeds), tuned as they tune it."""
    index = build_index(x, flat_max=0, **build)
    tuning = tune_nprobe(index, x)
    return PrebuiltIndex(index, x, tuning.nprobe, tuning.rerank, tuning.recall, rows)


def _same_pairs(got, want) -> None:
    for name in ("i", "j", "score"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert got.extra.keys() == want.extra.keys()
    for name in got.extra:
        np.testing.assert_array_equal(got.extra[name], want.extra[name])


def _without_source(info: dict) -> dict:
    return {k: _without_source(v) if isinstance(v, dict) else v for k, v in info.items() if k != "index_source"}


# ---- the same index, prebuilt: the same results, nothing built -------------------------------------

def test_a_prebuilt_copy_of_the_index_gives_the_results_of_building_it(big, monkeypatch):
    xa, xb = big
    built = {"closest": closest_pairs(xa, 20, k=10), "ranks": close_in_a_distant_in_b_ranks(xa, xb, 30, k=5),
             "clusters": close_in_a_distant_in_b_clusters(np.arange(3000) % 7, np.arange(3000) % 2, xa, 30, k=5),
             "agreement": neighbourhood_agreement(xa, xb, 10), "mutual": mutual_knn_alignment(xa, xb, 10)}
    ia, ib = _prebuilt(xa), _prebuilt(xb)
    monkeypatch.setattr(knn, "build_index", lambda *a, **k: pytest.fail("built although an index was given"))
    monkeypatch.setattr(knn, "tune_nprobe", lambda *a, **k: pytest.fail("tuned although an index was given"))
    reused = {"closest": closest_pairs(xa, 20, k=10, index=ia),
              "ranks": close_in_a_distant_in_b_ranks(xa, xb, 30, k=5, index_a=ia, index_b=ib),
              "clusters": close_in_a_distant_in_b_clusters(np.arange(3000) % 7, np.arange(3000) % 2, xa, 30, k=5,
                                                           index_a=ia),
              "agreement": neighbourhood_agreement(xa, xb, 10, index_a=ia, index_b=ib),
              "mutual": mutual_knn_alignment(xa, xb, 10, index_x=ia, index_y=ib)}
    for name in ("closest", "ranks", "clusters"):
        _same_pairs(reused[name], built[name])
        assert built[name].info["index_source"] == "built" and reused[name].info["index_source"] == "stored"
        assert _without_source(reused[name].info) == _without_source(built[name].info)
    assert reused["ranks"].info["b"]["exact"] is True and len(reused["ranks"]) == 30  # ranks in B: exact
    same = close_in_a_distant_in_b_ranks(xa, xa, 30, k=5, index_a=ia, index_b=ia)  # too few at the cap: B's graph
    assert same.info["b"]["index_source"] == "stored" and same.info["b"]["exact"] is False
    np.testing.assert_array_equal(reused["agreement"].per_image, built["agreement"].per_image)
    assert reused["agreement"].info["a"]["index_source"] == reused["agreement"].info["b"]["index_source"] == "stored"
    assert _without_source(reused["agreement"].info) == _without_source(built["agreement"].info)
    assert reused["mutual"] == built["mutual"]
    info = reused["closest"].info  # what a user reads to trust the neighbours
    assert info["exact"] is False and info["index"] == "ivf" and info["recall"] == ia.recall >= 0.95
    assert (info["nprobe"], info["rerank"]) == (ia.nprobe, ia.rerank)


def test_a_prebuilt_ivfpq_index_is_searched_with_its_rerank_depth(big, no_building):
    """IVF-PQ (what a million 2048-d vectors get): approximate codes re-ranked with exact cosines read from the
    vectors; nearly all of the closest pairs of an all-pairs search are found (recall >= 0.95), scores exact."""
    xa, _ = big
    pre = _prebuilt(xa, memory_max=3000 * 24 * 4 - 1)
    assert pre.kind == "ivfpq" and pre.rerank >= 1
    got = closest_pairs(xa, 20, k=10, index=pre)
    assert got.info["index"] == "ivfpq" and got.info["index_source"] == "stored" and got.info["rerank"] == pre.rerank
    s = _cos(xa)
    iu, ju = np.triu_indices(3000, 1)
    top = np.argsort(-s[iu, ju], kind="stable")[:20]
    assert len(set(zip(iu[top].tolist(), ju[top].tolist())) & set(zip(got.i.tolist(), got.j.tolist()))) >= 18
    np.testing.assert_allclose(got.score, s[got.i, got.j], atol=1e-6)


# ---- the analysed rows are part of the indexed rows -------------------------------------------------

def _cos(x: np.ndarray) -> np.ndarray:
    u = np.asarray(x, dtype=np.float64)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    return u @ u.T


def _exact_knn(x: np.ndarray, k: int) -> np.ndarray:
    s = _cos(x)
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def _some_rows(x: np.ndarray, tmp_path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """2600 of x's 3000 rows in shuffled order (images another set lacks), memory-mapped as an analysis sees them."""
    rows = np.random.default_rng(3).permutation(len(x))[:2600]
    np.save(tmp_path / f"{name}.npy", np.asarray(x)[rows])
    return rows, np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def test_an_index_of_more_rows_searches_among_the_analysed_rows_only(big, tmp_path, no_building):
    xa, _ = big
    rows, sub = _some_rows(xa, tmp_path, "sub")
    exhaustive = _prebuilt(xa, rows)
    exhaustive.index.nprobe = exhaustive.index.nlist  # every list: the search is exact, so must equal brute force
    exhaustive = PrebuiltIndex(exhaustive.index, xa, exhaustive.index.nlist, 0, 1.0, rows)
    graph, info = approximate_knn(sub, 10, prebuilt=exhaustive)
    # places among the analysed rows, never other rows: each row's 10 best cosines among them, in order (float16
    # data has near-ties that float32 search and float64 brute force may order differently: compare cosines)
    s = _cos(sub)
    np.fill_diagonal(s, -np.inf)
    assert graph.min() >= 0 and graph.max() < 2600 and not (graph == np.arange(2600)[:, None]).any()
    np.testing.assert_allclose(np.take_along_axis(s, graph, 1), -np.sort(-s, axis=1)[:, :10], atol=1e-6)
    assert info["index_source"] == "stored, searched among the analysed rows" and info["index_rows"] == 3000
    assert info["recall"] == 1.0  # measured on the analysed rows


def test_pairs_and_agreement_on_part_of_the_indexed_rows_match_brute_force(big, tmp_path, no_building):
    xa, xb = big
    rows, sub_a = _some_rows(xa, tmp_path, "sub_a")
    sub_b = np.load(_save(tmp_path, "sub_b", np.asarray(xb)[rows]), mmap_mode="r")
    ia, ib = _prebuilt(xa, rows), _prebuilt(xb, rows)
    got = closest_pairs(sub_a, 20, k=10, index=ia)
    s = _cos(sub_a)
    iu, ju = np.triu_indices(2600, 1)
    top = np.argsort(-s[iu, ju], kind="stable")[:20]
    assert len(set(zip(iu[top].tolist(), ju[top].tolist())) & set(zip(got.i.tolist(), got.j.tolist()))) >= 18
    np.testing.assert_allclose(got.score, s[got.i, got.j], atol=1e-6)  # cosines of the analysed rows' own pairs
    assert got.info["index_source"] == "stored, searched among the analysed rows" and got.info["recall"] >= 0.95
    ag = neighbourhood_agreement(sub_a, sub_b, 10, index_a=ia, index_b=ib)
    ka, kb = _exact_knn(sub_a, 10), _exact_knn(sub_b, 10)
    exact = np.mean([len(set(p) & set(q)) / 10 for p, q in zip(ka, kb)])
    assert abs(ag.mean - exact) < 0.03 and ag.info["a"]["index_rows"] == 3000


def _save(path, name: str, x: np.ndarray):
    np.save(path / f"{name}.npy", x)
    return path / f"{name}.npy"


def test_a_restricted_search_below_the_recall_target_is_not_trusted(big, tmp_path, monkeypatch):
    """Recall on part of the rows is measured, not assumed: too low, and an index of those rows is built."""
    xa, _ = big
    rows, sub = _some_rows(xa, tmp_path, "sub")
    pre = _prebuilt(xa, rows)
    monkeypatch.setattr(knn, "measure_recall", lambda *a, **k: 0.5)
    graph, info = approximate_knn(sub, 10, prebuilt=pre)
    assert info["index_source"] == "built" and info["recall"] >= 0.95
    assert np.mean([len(set(g) & set(t)) / 10 for g, t in zip(graph, _exact_knn(sub, 10))]) >= 0.95


# ---- the k-NN probe: test rows against the train+val rows -----------------------------------------

def test_the_probe_searches_a_prebuilt_index_among_the_train_and_val_rows_only(big, no_building):
    xa, _ = big
    pre = _prebuilt(xa)
    pre.index.nprobe = pre.index.nlist  # every list probed: exact, so it must equal brute force
    exhaustive = PrebuiltIndex(pre.index, xa, pre.index.nlist, 0, 1.0)
    db = np.sort(np.random.default_rng(4).choice(3000, 2000, replace=False))
    test = np.setdiff1d(np.arange(3000), db)
    found, sims, info = approximate_search(xa, db, test, 7, prebuilt=exhaustive)
    s = _cos(xa)[test][:, db]
    assert found.shape == (1000, 7) and found.min() >= 0 and found.max() < 2000  # places in db, never test rows
    best = -np.sort(-s, axis=1)[:, :7]
    np.testing.assert_allclose(np.take_along_axis(s, found, 1), best, atol=1e-6)
    np.testing.assert_allclose(sims, best, atol=1e-5)
    assert info["index_source"] == "stored, searched among part of its rows" and info["recall"] == 1.0


def test_the_knn_probe_of_a_space_too_large_for_memory_uses_a_prebuilt_index(big, no_building):
    from featscope.analysis.probes import knn_accuracy, make_splits

    xa, _ = big
    rng = np.random.default_rng(5)  # space A's clusters, as _clustered drew them: 40 clusters in 5 classes
    rng.normal(size=(40, 24))
    labels = np.array([f"c{v % 5}" for v in rng.integers(0, 40, 3000)])
    splits = make_splits(labels, seed=0)
    got = knn_accuracy(xa, labels, splits, k=7, index=_prebuilt(xa))
    assert got.info["index_source"] == "stored, searched among part of its rows" and got.info["recall"] >= 0.95
    import featscope.analysis.arrays as arrays

    arrays.IN_MEMORY_MAX = 1 << 30  # (restored by the fixture's monkeypatch) exact, in memory: the reference
    want = knn_accuracy(np.asarray(xa, dtype=np.float32), labels, splits, k=7)
    assert want.info == {"exact": True, "recall": 1.0}
    assert abs(got.accuracy - want.accuracy) <= 2 / got.n_test


# ---- what a prebuilt index is not used for, and misuse ---------------------------------------------

def test_a_space_that_fits_in_memory_is_searched_exactly_whatever_index_is_given(tmp_path, no_building):
    x = np.asarray(_clustered(tmp_path, "small", 300, 10, 1), dtype=np.float32)
    never_searched = PrebuiltIndex(object(), x, 1, 0, 0.1)  # would fail any use
    got = closest_pairs(x, 10, k=5, index=never_searched)
    assert got.info == {"exact": True, "recall": 1.0}


@pytest.mark.parametrize("change,match", [
    (lambda p, x: PrebuiltIndex(build_index(x, flat_max=10_000), x, 1, 0, 1.0), "is flat"),
    (lambda p, x: PrebuiltIndex(p.index, x, p.nprobe + 1, p.rerank, p.recall), "probes"),
    (lambda p, x: PrebuiltIndex(p.index, np.asarray(x)[::-1], p.nprobe, p.rerank, p.recall), "not the rows"),
    (lambda p, x: PrebuiltIndex(p.index, x[:100], p.nprobe, p.rerank, p.recall), "holds 3000 vectors"),
    (lambda p, x: PrebuiltIndex(p.index, x, p.nprobe, p.rerank, p.recall, np.arange(100)), "one index row"),
    (lambda p, x: PrebuiltIndex(p.index, x, p.nprobe, p.rerank, p.recall, np.zeros(3000, int)), "no repeats"),
])
def test_a_prebuilt_index_that_is_not_over_the_analysed_rows_is_refused(big, change, match, no_building):
    xa, _ = big
    with pytest.raises(ValueError, match=match):
        closest_pairs(xa, 10, k=5, index=change(_prebuilt(xa), xa))  # built by cache.index itself: not patched
