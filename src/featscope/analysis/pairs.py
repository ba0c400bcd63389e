"""Nearest-neighbour image pairs within and across two embedding spaces (METHOD.md, analyses 1 and 3).

Every function takes embeddings of the *same* N images in one or two spaces (row i = image i) and
uses cosine similarity: inner product of L2-normalised vectors (all-zero rows have similarity 0 to
everything). Neighbours come from an exact FAISS ``IndexFlatIP`` searched in chunks of queries, so
memory stays O(chunk * N) however large N is.

A space too large to copy into memory (``arrays.IN_MEMORY_MAX``; a memory-mapped million-image set) is
read in chunks, and its neighbours come from a FAISS IVF index whose ``nprobe`` is tuned to recall@10 >= 0.95
against exact search (exact search costs O(N^2 D), about a day for a million 2048-d vectors on a CPU). The
measured recall is reported (``PairList.info``, ``Agreement.info``); neighbour *ranks* in B, which take an
O(N^2 D) scan to count for every pair, are then counted up to ``rank_cap``, exactly for the candidates that
lead the list, an O(N D) pass over B per 256 of them (see :func:`close_in_a_distant_in_b_ranks`). Building and
tuning that index costs minutes per space at a million vectors: a caller holding one already (an embedding
set's stored index) passes it (``index=``, ``index_a=``, ``index_b=``: a :class:`~featscope.analysis.knn.PrebuiltIndex`)
and it is searched instead (``info["index_source"]`` says which; :mod:`featscope.analysis.knn`). A space that
fits in memory ignores it: exact search is affordable there, and its result (recall 1) beats any index's and
does not depend on whether one was stored.

Exact duplicates: two rows with identical vectors are two different images with cosine 1. Only an
image's own row is removed from its neighbour list (by position, never by score), so duplicates are
each other's nearest neighbours and appear as pairs with score 1. Ties are broken by FAISS's order;
pair lists are sorted deterministically (score, then i, then j).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from featscope.analysis.arrays import embeddings_or_stream, fits_in_memory
from featscope.analysis.knn import PrebuiltIndex, approximate_knn
from featscope.cache.index import normalize

_DEFAULT_CHUNK = 4096
_COMPARE_BUDGET = 1 << 24  # elements of one (pairs x N) comparison block when counting ranks
Progress = Callable[[int, int], None]  # (rows done, rows in all) of the k-NN graphs a function builds


@dataclass(frozen=True, eq=False)
class PairList:
    """Image pairs ``(i[p], j[p])`` with ``i < j``, their cosine ``score`` in the space they were
    found in, and optional per-pair ``extra`` columns (same length), in ranking order."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # how neighbours were found: {"exact": bool, "recall": ...}

    def __len__(self) -> int:
        return len(self.i)

    def to_dict(self) -> dict[str, list]:
        """JSON-ready columns: ``{"i": [...], "j": [...], "score": [...], **extra}``."""
        out: dict[str, list] = {"i": self.i.tolist(), "j": self.j.tolist(), "score": self.score.tolist()}
        out.update({name: col.tolist() for name, col in self.extra.items()})
        return out


@dataclass(frozen=True, eq=False)
class Agreement:
    """How far each image's k nearest neighbours agree between two spaces.

    ``per_image[i]`` = |kNN_A(i) ∩ kNN_B(i)| / k in [0, 1]; ``mean`` its average; ``worst`` the
    indices of the images that agree least (lowest overlap first, ties by index)."""

    per_image: np.ndarray
    mean: float
    worst: np.ndarray
    k: int
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"k": self.k, "mean": self.mean, "per_image": self.per_image.tolist(),
                "worst": self.worst.tolist()}


def closest_pairs(x: np.ndarray, n_pairs: int = 50, *, k: int = 10, chunk: int = _DEFAULT_CHUNK,
                  index: PrebuiltIndex | None = None, progress: Progress | None = None) -> PairList:
    """The ``n_pairs`` most similar image pairs in one space (Fig. 3, left and right panels).

    Candidates are the pairs (i, j) with j among the ``k`` nearest neighbours of i (or i among j's);
    each unordered pair appears once with ``i < j``. ``k`` bounds the candidate set: the m-th most
    similar pair of the whole set is always among i's top-m neighbours, so ``k >= n_pairs`` makes the
    result exact (equal to an all-pairs search); a smaller ``k`` is faster and only misses pairs whose
    images both have ``k`` closer neighbours elsewhere. Scores are float64 cosines. ``index``: x's
    prebuilt index, searched instead of building one when x is too large for memory (module docstring).
    ``progress(done, total)``: rows of the k-NN graph done so far.
    """
    xn = _Space(x, "x")
    _check_k(k, len(xn))
    _check_count(n_pairs, "n_pairs")
    i, j, info = _knn_pairs(xn, k, chunk, index, progress)
    score = _pair_cosine(xn, i, j, chunk)
    order = np.lexsort((j, i, -score))[:n_pairs]
    return PairList(i[order], j[order], score[order], info=info)


def close_in_a_distant_in_b_clusters(labels_a_large: np.ndarray, labels_b_small: np.ndarray, x_a: np.ndarray,
                                     n_pairs: int = 50, *, k: int = 10, chunk: int = _DEFAULT_CHUNK,
                                     index_a: PrebuiltIndex | None = None, progress: Progress | None = None) -> PairList:
    """Pairs close in space A but distant in space B by the study's cluster definition (appendix 6.1).

    *Close in A*: same cluster of A clustered with many clusters (``labels_a_large``, e.g. K > 1000).
    *Distant in B*: different clusters of B clustered with few clusters (``labels_b_small``, K < 5).
    The caller clusters (e.g. ``clustering.kmeans_labels``); candidates are A's k-NN pairs (see
    :func:`closest_pairs` for what ``k`` bounds), ranked by cosine in A, most similar first.
    Extra columns: ``cluster_a`` (shared A cluster), ``cluster_b_i`` and ``cluster_b_j``. ``index_a``: A's
    prebuilt index (module docstring); ``progress``: as in :func:`closest_pairs`.
    """
    xn = _Space(x_a, "x_a")
    n = len(xn)
    la = _labels(labels_a_large, "labels_a_large", n)
    lb = _labels(labels_b_small, "labels_b_small", n)
    _check_k(k, n)
    _check_count(n_pairs, "n_pairs")
    i, j, info = _knn_pairs(xn, k, chunk, index_a, progress)
    keep = (la[i] == la[j]) & (lb[i] != lb[j])
    i, j = i[keep], j[keep]
    score = _pair_cosine(xn, i, j, chunk)
    order = np.lexsort((j, i, -score))[:n_pairs]
    i, j = i[order], j[order]
    return PairList(i, j, score[order], {"cluster_a": la[i], "cluster_b_i": lb[i], "cluster_b_j": lb[j]}, info)


def close_in_a_distant_in_b_ranks(x_a: np.ndarray, x_b: np.ndarray, n_pairs: int = 50, *, k: int = 10,
                                  chunk: int = _DEFAULT_CHUNK, rank_cap: int = 100,
                                  index_a: PrebuiltIndex | None = None,
                                  index_b: PrebuiltIndex | Callable[[], PrebuiltIndex | None] | None = None,
                                  progress: Progress | None = None) -> PairList:
    """Pairs close in space A but distant in space B by neighbour rank (Fig. 3, middle panel).

    Candidates are A's k-NN pairs. For each, the exact rank of j in i's neighbour list in B is
    ``#{j' != i : cos_B(i, j') > cos_B(i, j)}`` (0 = nearest; ties share the better rank), and likewise
    for i in j's list. The pair's B rank is the *minimum* of the two directions: a pair counts as
    distant in B only if neither image has the other anywhere near its B neighbours. Pairs are ranked
    by B rank, most distant first (ties: higher A cosine first). Extra columns: ``rank_b``,
    ``rank_b_ij``, ``rank_b_ji``, ``score_b``. B is scanned in row blocks of bounded size (~64 MB
    whatever N), costing O(N^2 D) time like one all-pairs similarity pass.

    A space B too large for memory is not scanned for every pair: ranks are capped at ``rank_cap`` (a partner
    at or beyond it gets rank ``rank_cap``; pairs tied there are ordered by their B cosine, lowest first;
    ``info["rank_cap"]`` says so). The list starts with pairs at the cap whenever there are ``n_pairs`` of
    them, so the candidates are ranked exactly, lowest B cosine first, 256 per pass over B, until ``n_pairs``
    are found at the cap or every candidate is ranked (:func:`_capped_lowest_in_b`;
    ``info["b"]["pairs_ranked"]``: the candidates walked): the result is exact, up to float32 rounding of
    cosines that tie. Only when four passes do not find them do ranks come from B's ``rank_cap`` nearest
    neighbours (IVF, tuned recall; ``info["b"]`` says how they were found; ``index_b`` may be a function
    returning B's prebuilt index, called only then). ``index_a``: A's prebuilt index (module docstring).
    ``progress(done, total)``: rows of A's k-NN graph, then of B's (all N at once when B's ranks took passes).
    """
    xa, xb = _Space(x_a, "x_a"), _Space(x_b, "x_b")
    _check_same_n(xa, xb)
    _check_k(k, len(xa))
    _check_count(n_pairs, "n_pairs")
    first, second = _stages(progress, len(xa), 2 if xb.big else 1)
    i, j, info = _knn_pairs(xa, k, chunk, index_a, first)
    score = _pair_cosine(xa, i, j, chunk)
    score_b = _pair_cosine(xb, i, j, chunk)
    if xb.big:
        cap = min(int(rank_cap), len(xb) - 1)
        found = _capped_lowest_in_b(xb, i, j, score, score_b, cap, n_pairs)
        if found is not None:  # exact ranks of the pairs that can lead the list: no graph of B needed
            sel, rank_ij, rank_ji, walked = found
            i, j, score, score_b = i[sel], j[sel], score[sel], score_b[sel]
            info_b = {"exact": True, "recall": 1.0, "pairs_ranked": walked}
            if second is not None:
                second(len(xb), len(xb))
        else:
            nb, info_b = _knn(xb, cap, chunk=chunk, prebuilt=index_b() if callable(index_b) else index_b,
                              progress=second)
            rank_ij, rank_ji = _capped_rank(nb, i, j, cap), _capped_rank(nb, j, i, cap)
        info = {**info, "rank_cap": cap, "recall_b": info_b["recall"], "b": info_b}
    else:
        both = _ranks(xb, np.concatenate([i, j]), np.concatenate([j, i]), chunk)  # one scan of B for both
        rank_ij, rank_ji = both[:len(i)], both[len(i):]
    rank = np.minimum(rank_ij, rank_ji)
    order = np.lexsort((j, i, -score, score_b, -rank) if xb.big else (j, i, -score, -rank))[:n_pairs]
    i, j = i[order], j[order]
    return PairList(i, j, score[order], {"rank_b": rank[order], "rank_b_ij": rank_ij[order],
                                         "rank_b_ji": rank_ji[order], "score_b": score_b[order]}, info)


_RANKED_PER_PASS = 256  # candidate pairs ranked per pass over a space too large for memory
_RANK_PASSES = 4  # passes tried before falling back to the space's k-NN graph
_RANK_CHUNK = 16384  # rows of B scored per block of a pass


def _capped_lowest_in_b(xb: _Space, i: np.ndarray, j: np.ndarray, score: np.ndarray, score_b: np.ndarray,
                        cap: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Candidates with exact capped ranks both ways that make up the list: ``(positions in i/j, rank_ij,
    rank_ji, candidates walked)``. Walking the candidates in the order (B cosine, -A cosine, i, j), the first
    ``n_pairs`` at the cap both ways; or every candidate, when at most ``_RANK_PASSES`` passes rank them all.
    None when ``_RANK_PASSES`` passes find neither (or ``n_pairs`` exceeds what they can rank).

    Why this is the answer: the list orders pairs at the cap first, then by B cosine (lowest first), A cosine
    and index, so when ``n_pairs`` pairs reach the cap they are the list, and walking the candidates in that
    order finds them first. Written here because the alternative, B's ``cap``-NN graph from its IVF-PQ index,
    costs a search of every one of N rows with ``cap * rerank`` exact re-scores each (38.6 min at N = 300k,
    hours at a million, and approximate), while this costs a pass over B per 256 candidates: the lowest B
    cosines among close-in-A pairs are nearly always at the cap, so one pass usually does."""
    limit = _RANK_PASSES * _RANKED_PER_PASS
    if n_pairs > min(len(i), limit) or not len(i):
        return None
    order = np.lexsort((j, i, -score, score_b))
    seen: list[np.ndarray] = []
    r_ij: list[np.ndarray] = []
    r_ji: list[np.ndarray] = []
    found = 0
    for start in range(0, min(len(order), limit), _RANKED_PER_PASS):
        batch = order[start:start + _RANKED_PER_PASS]
        ranks = _capped_exact_ranks(xb, np.concatenate([i[batch], j[batch]]), np.concatenate([j[batch], i[batch]]),
                                    cap)
        seen.append(batch)
        r_ij.append(ranks[:len(batch)])
        r_ji.append(ranks[len(batch):])
        found += int(np.sum((r_ij[-1] == cap) & (r_ji[-1] == cap)))
        if found >= n_pairs:
            walked, a, b = np.concatenate(seen), np.concatenate(r_ij), np.concatenate(r_ji)
            at_cap = np.flatnonzero((a == cap) & (b == cap))[:n_pairs]
            return walked[at_cap], a[at_cap], b[at_cap], int(at_cap[-1]) + 1
    if len(order) <= limit:  # every candidate ranked exactly: the list is among them, whatever their ranks
        return np.concatenate(seen), np.concatenate(r_ij), np.concatenate(r_ji), len(order)
    return None


def _capped_exact_ranks(xb: _Space, q: np.ndarray, partner: np.ndarray, cap: int) -> np.ndarray:
    """``min(cap, #{j' not in (q, partner) : cos(q, j') > cos(q, partner)})`` for each pair, in one pass over the
    rows of ``xb`` (memory-mapped), ``_RANK_CHUNK`` rows at a time.

    The threshold ``cos(q, partner)`` is computed once, in float32; the self and partner columns of the scan are
    left out by position, so rounding differences between the two computations cannot count either (another
    row whose cosine ties the threshold to the last bit may)."""
    rows, where = np.unique(q, return_inverse=True)
    queries = xb.rows(rows)
    thresh = np.einsum("pd,pd->p", queries[where], xb.rows(partner))
    counts = np.zeros(len(q), dtype=np.int64)
    for start in range(0, len(xb), _RANK_CHUNK):
        block = normalize(np.asarray(xb.data[start:start + _RANK_CHUNK]))
        sims = queries @ block.T
        counts += np.count_nonzero(sims[where] > thresh[:, None], axis=1)
        for cols in (q, partner):  # never count the query itself or the partner
            inside = np.flatnonzero((cols >= start) & (cols < start + len(block)))
            counts[inside] -= sims[where[inside], cols[inside] - start] > thresh[inside]
    return np.minimum(counts, cap)


def _capped_rank(nbrs: np.ndarray, i: np.ndarray, j: np.ndarray, cap: int) -> np.ndarray:
    """Place of j in i's neighbour list (rows of ``nbrs``), or ``cap`` when it is not there."""
    hit = nbrs[i] == j[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), cap).astype(np.int64)


def neighbourhood_agreement(x_a: np.ndarray, x_b: np.ndarray, k: int = 10, *, n_worst: int = 20,
                            chunk: int = _DEFAULT_CHUNK, index_a: PrebuiltIndex | None = None,
                            index_b: PrebuiltIndex | None = None, progress: Progress | None = None) -> Agreement:
    """Per-image overlap of the k nearest neighbours (self excluded) in spaces A and B.

    1 means image i has the same k neighbours in both spaces, 0 that they share none. ``worst`` holds
    the ``n_worst`` least-agreeing images (lowest overlap first, ties by index). ``info`` says how each
    space's neighbours were found (``a``, ``b``); ``index_a``, ``index_b``: prebuilt indexes (module docstring);
    ``progress(done, total)``: rows of the two k-NN graphs done so far.
    """
    xa, xb = _Space(x_a, "x_a"), _Space(x_b, "x_b")
    _check_same_n(xa, xb)
    _check_k(k, len(xa))
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    first, second = _stages(progress, len(xa), 2)
    na, info_a = _knn(xa, k, chunk=chunk, prebuilt=index_a, progress=first)
    nb, info_b = _knn(xb, k, chunk=chunk, prebuilt=index_b, progress=second)
    # slots an IVF search left empty (-1) get distinct negative fillers, so they never count as shared
    na = np.where(na < 0, -1 - np.arange(k), na)
    nb = np.where(nb < 0, -1 - k - np.arange(k), nb)
    both = np.sort(np.hstack([na, nb]), axis=1)  # each list has distinct entries: repeats = shared
    per_image = (both[:, 1:] == both[:, :-1]).sum(axis=1) / k
    worst = np.lexsort((np.arange(len(per_image)), per_image))[:n_worst]
    info = {"exact": info_a["exact"] and info_b["exact"], "recall_a": info_a["recall"], "recall_b": info_b["recall"],
            "a": info_a, "b": info_b}
    return Agreement(per_image, float(per_image.mean()), worst.astype(np.int64), k, info)


class _Space:
    """Unit-normalised rows of one embedding space: a normalised copy in memory when it fits
    (``arrays.IN_MEMORY_MAX``), otherwise the caller's (memory-mapped) array, normalised chunk by chunk."""

    def __init__(self, x: np.ndarray, name: str) -> None:
        raw = embeddings_or_stream(x, name)
        self.big = not fits_in_memory(raw)
        self.data = raw if self.big else normalize(raw)
        self.name = name

    def __len__(self) -> int:
        return len(self.data)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Unit rows ``idx`` as float32 (read in ascending order from a memory map, returned in ``idx`` order)."""
        if not self.big:
            return self.data[idx]
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), self.data.shape[1]), dtype=np.float32)
        out[order] = normalize(np.asarray(self.data[idx[order]]))
        return out


def _knn(xn: _Space, k: int, *, chunk: int = _DEFAULT_CHUNK, prebuilt: PrebuiltIndex | None = None,
         progress: Progress | None = None) -> tuple[np.ndarray, dict]:
    """Positions (N, k) of each row's ``k`` most cosine-similar other rows, and how they were found.

    In memory: exact (``IndexFlatIP``), queried ``chunk`` rows at a time; a row's own position is removed
    (or, if duplicates pushed it out of the top k + 1, the last hit is dropped instead); ``prebuilt`` is not
    used (module docstring). Too large for memory: ``prebuilt``, or an IVF index built over the chunked rows
    with ``nprobe`` tuned to recall@10 >= 0.95 (:func:`featscope.analysis.knn.approximate_knn`; slots it could
    not fill: -1). ``progress(done, total)`` after each chunk of rows.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if xn.big:
        return approximate_knn(xn.data, k, prebuilt=prebuilt, name=xn.name, progress=progress)
    n, d = xn.data.shape
    index = faiss.IndexFlatIP(d)
    index.add(xn.data)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        _, found = index.search(xn.data[rows], k + 1)
        drop = found == rows[:, None]
        drop[~drop.any(axis=1), -1] = True
        out[rows] = found[~drop].reshape(len(rows), k)
        if progress is not None:
            progress(int(rows[-1]) + 1, n)
    return out, {"exact": True, "recall": 1.0}


def _knn_pairs(xn: _Space, k: int, chunk: int, prebuilt: PrebuiltIndex | None = None,
               progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Unique unordered k-NN pairs (i < j), as two int64 arrays sorted by (i, j), and how they were found."""
    nbrs, info = _knn(xn, k, chunk=chunk, prebuilt=prebuilt, progress=progress)
    rows = np.repeat(np.arange(len(xn), dtype=np.int64), k)
    cols = nbrs.reshape(-1)
    rows, cols = rows[cols >= 0], cols[cols >= 0]
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    key = np.unique(lo * len(xn) + hi)
    return key // len(xn), key % len(xn), info


def _stages(progress: Progress | None, n: int, graphs: int) -> tuple[Progress | None, Progress | None]:
    """Callbacks for the first and second of the ``graphs`` (1 or 2) k-NN graphs of ``n`` rows a function builds
    in turn, each reporting to ``progress`` as its part of the whole (``graphs * n`` rows); None where there is
    no such graph or no ``progress``."""
    if progress is None:
        return None, None
    calls = [lambda done, _total, g=g: progress(g * n + done, graphs * n) for g in range(graphs)]
    return calls[0], (calls[1] if graphs > 1 else None)


def _pair_cosine(xn: _Space, i: np.ndarray, j: np.ndarray, chunk: int) -> np.ndarray:
    """float64 cosine of each pair (rows of ``xn`` are unit vectors), ``chunk`` pairs at a time."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        a = xn.rows(i[s:s + chunk]).astype(np.float64)
        b = xn.rows(j[s:s + chunk]).astype(np.float64)
        out[s:s + chunk] = np.einsum("pd,pd->p", a, b)
    return out


def _ranks(space: _Space, i: np.ndarray, j: np.ndarray, chunk: int) -> np.ndarray:
    """Exact rank of j in i's neighbour list: #{j' != i : cos(i, j') > cos(i, j)}.

    Query rows are processed in blocks of at most ``chunk`` rows and ``_COMPARE_BUDGET`` elements
    (a block x N similarity matrix), and each pair is compared with its own threshold, so the cost is
    O(N^2 D) for the similarities (one sgemm pass, as one exact k-NN search) plus O(pairs * N)
    comparisons, in O(_COMPARE_BUDGET) memory (~64 MB) for any N.

    The comparisons read each query row of the block in place against all of that row's thresholds
    (:func:`_count_above`); gathering a copy of the row for every pair (``sims[rows]``) used to cost
    more than the comparisons themselves (9 of 27 s at N = 20k). Same matrix, same comparisons: same ranks.
    """
    xn = space.data  # in memory and normalised: only small spaces are scanned
    n = len(xn)
    out = np.empty(len(i), dtype=np.int64)
    by_query = np.argsort(i, kind="stable")
    sorted_i = i[by_query]
    queries = np.unique(i)
    per_block = max(1, min(chunk, _COMPARE_BUDGET // n))
    step = max(1, _COMPARE_BUDGET // n)
    for s in range(0, len(queries), per_block):
        block_rows = queries[s:s + per_block]
        sims = xn[block_rows] @ xn.T  # float32, one consistent matrix for every comparison
        sims[np.arange(len(block_rows)), block_rows] = -np.inf  # j' != i (never counted as closer)
        first, last = np.searchsorted(sorted_i, block_rows[0]), np.searchsorted(sorted_i, block_rows[-1], "right")
        sel = by_query[first:last]  # the pairs whose query row is in this block, grouped by query row
        bounds = np.searchsorted(sorted_i[first:last], block_rows, "right")
        out[sel] = _count_above(sims, sims[np.searchsorted(block_rows, i[sel]), j[sel]], bounds, step)
    return out


def _count_above(sims: np.ndarray, thresh: np.ndarray, bounds: np.ndarray, step: int) -> np.ndarray:
    """``#{c : sims[r, c] > thresh[p]}`` for every pair p of every row r: row r's pairs are the slice of
    ``thresh`` that ends at ``bounds[r]`` and starts where row r - 1's ended (at 0 for row 0); at most ``step``
    pairs are compared at a time (a ``step`` x N boolean matrix).

    A Python loop over rows (N iterations in all, microseconds each against the row's O(pairs * N) numpy
    comparisons) so that no row is copied; numpy has no vectorised "count above a per-row threshold list"."""
    counts = np.empty(len(thresh), dtype=np.int64)
    start = 0
    for r, end in enumerate(bounds.tolist()):
        row = sims[r]
        for t in range(start, end, step):
            u = min(t + step, end)
            counts[t:u] = np.count_nonzero(row > thresh[t:u, None], axis=1)
        start = end
    return counts


def _labels(labels: np.ndarray, name: str, n: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must be a 1-D array with one label per image ({n}), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer cluster labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_same_n(xa: np.ndarray, xb: np.ndarray) -> None:
    if len(xa) != len(xb):
        raise ValueError(f"x_a has {len(xa)} rows but x_b has {len(xb)}; both must embed the same images "
                         f"in the same order (row i = image i)")


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n:
        raise ValueError(f"k must be an integer with 1 <= k < N = {n} (neighbours exclude the image itself), "
                         f"got {k!r}")


def _check_count(value: int, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
