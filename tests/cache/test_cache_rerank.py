"""The IVF-PQ exact re-rank (``featscope.cache.index._rerank``) against a brute-force reference: float64 cosines
of each query's own candidate slots, best ``k`` kept, -1 slots never returned."""

from __future__ import annotations

import numpy as np
import pytest

from featscope.cache.index import _rerank, normalize


def _reference(q: np.ndarray, cand: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force, one query and one candidate slot at a time."""
    xs = x.astype(np.float64)
    norms = np.linalg.norm(xs, axis=1)
    unit = np.divide(xs, norms[:, None], out=np.zeros_like(xs), where=norms[:, None] > 0)
    scores = np.full((len(q), k), -np.inf)
    positions = np.full((len(q), k), -1)
    for i, (qi, ci) in enumerate(zip(q.astype(np.float64), cand)):
        slots = [(float(unit[c] @ qi), int(c)) for c in ci if c >= 0]
        slots.sort(key=lambda t: -t[0])
        for j, (s, c) in enumerate(slots[:k]):
            scores[i, j], positions[i, j] = s, c
    return scores, positions


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d))
    return (centres[rng.integers(0, 12, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def _candidates(q: np.ndarray, x: np.ndarray, c: int, seed: int) -> np.ndarray:
    """Each query's ``c`` nearest rows by float32 cosine, shuffled (re-ranking restores the order), some slots -1."""
    sims = normalize(q) @ normalize(x).T
    cand = np.argsort(-sims, axis=1)[:, :c].copy()
    rng = np.random.default_rng(seed)
    for row in cand:
        rng.shuffle(row)
    cand[rng.random(cand.shape) < 0.1] = -1
    return cand


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("budget", [1, 64 << 20])  # one query per block; every query in one
def test_rerank_matches_brute_force(dtype, budget):
    x = _clustered(900, 48).astype(dtype)
    q = normalize(_clustered(120, 48, seed=1))
    cand = _candidates(q, x.astype(np.float32), 40, seed=2)
    cand[7] = -1  # a query FAISS found nothing for
    cand[8] = -1
    cand[8, [0, 5, 9]] = [530, 339, 12]  # and one with fewer candidates than k
    scores, positions = _rerank(q, cand, x, 10, budget=budget)
    want_s, want_p = _reference(q, cand, x, 10)
    assert scores.dtype == np.float32 and positions.dtype == np.int64 and scores.shape == (120, 10)
    np.testing.assert_allclose(scores, want_s, atol=2e-6)
    assert (positions == want_p).all()
    assert (positions[7] == -1).all() and np.isneginf(scores[7]).all()
    assert (positions[8, 3:] == -1).all() and (positions[8, :3] >= 0).all()


def test_rerank_keeps_duplicates_and_scores_zero_rows_zero():
    x = _clustered(300, 16)
    x[5] = x[17]  # one vector at two positions: equal scores for every query
    x[9] = 0.0  # a zero row: cosine 0, never NaN
    q = normalize(np.stack([x[17] + 0.01, x[40] + 0.01, x[40]]))
    cand = np.array([[17, 5, 9, 3, 17, -1], [9, 40, -1, -1, -1, -1], [40, 41, 5, 17, 5, 9]])
    scores, positions = _rerank(q, cand, x, 4)
    want_s, _ = _reference(q, cand, x, 4)
    np.testing.assert_allclose(scores, want_s, atol=2e-6)
    assert sorted(positions[0, :3].tolist()) == [5, 17, 17] and scores[0, 0] == scores[0, 1] == scores[0, 2]
    assert positions[1, :2].tolist() == [40, 9] and scores[1, 1] == 0.0 and positions[1, 2] == -1
    assert positions[2, 0] == 40 and np.isfinite(scores).sum() == 4 + 2 + 4


def test_rerank_result_does_not_depend_on_the_order_or_grouping_of_queries():
    x = _clustered(2000, 32).astype(np.float16)
    q = normalize(_clustered(300, 32, seed=3))
    cand = _candidates(q, x.astype(np.float32), 60, seed=4)
    scores, positions = _rerank(q, cand, x, 8)
    perm = np.random.default_rng(5).permutation(300)
    for budget, key in [(1, None), (64 << 20, np.arange(300)), (200_000, perm)]:
        s, p = _rerank(q[perm], cand[perm], x, 8, budget=budget, key=key)
        np.testing.assert_allclose(s, scores[perm], atol=1e-6)
        assert (p == positions[perm]).all()


def test_rerank_of_a_nan_row_says_what_to_do():
    x = _clustered(50, 8)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _rerank(normalize(x[:2]), np.array([[3, 4], [5, 6]]), x, 1)
