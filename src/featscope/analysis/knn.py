"""Approximate k-NN graphs of spaces too large for memory: through an index built beforehand, or one built here.

A space above ``arrays.IN_MEMORY_MAX`` (a memory-mapped million-image set) gets its neighbours from a FAISS
IVF or IVF-PQ index whose ``nprobe`` reaches recall@10 >= :data:`RECALL_TARGET` against exact search. Building
and tuning one costs minutes per space at a million vectors, and an analysis would do it on every call; a
caller that already holds such an index over the same vectors (every embedding set stores one, built and
tuned by the same :mod:`featscope.cache.index` code) passes it as a :class:`PrebuiltIndex` instead.

Both ways give the same thing: cosine neighbours (inner product of L2-normalised vectors), a row's own
position left out and duplicates kept, unfilled slots -1, IVF-PQ candidates re-ranked with exact cosines
read from the vectors (:func:`featscope.cache.index.knn_graph`), and an ``info`` dict saying how they were
found: ``exact`` (False), ``recall`` (measured recall@10), ``nprobe``, ``rerank``, ``index`` (``ivf`` or
``ivfpq``) and ``index_source``: ``"stored"`` (the prebuilt index, recall as measured when it was tuned),
``"stored, searched among the analysed rows"`` (the index holds more rows than the analysis compares: each
search is restricted to the analysed rows and the recall is measured again on them), or ``"built"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from featscope.cache.index import (build_index, index_kind, knn_graph, measure_recall, restrict_to, search,
                                   tune_nprobe)

log = logging.getLogger(__name__)

RECALL_TARGET = 0.95  # recall@10 an IVF index must reach against exact search for the analyses
_SPOT_CHECKS = 8  # rows compared between the analysed array and a prebuilt index's vectors


@dataclass(frozen=True, eq=False)
class PrebuiltIndex:
    """A tuned IVF / IVF-PQ cosine index built beforehand (:func:`featscope.cache.index.build_index` and
    :func:`~featscope.cache.index.tune_nprobe`), for an analysis to search instead of building its own.

    ``vectors``: the array the index was built from (row p = index position p; IVF-PQ re-ranks read it).
    ``nprobe``, ``rerank`` and ``recall`` (recall@10 against exact search): what tuning chose and measured.
    ``rows``: index positions of the analysed rows (analysed row r = index row ``rows[r]``) when the analysis
    compares only part of the indexed rows, or in another order; None when they are the same rows in the
    same order."""

    index: faiss.Index
    vectors: np.ndarray
    nprobe: int
    rerank: int
    recall: float
    rows: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """``ivf`` or ``ivfpq``."""
        return index_kind(self.index)


def approximate_knn(x: np.ndarray, k: int, *, prebuilt: PrebuiltIndex | None = None, chunk: int = 4096,
                    name: str = "x", progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict]:
    """Positions (N, k) of each row's ``k`` most cosine-similar other rows of ``x`` (-1: a slot the IVF search
    could not fill), and how they were found (module docstring).

    With ``prebuilt``, its index is searched and nothing is built or tuned. When it holds other rows besides
    the analysed ones (``prebuilt.rows``), the restricted search's recall is measured first (500 queries
    against exact search among the analysed rows); if it falls short of the target (or of the index's own
    tuned recall, when that is lower), the index is not used and one is built for the analysed rows.
    ``progress(done, total)``: rows graphed so far (:func:`~featscope.cache.index.knn_graph`)."""
    if prebuilt is not None:
        _check_prebuilt(prebuilt, x, name)
        if prebuilt.rows is None:
            graph = knn_graph(prebuilt.index, prebuilt.vectors, k, chunk=chunk, rerank=prebuilt.rerank,
                              progress=progress)
            return graph, _info(prebuilt.kind, prebuilt.recall, prebuilt.nprobe, prebuilt.rerank, "stored")
        recall = measure_recall(prebuilt.index, prebuilt.vectors, rows=prebuilt.rows, rerank=prebuilt.rerank)
        if recall >= min(RECALL_TARGET, prebuilt.recall):
            graph = knn_graph(prebuilt.index, prebuilt.vectors, k, chunk=chunk, rerank=prebuilt.rerank,
                              rows=prebuilt.rows, progress=progress)
            return graph, {**_info(prebuilt.kind, recall, prebuilt.nprobe, prebuilt.rerank,
                                   "stored, searched among the analysed rows"), "index_rows": int(prebuilt.index.ntotal)}
        log.info("%s: the prebuilt index restricted to the %d analysed rows of its %d reaches recall@10 %.3f only; "
                 "building and tuning an index of those rows", name, len(prebuilt.rows), prebuilt.index.ntotal, recall)
    index = build_index(x, flat_max=0)
    tuning = tune_nprobe(index, x, target=RECALL_TARGET)
    graph = knn_graph(index, x, k, chunk=chunk, rerank=tuning.rerank, progress=progress)
    return graph, _info(index_kind(index), tuning.recall, tuning.nprobe, tuning.rerank, "built")


def approximate_search(x: np.ndarray, db_rows: np.ndarray, query_rows: np.ndarray, k: int, *,
                       prebuilt: PrebuiltIndex | None = None, chunk: int = 4096,
                       name: str = "x") -> tuple[np.ndarray, np.ndarray, dict]:
    """The ``k`` most cosine-similar of rows ``db_rows`` of ``x`` to each of its rows ``query_rows`` (rows outside
    ``db_rows``: the k-NN probe's test rows against its train+val rows): places in ``db_rows`` (-1: a slot the
    IVF search could not fill), their cosines, and how they were found (module docstring).

    With ``prebuilt``, its index is searched among the ``db_rows`` only, once the recall of that restricted
    search is measured (as :func:`approximate_knn` does for part of the indexed rows); otherwise, or if that
    recall falls short, an IVF index of the ``db_rows`` is built and tuned here."""
    db_rows, query_rows = np.asarray(db_rows, dtype=np.int64), np.asarray(query_rows, dtype=np.int64)
    if prebuilt is not None:
        _check_prebuilt(prebuilt, x, name)
        to_index = np.asarray(prebuilt.rows, dtype=np.int64) if prebuilt.rows is not None else None
        members = db_rows if to_index is None else to_index[db_rows]
        recall = measure_recall(prebuilt.index, prebuilt.vectors, rows=members, rerank=prebuilt.rerank)
        if recall >= min(RECALL_TARGET, prebuilt.recall):
            place = np.full(prebuilt.index.ntotal, -1, dtype=np.int64)  # index position -> place in db_rows
            place[members] = np.arange(len(members))
            found, sims = _search_rows(prebuilt.index, x, query_rows, k, prebuilt.vectors, prebuilt.rerank,
                                       restrict_to(prebuilt.index, members), chunk)
            found = np.where(found >= 0, place[np.maximum(found, 0)], -1)
            return found, sims, {**_info(prebuilt.kind, recall, prebuilt.nprobe, prebuilt.rerank,
                                         "stored, searched among part of its rows"),
                                 "index_rows": int(prebuilt.index.ntotal)}
        log.info("%s: the prebuilt index restricted to %d of its %d rows reaches recall@10 %.3f only; building and "
                 "tuning an index of those rows", name, len(members), prebuilt.index.ntotal, recall)
    db = _Rows(x, db_rows)
    index = build_index(db, flat_max=0)
    tuning = tune_nprobe(index, db, target=RECALL_TARGET)
    found, sims = _search_rows(index, x, query_rows, k, db, tuning.rerank, None, chunk)
    return found, sims, _info(index_kind(index), tuning.recall, tuning.nprobe, tuning.rerank, "built")


def _search_rows(index: faiss.Index, x: np.ndarray, query_rows: np.ndarray, k: int, vectors, rerank: int,
                 params, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`featscope.cache.index.search` of rows ``query_rows`` of ``x``, ``chunk`` at a time."""
    found, sims = [], []
    for s in range(0, len(query_rows), chunk):
        sc, pos = search(index, np.asarray(x[query_rows[s:s + chunk]], dtype=np.float32), k, vectors=vectors,
                         rerank=rerank, params=params)
        sims.append(sc)
        found.append(pos)
    if not found:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(found), np.concatenate(sims)


class _Rows:
    """Rows ``rows`` of ``x`` as an array-like (len, shape, slicing, fancy indexing) without copying them:
    what FAISS index building reads in chunks."""

    def __init__(self, x: np.ndarray, rows: np.ndarray) -> None:
        self.x, self.idx = x, np.asarray(rows, dtype=np.int64)
        self.shape, self.dtype = (len(self.idx), x.shape[1]), x.dtype

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key):
        return np.asarray(self.x[self.idx[key]])


def _info(kind: str, recall: float, nprobe: int, rerank: int, source: str) -> dict:
    return {"exact": False, "recall": float(recall), "nprobe": int(nprobe), "rerank": int(rerank), "index": kind,
            "index_source": source}


def _check_prebuilt(pre: PrebuiltIndex, x: np.ndarray, name: str) -> None:
    """Refuse a prebuilt index that is not an index over ``x``'s rows: a wrong one would give wrong neighbours
    without any error (a few rows are compared value for value)."""
    index = pre.index
    if pre.kind not in ("ivf", "ivfpq"):
        raise ValueError(f"the prebuilt index of {name} is {pre.kind}; pass an IVF or IVF-PQ index (a flat index "
                         f"holds every vector in memory, which a space this large must not), or none to build one")
    n, d = x.shape
    if index.d != d or len(pre.vectors) != index.ntotal or pre.vectors.shape[1] != d:
        raise ValueError(f"the prebuilt index of {name} holds {index.ntotal} vectors of {index.d} dimensions and its "
                         f"vectors are {tuple(pre.vectors.shape)}; {name} is {(n, d)}: pass the index built from them")
    if faiss.extract_index_ivf(index).nprobe != pre.nprobe:
        raise ValueError(f"the prebuilt index of {name} probes {faiss.extract_index_ivf(index).nprobe} lists but "
                         f"nprobe={pre.nprobe} was given: its recall was measured at another nprobe")
    if pre.rows is None and index.ntotal != n:
        raise ValueError(f"the prebuilt index of {name} holds {index.ntotal} rows, {name} has {n}; give rows= "
                         f"(the index row of each analysed row) when the analysis compares part of them")
    if pre.rows is not None:
        rows = np.asarray(pre.rows)
        if rows.shape != (n,) or not np.issubdtype(rows.dtype, np.integer) or \
                (n and (rows.min() < 0 or rows.max() >= index.ntotal)) or len(np.unique(rows)) != n:
            raise ValueError(f"rows of the prebuilt index of {name} must give one index row (0..{index.ntotal - 1}, "
                             f"no repeats) per row of {name} ({n} rows), got shape {rows.shape} dtype {rows.dtype}")
    sample = np.unique(np.linspace(0, n - 1, min(n, _SPOT_CHECKS)).astype(np.int64))
    where = sample if pre.rows is None else np.asarray(pre.rows, dtype=np.int64)[sample]
    ours = np.asarray(x[sample], dtype=np.float32)
    theirs = np.stack([np.asarray(pre.vectors[int(p)], dtype=np.float32) for p in where])
    if not np.array_equal(ours, theirs):
        raise ValueError(f"the prebuilt index's vectors are not the rows of {name} (rows {sample.tolist()} differ); "
                         f"pass the index built from these vectors, or none to build one")
