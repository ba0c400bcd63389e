"""Analyses on cached embedding sets: same numbers as the pure functions, cached by inputs + params."""

from __future__ import annotations

import os

import numpy as np
import pytest

from featscope.analysis import comembership as cm, pairs, probes, similarity
from featscope.extractors.types import Preprocess
from featscope.workspace import NotFound

SMALL = Preprocess(resize=40, crop=32)


@pytest.fixture(scope="module")
def one_faiss_thread_module():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # OpenMP spin-waits make FAISS erratic on a busy 2-core machine
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def two_spaces(tmp_path_factory, make_images, one_faiss_thread_module):
    """Two random ResNet-18s over one 4-class folder of 40 images, conv5/avg and conv4/avg each (built once)."""
    from featscope.config import Settings
    from featscope.workspace import Workspace
    root = tmp_path_factory.mktemp("analyses")
    ws = Workspace(Settings(data_dir=root / "data", num_workers=0, batch_size=8, shard_size=64))
    make_images(root / "imgs", {"a": 10, "b": 10, "c": 10, "d": 10}, size=36)
    ws.add_dataset(root / "imgs", name="shapes")
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=0, name="cls", preprocess=SMALL)
    ws.add_backbone("torchvision:resnet18", random_init=True, seed=1, name="det", preprocess=SMALL)
    a5, a4 = ws.extract("cls", "shapes", taps=["conv5", "conv4"])
    b5, b4 = ws.extract("det", "shapes", taps=["conv5", "conv4"])
    return ws, {"a5": a5.id, "a4": a4.id, "b5": b5.id, "b4": b4.id}


@pytest.fixture
def one_faiss_thread(one_faiss_thread_module):
    yield


def _vectors(ws, set_id):
    return ws.load_embeddings(set_id).vectors


def test_comembership_equals_the_pure_function_and_is_cached(two_spaces, monkeypatch):
    ws, s = two_spaces
    res = ws.comembership(s["a5"], s["b5"], ks=[2, 4, 8], seeds=[0, 1])
    direct = cm.comembership_curve(_vectors(ws, s["a5"]), _vectors(ws, s["b5"]), ks=[2, 4, 8], seeds=[0, 1])
    assert not res.cached and res.data["ks"] == [2, 4, 8]
    np.testing.assert_allclose(res.data["mean"]["a_to_b"], direct.mean["a_to_b"])
    np.testing.assert_allclose(res.arrays["per_seed_ari"], direct.per_seed["ari"])
    assert [r["k"] for r in res.rows] == [2, 4, 8] and "nmi_std" in res.rows[0]

    import featscope.analysis.comembership as mod

    monkeypatch.setattr(mod, "comembership_curve", lambda *a, **k: pytest.fail("cache hit expected"))
    again = ws.comembership(s["a5"], s["b5"], ks=[2, 4, 8], seeds=[0, 1])
    assert again.cached and again.id == res.id and again.data == res.data
    assert [a["id"] for a in ws.analyses("comembership") if a["params"]["ks"] == [2, 4, 8]] == [res.id]
    shuffled = ws.comembership(s["a5"], s["b5"], ks=[8, 4, 2, 2], seeds=[0, 1])  # same K set, same result
    assert shuffled.cached and shuffled.id == res.id
    with pytest.raises(ValueError, match="k=999 exceeds N=40"):
        ws.comembership(s["a5"], s["b5"], ks=[2, 999], seeds=[0])


def test_default_grid_is_clipped_to_the_number_of_images(two_spaces):
    ws, s = two_spaces
    res = ws.comembership(s["a5"], s["b5"], seeds=[0])
    assert max(res.params["ks"]) <= 40 and min(res.params["ks"]) == 2
    assert res.params["ks"] == sorted(set(res.params["ks"]))


def test_changed_parameters_or_inputs_are_new_results(two_spaces):
    ws, s = two_spaces
    r1 = ws.agreement(s["a5"], s["b5"], k=5)
    r2 = ws.agreement(s["a5"], s["b5"], k=6)
    r3 = ws.agreement(s["a4"], s["b5"], k=5)
    assert len({r1.artifact_key, r2.artifact_key, r3.artifact_key}) == 3
    assert ws.agreement(s["a5"], s["b5"], k=5).artifact_key == r1.artifact_key


def test_pairs_and_agreement_map_rows_to_catalog_images(two_spaces):
    ws, s = two_spaces
    ea, eb = ws.load_embeddings(s["a5"]), ws.load_embeddings(s["b5"])
    close = ws.closest_pairs([s["a5"], s["b5"]], n_pairs=5, k=10)
    ref = pairs.closest_pairs(ea.vectors, 5, k=10)
    first = close.data["spaces"][0]["pairs"]
    assert [(p["i"], p["j"]) for p in first] == list(zip(ref.i.tolist(), ref.j.tolist()))
    row = close.rows[0]
    assert row["image_a"] == int(ea.image_ids[ref.i[0]]) and row["relpath_b"] == ea.relpaths[ref.j[0]]

    ranks = ws.contrast_pairs(s["a5"], s["b5"], n_pairs=5, k=10)
    ref_r = pairs.close_in_a_distant_in_b_ranks(ea.vectors, eb.vectors, 5, k=10)
    assert [p["rank_b"] for p in ranks.data["pairs"]] == ref_r.extra["rank_b"].tolist()

    clusters = ws.contrast_pairs(s["a5"], s["b5"], definition="clusters", k_large=10, k_small=2, n_pairs=5)
    assert clusters.params["k_large"] == 10
    for p in clusters.data["pairs"]:
        assert p["cluster_b_i"] != p["cluster_b_j"]

    ag = ws.agreement(s["a5"], s["b5"], k=5, n_worst=3)
    ref_ag = pairs.neighbourhood_agreement(ea.vectors, eb.vectors, 5, n_worst=3)
    assert ag.data["mean"] == pytest.approx(ref_ag.mean)
    assert [w["row"] for w in ag.data["worst"]] == ref_ag.worst.tolist()
    assert ag.rows[0]["overlap"] == pytest.approx(ref_ag.per_image.min())
    assert len(ag.rows) == 40


def test_probe_matches_the_pure_probe_and_keeps_its_arrays(two_spaces):
    ws, s = two_spaces
    res = ws.probe(s["a5"], c_grid=[0.01, 1.0], knn_k=5)
    emb = ws.load_embeddings(s["a5"])
    splits = probes.make_splits(emb.labels, seed=0)
    ref = probes.linear_probe(emb.vectors, emb.labels, splits, c_grid=[0.01, 1.0])
    assert res.data["accuracy"] == pytest.approx(ref.accuracy)
    assert res.data["ci_low"] <= res.data["accuracy"] <= res.data["ci_high"]
    np.testing.assert_allclose(res.arrays["coef"], ref.coef)
    assert res.data["knn_accuracy"] == pytest.approx(probes.knn_accuracy(emb.vectors, emb.labels, splits, k=5).accuracy)

    kept = ws.load_probe("cls", "shapes", train=False)  # the probe just trained, not a new one
    assert kept.embedding_set == s["a5"] and kept.classes == ["a", "b", "c", "d"]
    np.testing.assert_allclose(kept.coef, ref.coef)
    ws.ctx.store.delete("analysis", res.artifact_key)  # its stored result is gone: train=False must not retrain
    with pytest.raises(NotFound, match="no longer in the artifact store"):
        ws.load_probe("cls", "shapes", train=False)


def test_probe_table_covers_backbones_taps_and_poolings(two_spaces):
    ws, s = two_spaces
    table = ws.probe_table(["cls", "det"], "shapes", c_grid=[1.0], knn_k=5)
    assert {(r["backbone"], r["tap"]) for r in table} == {(b, t) for b in ("cls", "det") for t in ("layer3", "layer4")}
    only5 = ws.probe_table(["det"], "shapes", taps=["conv5"], c_grid=[1.0], knn_k=5)
    assert len(only5) == 1 and only5[0]["cached"] and only5[0]["embedding_set"] == s["b5"]
    with pytest.raises(NotFound, match="featscope extract"):
        ws.probe_table(["cls"], "shapes", poolings=["grid4"])


def test_probe_needs_labels(ws, tmp_path, make_images, one_faiss_thread):
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i in range(8):
        Image.new("RGB", (36, 36), (i * 30, 0, 0)).save(tmp_path / "flat" / f"{i}.png")
    ws.add_dataset(tmp_path / "flat", name="flat", format="folder")
    ws.add_backbone("torchvision:resnet18", random_init=True, name="r", preprocess=SMALL)
    [es] = ws.extract("r", "flat")
    with pytest.raises(ValueError, match="no class label"):
        ws.probe(es.id)
    with pytest.raises(ValueError, match="no class label"):
        # load_probe trains one on demand: same error
        ws.load_probe("r", "flat")


def test_similarity_and_cka_matrix(two_spaces):
    ws, s = two_spaces
    xa, xb = _vectors(ws, s["a5"]), _vectors(ws, s["b5"])
    sim = ws.similarity(s["a5"], s["b5"], k=5)
    assert sim.data["cka"] == pytest.approx(similarity.linear_cka(xa, xb))
    assert sim.data["cka_debiased"] == pytest.approx(similarity.linear_cka(xa, xb, debiased=True))
    assert sim.data["mutual_knn"] == pytest.approx(similarity.mutual_knn_alignment(xa, xb, 5))
    m = ws.cka_matrix("cls", "det", "shapes")
    assert m.data["taps_a"] == ["layer3", "layer4"] and m.arrays["cka"].shape == (2, 2)
    assert m.arrays["cka"][1, 1] == pytest.approx(sim.data["cka"])
    assert len(m.rows) == 4


def test_projection_aligns_later_maps_to_the_first(two_spaces):
    ws, s = two_spaces
    res = ws.projection([s["a5"], s["b5"]], method="pca")
    c0, c1 = res.arrays["coords_0"], res.arrays["coords_1"]
    assert c0.shape == c1.shape == (40, 2)
    from featscope.analysis.projection import align_procrustes, project

    raw = project(_vectors(ws, s["b5"]), "pca")
    np.testing.assert_allclose(c1, align_procrustes(c0, raw.coords).aligned, rtol=1e-4, atol=1e-5)
    assert {r["embedding_set"] for r in res.rows} == {s["a5"], s["b5"]}


def test_bad_requests_say_what_to_do(two_spaces, tmp_path, make_images):
    ws_, s = two_spaces
    with pytest.raises(ValueError, match="two different embedding sets"):
        ws_.agreement(s["a5"], s["a5"])
    with pytest.raises(NotFound, match="embeddings list"):
        ws_.agreement(s["a5"], 999)
    with pytest.raises(ValueError, match="exceeds N=40"):
        ws_.comembership(s["a5"], s["b5"], ks=[2, 41])
    with pytest.raises(ValueError, match="'ranks' or 'clusters'"):
        ws_.contrast_pairs(s["a5"], s["b5"], definition="knn")
    make_images(tmp_path / "other", {"x": 4, "y": 4}, size=36)
    ws_.add_dataset(tmp_path / "other", name="other")
    [o] = ws_.extract("cls", "other")
    with pytest.raises(ValueError, match="same data set"):
        ws_.similarity(s["a5"], o.id)


def test_corrupted_result_is_recomputed(two_spaces):
    ws, s = two_spaces
    first = ws.probe(s["a5"], c_grid=[1.0], knn_k=5)
    target = ws.ctx.store.path("analysis", first.artifact_key) / "coef.npy"
    raw = bytearray(target.read_bytes())
    raw[-3] ^= 0xFF
    os.chmod(target, 0o644)
    target.write_bytes(bytes(raw))
    messages: list[str] = []
    again = ws.probe(s["a5"], c_grid=[1.0], knn_k=5, on_message=messages.append)
    assert not again.cached and any("corrupted" in m for m in messages)
    np.testing.assert_array_equal(again.arrays["coef"], first.arrays["coef"])
    assert ws.probe(s["a5"], c_grid=[1.0], knn_k=5).cached


def test_cached_only_answers_from_the_cache_or_says_not_cached(two_spaces):
    from featscope.workspace.analyses import NotCached

    ws, s = two_spaces
    with pytest.raises(NotCached):
        ws.similarity(s["a4"], s["b4"], k=3, cached_only=True)
    computed = ws.similarity(s["a4"], s["b4"], k=3)
    hit = ws.similarity(s["a4"], s["b4"], k=3, cached_only=True)
    assert hit.cached and hit.data == computed.data
