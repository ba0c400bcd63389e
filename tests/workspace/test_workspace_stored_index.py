"""Analyses of embedding sets too large for memory search each set's stored index instead of building and tuning
one: the same results as building it, nothing built, sets sharing part of their images handled (brute-force
references), and a missing or unusable index said and replaced by one built as before."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import featscope.analysis.knn as knn

N, DIM = 3000, 24


def _clustered(n_centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters of N vectors, and each vector's cluster."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_centres, DIM)) * 3
    cluster = rng.integers(0, n_centres, N)
    return (c[cluster] + rng.normal(size=(N, DIM))).astype(np.float32), cluster


@pytest.fixture
def spaces(ws, monkeypatch, one_faiss_thread):
    """A data set of 3000 images (catalog rows only) with two imported embedding sets whose stored indexes are IVF
    (flat only up to 100 vectors here), and the in-memory limit set below them: the analyses' IVF path."""
    from sqlalchemy import insert

    import featscope.analysis.arrays as arrays
    from featscope.catalog import Backbone, Dataset, Image

    ws.ctx.settings.flat_index_max = 100
    (xa, clusters), (xb, _) = _clustered(40, 5), _clustered(3, 6)
    labels = [f"c{c % 3}" for c in clusters]  # classes of A's clusters: a k-NN probe of A is near 100% right
    with ws.ctx.session() as s:
        ds = Dataset(name="many", root="/nowhere", source_path="/nowhere", format="synthetic", fingerprint="many-3000",
                     n_images=N, classes=["c0", "c1", "c2"], summary="catalog rows only")
        s.add(ds)
        s.flush()
        s.execute(insert(Image), [{"dataset_id": ds.id, "position": i, "relpath": f"c{i % 3}/{i:05d}.png",
                                   "label": labels[i], "boxes": []} for i in range(N)])
        for name in ("A", "B"):
            s.add(Backbone(name=name, spec=f"synthetic:{name}", source="synthetic", arch="synthetic",
                           fingerprint=name, taps=["conv5"]))
    a = ws.import_embeddings("A", "many", xa).id
    b = ws.import_embeddings("B", "many", xb).id
    assert {e.index_kind for e in ws.embedding_sets()} == {"ivf"}
    monkeypatch.setattr(arrays, "IN_MEMORY_MAX", 10_000)
    return ws, a, b, xa.astype(np.float16), xb.astype(np.float16)


def _analyses(ws, a: int, b: int, say) -> dict:
    return {"closest": ws.closest_pairs([a, b], force=True, on_message=say).data,
            "ranks": ws.contrast_pairs(a, b, k=5, n_pairs=30, force=True, on_message=say).data,
            "clusters": ws.contrast_pairs(a, b, definition="clusters", k=5, k_large=40, k_small=3, force=True,
                                          on_message=say).data,
            "agreement": ws.agreement(a, b, force=True, on_message=say).data,
            "similarity": ws.similarity(a, b, force=True, on_message=say).data}


def _knn_infos(results: dict) -> list[dict]:
    out = [s["knn"] for s in results["closest"]["spaces"]]
    out += [results["ranks"]["knn"], results["clusters"]["knn"]]  # ranks in B: exact (knn["b"], checked below)
    return out + [results["agreement"]["knn"]["a"], results["agreement"]["knn"]["b"]]


def _without_source(data):
    if isinstance(data, dict):
        return {k: _without_source(v) for k, v in data.items() if k != "index_source"}
    if isinstance(data, list):
        return [_without_source(v) for v in data]
    return data


def test_the_stored_index_gives_the_results_of_building_one_and_nothing_is_built(spaces, monkeypatch):
    from featscope.workspace import indexes

    ws, a, b, _, _ = spaces
    said: list[str] = []
    with monkeypatch.context() as m:  # today's path: every analysis builds and tunes its own index
        m.setattr(indexes, "analysis_index", lambda *args, **kw: (None, "no index (test)"))
        built = _analyses(ws, a, b, said.append)
    assert all(i["index_source"] == "built" for i in _knn_infos(built))
    assert said and all("no index (test); building and tuning an IVF index of its 3000 vectors" in s for s in said)

    def refuse(*args, **kwargs):
        raise AssertionError("the stored index was there to search: nothing may be built or tuned")

    monkeypatch.setattr(knn, "build_index", refuse)
    monkeypatch.setattr(knn, "tune_nprobe", refuse)
    said.clear()
    reused = _analyses(ws, a, b, said.append)
    assert not said
    # the stored index was built and tuned by the same code with the same parameters: the very same results
    assert _without_source(reused) == _without_source(built)
    metas = {s: ws.ctx.store.get("index", e.artifact_key).meta for s, e in zip((a, b), ws.embedding_sets())}
    assert reused["ranks"]["knn"]["b"]["exact"] is True and reused["ranks"]["knn"]["b"]["pairs_ranked"] >= 30
    for info, set_id in zip(_knn_infos(reused), (a, b, a, a, a, b)):
        assert info["index_source"] == "stored" and info["exact"] is False and info["index"] == "ivf"
        assert (info["recall"], info["nprobe"]) == (metas[set_id]["recall_at_10"], metas[set_id]["nprobe"])


def test_a_missing_corrupt_or_flat_index_is_said_and_one_is_built(spaces):
    ws, a, b, xa, _ = spaces
    key_a, key_b = (e.artifact_key for e in ws.embedding_sets())
    ws.ctx.store.delete("index", key_a)
    (ws.ctx.store.get("index", key_b, verify=False).file("index.faiss")).write_bytes(b"not an index")
    said: list[str] = []
    res = ws.agreement(a, b, force=True, on_message=said.append)
    assert res.data["knn"]["a"]["index_source"] == res.data["knn"]["b"]["index_source"] == "built"
    assert any(f"embedding set {a} has no stored index; building and tuning" in s for s in said)
    assert any(f"the stored index of embedding set {b} is corrupt" in s for s in said)
    assert res.data["knn"]["recall_a"] >= 0.95

    ws.ctx.settings.flat_index_max = 100_000  # a set whose stored index is flat
    flat = ws.import_embeddings("A", "many", xa[::-1].astype(np.float32), tap="flat").id
    said.clear()
    res = ws.closest_pairs([flat], force=True, on_message=said.append)
    assert res.data["spaces"][0]["knn"]["index_source"] == "built"
    assert any(f"the stored index of embedding set {flat} is flat" in s for s in said)


def test_an_index_short_of_its_recall_target_is_not_used(spaces, monkeypatch):
    from types import SimpleNamespace

    from featscope.workspace.indexes import analysis_index

    ws, a, _, _, _ = spaces
    row = next(e for e in ws.embedding_sets() if e.id == a)
    from featscope.catalog import EmbeddingSet

    with ws.ctx.session() as s:
        db_row = s.get(EmbeddingSet, a)
    vectors = ws.ctx.store.get("embeddings", row.artifact_key, mmap=True, verify=False).array("embeddings")
    pre, why = analysis_index(ws.ctx, db_row, vectors)
    assert pre is not None and why == ""  # as stored: usable
    real_get = ws.ctx.store.get

    def short(kind, key, **kw):
        art = real_get(kind, key, **kw)
        if kind != "index":
            return art
        return SimpleNamespace(meta={**art.meta, "recall_at_10": 0.9, "recall_below_target": True}, file=art.file)

    monkeypatch.setattr(ws.ctx.store, "get", short)
    pre, why = analysis_index(ws.ctx, db_row, vectors)
    assert pre is None and "reached recall@10 0.9, below the" in why


def _partial_set(ws, backbone: str, vectors: np.ndarray, positions: np.ndarray) -> int:
    """An embedding set holding only the images at ``positions`` (the others failed to decode for it)."""
    from featscope.cache.store import content_key
    from featscope.workspace.backbones import get_backbone_row
    from featscope.workspace.datasets import get_dataset
    from featscope.workspace.embeddings import _register
    from featscope.workspace.indexes import store_index

    key = content_key({"test": "partial set", "backbone": backbone, "n": len(positions)})
    failed = {f"c{p % 3}/{p:05d}.png": "unreadable" for p in sorted(set(range(N)) - set(positions.tolist()))}
    ws.ctx.store.put("embeddings", key, {"embeddings": vectors[positions], "positions": positions.astype(np.int64)},
                     {"n": len(positions), "dim": DIM, "failures": failed},
                     blobs={"relpaths.json": json.dumps([f"c{p % 3}/{p:05d}.png" for p in positions]).encode()})
    store_index(ws.ctx, key)
    return _register(ws.ctx, get_backbone_row(ws.ctx, backbone), get_dataset(ws.ctx, "many"), ("conv5", "avg"), key,
                     "imported", "float16", cached=False).id


def _cos(x: np.ndarray) -> np.ndarray:
    u = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return u @ u.T


def test_sets_sharing_part_of_their_images_search_the_stored_index_among_the_shared_rows(spaces, no_building):
    ws, a, _, xa, xb = spaces
    kept = np.sort(np.random.default_rng(2).choice(N, N - 250, replace=False))
    b = _partial_set(ws, "B", xb, kept)  # B lacks 250 images: A is analysed on 2750 of its 3000 rows
    said: list[str] = []
    ag = ws.agreement(a, b, force=True, on_message=said.append)
    info = ag.data["knn"]
    assert info["a"]["index_source"] == "stored, searched among the analysed rows" and info["a"]["index_rows"] == N
    assert info["b"]["index_source"] == "stored" and info["a"]["recall"] >= 0.95
    np.testing.assert_array_equal(ag.arrays["positions"], kept)
    sa, sb = _cos(xa[kept]), _cos(xb[kept])
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    na, nb = np.argsort(-sa, axis=1)[:, :10], np.argsort(-sb, axis=1)[:, :10]
    exact = np.array([len(set(p) & set(q)) / 10 for p, q in zip(na, nb)])
    assert abs(ag.data["mean"] - exact.mean()) < 0.03
    assert np.mean(np.abs(ag.arrays["per_image"] - exact) < 1e-9) >= 0.9  # most images: the exact overlap

    pairs = ws.closest_pairs([a, b], n_pairs=20, force=True).data["spaces"][0]
    assert pairs["knn"]["index_source"] == "stored, searched among the analysed rows"
    iu, ju = np.triu_indices(len(kept), 1)
    top = np.argsort(-sa[iu, ju], kind="stable")[:20]
    found = [(p["i"], p["j"]) for p in pairs["pairs"]]
    assert len(set(zip(iu[top].tolist(), ju[top].tolist())) & set(found)) >= 18  # rows of the shared images
    np.testing.assert_allclose([p["score"] for p in pairs["pairs"]], [sa[i, j] for i, j in found], atol=1e-6)


def test_the_knn_probe_searches_the_stored_index_among_the_train_and_val_rows(spaces, no_building):
    from featscope.analysis.probes import Splits, knn_accuracy

    ws, a, _, xa, _ = spaces
    res = ws.probe(a, c_grid=[1.0], max_iter=50, knn_k=7)
    info = res.data["knn_search"]
    assert info["index_source"] == "stored, searched among part of its rows" and info["recall"] >= 0.95
    assert info["index_rows"] == N and info["index"] == "ivf"
    import featscope.analysis.arrays as arrays

    arrays.IN_MEMORY_MAX = 1 << 30  # (restored by the fixture's monkeypatch) the exact in-memory probe: the reference
    labels = [im.label for im in ws.images("many")]
    splits = Splits(res.arrays["train"], res.arrays["val"], res.arrays["test"], True)
    want = knn_accuracy(xa.astype(np.float32), labels, splits, k=7)
    assert want.info["exact"] and abs(res.data["knn_accuracy"] - want.accuracy) <= 2 / want.n_test


def test_pair_analyses_of_large_sets_report_their_neighbour_search_progress(spaces, monkeypatch):
    """A million-row k-NN graph takes minutes: closest, contrast and agreement report the rows searched, as one
    rising fraction over every graph they search, and say it at each tenth of a graph that large (the limit is
    lowered to this set's 3000 rows here)."""
    from featscope.workspace import analyze

    ws, a, b, _, _ = spaces
    monkeypatch.setattr(analyze, "_SAY_ROWS", N)
    runs = {"closest": lambda **kw: ws.closest_pairs([a, b], **kw),
            "contrast": lambda **kw: ws.contrast_pairs(a, b, k=5, n_pairs=30, **kw),
            "clusters": lambda **kw: ws.contrast_pairs(a, b, definition="clusters", k=5, k_large=40, k_small=3, **kw),
            "agreement": lambda **kw: ws.agreement(a, b, **kw)}
    graphs = {"closest": 2, "contrast": 2, "clusters": 1, "agreement": 2}  # graphs of N rows each searches
    for name, call in runs.items():
        seen, said = [], []
        call(force=True, progress=lambda done, total: seen.append((done, total)), on_message=said.append)
        done = [d for d, _ in seen]
        assert {t for _, t in seen} == {graphs[name] * N}, name
        assert done == sorted(set(done)) and done[-1] == graphs[name] * N, name  # rising, ends complete
        assert graphs[name] == 1 or N in done, name  # the first graph completes before the second starts
        counts = [re.search(r": ([\d,]+) of ([\d,]+) rows searched$", m) for m in said if "rows searched" in m]
        counts = [(int(c[1].replace(",", "")), int(c[2].replace(",", ""))) for c in counts]
        # one line at each tenth reached (this set's 3000 rows are one chunk of queries: the last tenth only)
        assert counts and counts[-1][0] == counts[-1][1] and all(d <= t for d, t in counts), (name, said)
        assert sum(d == t for d, t in counts) == (2 if name == "closest" else 1), (name, said)  # closest: a graph a set
