"""Page callbacks called as plain functions on a small world: what each page shows matches the analyses,
what it queues is the right job, and a page on nothing says what to do next."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import pytest

from featscope.frontend import data, raster, standard
from featscope.frontend.components import pickers
from featscope.frontend.pages import comembership, jobs as jobs_page, overview, pairs, probes, projections, similarity
from featscope.worker import jobs

from .conftest import find, make_services, run_queued, text_of

DTYPES = {"f4": np.float32, "f8": np.float64, "i4": np.int32, "i2": np.int16, "u1": np.uint8}


def decode(typed: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(typed["bdata"]), dtype=DTYPES[typed["dtype"]])


@pytest.fixture
def empty(tmp_path):
    """Services over a fresh data dir: nothing registered."""
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    settings = ServerSettings(data_dir=tmp_path / "fresh", num_workers=0)
    return make_services(Workspace(settings), settings)


# ---------------------------------------------------------------- overview
def test_overview_on_a_fresh_data_dir_says_what_to_do(empty):
    stats, datasets, backbones, sets, recent, plan_view, plan, poll_off = overview.tick(empty, None, 0, None)
    assert "No data sets yet" in text_of(datasets) and "featscope dataset synth" in text_of(datasets)
    assert "No backbones yet" in text_of(backbones) and "featscope backbone add" in text_of(backbones)
    assert "Run a Compare" in text_of(sets) and "No jobs yet" in text_of(recent)
    assert plan_view is None and poll_off is True
    bb_opts, ds_opts, taps, dataset = overview.form_options(empty, 0, None, None, None)
    assert bb_opts == [] and ds_opts == [] and dataset is None


def test_overview_lists_datasets_with_their_skipped_files(world, make_images, tmp_path):
    folder = make_images(tmp_path / "withbad", {"x": 3}, size=32)
    (folder / "x" / "broken.png").write_bytes(b"not an image at all")
    world.ws.add_dataset(folder, name="withbad")
    view = overview.datasets_view(world.svc)
    text = text_of(view)
    assert "withbad" in text and "1 skipped" in text and "broken.png" in text
    assert "shapes" in text and "24" in text


def test_compare_form_choices_and_validation(world):
    bb_opts, ds_opts, taps, dataset = overview.form_options(world.svc, 0, ["r18a", "r18b"], None, None)
    assert [o["value"] for o in bb_opts] == ["r18a", "r18b"]
    assert dataset == "shapes" and "conv5" in [t["value"] for t in taps] and "layer4" in [t["value"] for t in taps]
    plan, msg = overview.start_compare(world.svc, 1, ["r18a"], "shapes", "conv5", "avg")
    assert "at least two backbones" in text_of(msg)
    plan, msg = overview.start_compare(world.svc, 1, ["r18a", "nope"], "shapes", "conv5", "avg")
    assert "nope" in text_of(msg)


def test_compare_queues_extractions_then_exactly_the_pages_analyses(world):
    before = {j.id for j in jobs.list_jobs(world.ws.ctx, limit=1000)}
    plan, msg = overview.start_compare(world.svc, 1, ["r18a", "r18b"], "shapes", "conv5", "avg")
    assert "Queued 2 extraction" in text_of(msg) and set(plan["extract"]) == {"r18a", "r18b"}
    plan, rows, running = overview.advance_plan(world.svc, plan)
    assert running and not plan["sets"] and len(rows) == 2  # two extraction bars, no analysis yet
    run_queued(world.svc)  # the extractions are cache hits of the world's sets
    plan, rows, running = overview.advance_plan(world.svc, plan)
    assert plan["sets"] == {"r18a": world.a, "r18b": world.b}
    # the world cached the standard analyses the way the pages ask for them: nothing left to queue
    assert plan["done"] and not running and rows == []
    new = [j for j in jobs.list_jobs(world.ws.ctx, limit=1000) if j.id not in before]
    assert sorted(j.kind for j in new) == ["extract", "extract"]
    view = overview.plan_summary(plan)
    links = [c.href for c in find(view, lambda c: getattr(c, "href", None))]
    assert f"/pairs?a={world.a}&b={world.b}" in links and f"/projections?a={world.a}&b={world.b}" in links


def test_compare_plan_names_every_standard_analysis(world):
    plan = {"backbones": ["r18a", "r18b"], "dataset": "shapes", "tap": "conv5", "pooling": "avg",
            "sets": {"r18a": world.a, "r18b": world.b}}
    kinds = sorted(n.kind for n in overview.plan_needs(world.svc, plan))
    assert kinds == sorted(["closest", "contrast", "comembership", "projection", "agreement", "similarity",
                            "cka-matrix", "probe", "probe"])


def test_register_a_dataset_only_from_allowed_roots(world, make_images, tmp_path):
    outside = make_images(tmp_path / "outside", {"q": 2}, size=32)
    msg, refresh = overview.register_dataset(world.svc, 1, str(outside), None, "auto", 3)
    assert "FEATSCOPE_ALLOWED_ROOTS" in text_of(msg) and refresh is overview.no_update
    inside = make_images(world.root / "allowed" / "more", {"q": 2}, size=32)
    msg, refresh = overview.register_dataset(world.svc, 1, str(inside), "more", "auto", 3)
    assert "Scanning in job" in text_of(msg) and refresh == 4
    run_queued(world.svc)
    assert "more" in [d.name for d in world.ws.datasets()]


def test_generate_the_synthetic_set_is_a_job(empty):
    msg, refresh = overview.generate_synth(empty, 1, "tiny", 1, 2, 32, 0)
    assert "in job" in text_of(msg) and refresh == 1
    [job] = jobs.list_jobs(empty.ctx)
    assert job.kind == "dataset-synth" and job.params["n_per_class"] == 1
    run_queued(empty)
    assert sorted(d.name for d in empty.ws.datasets()) == ["tiny-objects", "tiny-scenes"]
    assert "tiny-objects" in text_of(overview.datasets_view(empty))
    msg, _ = overview.generate_synth(empty, 1, "bad name!", 1, 2, 32, 0)
    assert "name" in text_of(msg) and "pattern" in text_of(msg)


# ---------------------------------------------------------------- the A/B picker
def test_the_pair_defaults_to_two_backbones_of_one_dataset_and_swaps(world):
    a, b = pickers.choose_pair(world.svc, None, None, None)
    assert {a, b} == {world.a, world.b}
    assert pickers.choose_pair(world.svc, world.a, world.b, None, swap=True) == (world.b, world.a)
    assert pickers.choose_pair(world.svc, None, None, {"a": world.b, "b": world.a}) == (world.b, world.a)
    assert pickers.choose_pair(world.svc, world.a, None, None) == (world.a, world.b)
    assert pickers.choose_pair(world.svc, None, None, None, dataset="no-such-set") == (None, None)
    # a deep link's ?a=&b= wins over the remembered pair when the pickers start empty
    url = {"a": world.b, "b": world.a}
    assert pickers.choose_pair(world.svc, None, None, {"a": world.a, "b": world.b}, url=url) == (world.b, world.a)
    assert pickers.choose_pair(world.svc, None, None, None, url={"a": 999, "b": 998}) == (world.a, world.b)
    opts_a, opts_b, va, vb, note = pickers.sync_pair(world.svc, world.a, world.b, None, None, None, None)
    assert world.b in [o["value"] for o in opts_b] and world.a not in [o["value"] for o in opts_b]
    assert "r18a" in text_of(note) and "r18b" in text_of(note) and "layer4 (conv5)" in text_of(note)


# ---------------------------------------------------------------- pairs (Fig. 3)
def test_pairs_show_the_cached_pairs_with_their_images(world):
    out = pairs.show(world.svc, world.a, world.b, "ranks", 6, None, None, {})
    closest_a, contrast, closest_b, store_a, store_c, store_b, progress, tracked, poll_off = out
    assert poll_off and progress == []
    ref = world.ws.closest_pairs([world.a, world.b])
    ref_a = [r for r in ref.rows if r["embedding_set"] == world.a][:6]
    assert [(r["image_a"], r["image_b"]) for r in store_a["rows"]] == [(r["image_a"], r["image_b"]) for r in ref_a]
    hrefs = [c.href for c in find(closest_a, lambda c: getattr(c, "href", None))]
    assert hrefs[:2] == [f"/image/{ref_a[0]['image_a']}", f"/image/{ref_a[0]['image_b']}"]
    con = world.ws.contrast_pairs(world.a, world.b).rows[:6]
    assert [r["image_a"] for r in store_c["rows"]] == [r["image_a"] for r in con]
    assert all("rank_b_ij" in r for r in store_c["rows"]) and len(store_b["rows"]) == 6


def test_pairs_queue_the_cluster_definition_as_a_job(world):
    out = pairs.show(world.svc, world.a, world.b, "clusters", 6, None, None, {})
    assert out[1] is None and out[-1] is False  # the middle column waits for its job; the page polls
    assert "contrast pairs" in text_of(out[6])
    run_queued(world.svc)
    out = pairs.show(world.svc, world.a, world.b, "clusters", 6, None, None, out[7])
    assert "cluster" in text_of(out[1]) and out[-1] is True


def test_pairs_without_a_pair_say_what_to_do(empty):
    out = pairs.show(empty, None, None, "ranks", 12, None, None, None)
    assert "Pick two embedding sets" in text_of(out[0]) and out[-1] is True


# ---------------------------------------------------------------- co-membership (Fig. 6)
def test_comembership_params_from_the_controls():
    assert comembership.parse_params(2, 1000, 20, "0, 1, 2") == {}
    assert comembership.parse_params(2, 50, 5, "3 4") == {"k_min": 2, "k_max": 50, "n_k": 5, "seeds": [3, 4]}
    for bad in [(2, 10, 5, "a"), (2, 10, 5, ""), (5, 3, 5, "0"), (2, 10, 0, "0")]:
        with pytest.raises(ValueError):
            comembership.parse_params(*bad)


def test_comembership_curves_are_the_analysis_means(world):
    fig, agree, data_cm, data_ag, stats, msg, progress, tracked, poll_off = comembership.show(
        world.svc, world.a, world.b, None, None, None, 2, 1000, 20, "0, 1, 2", {})
    ref = world.ws.comembership(world.a, world.b).data
    lines = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in lines] == ["P(same in B | same in A)", "P(same in A | same in B)"]
    assert lines[0]["y"] == ref["mean"]["a_to_b"] and lines[0]["x"] == ref["ks"]
    assert fig["layout"]["xaxis"]["type"] == "log" and poll_off and msg == ""
    assert [r["k"] for r in data_cm["rows"]] == ref["ks"] and "ari_mean" in data_cm["rows"][0]
    out = comembership.show(world.svc, world.a, world.b, None, None, None, 2, 1000, 20, "x", {})
    assert "seeds" in out[5]


# ---------------------------------------------------------------- projections (Fig. 7)
def _ids_of(world, positions) -> np.ndarray:
    ds_id = data.dataset_id_of(world.ws.ctx, world.a)
    return np.array([data.image_refs(world.ws.ctx, ds_id, [int(p)]).ids[0] for p in positions])


def test_projection_maps_are_webgl_with_every_point(world):
    out = projections.show(world.svc, world.a, world.b, "tsne", "class", None, None, {})
    fig_a, fig_b, status, legend, mode, meta = out[:6]
    proj = world.ws.projection([world.a, world.b], **standard.projection_params(24))
    assert mode == "webgl" and "WebGL" in status and meta["analysis"] == proj.id
    assert fig_a["layout"]["dragmode"] == "lasso" and all(t["type"] == "scattergl" for t in fig_a["data"])
    # one trace per class; trace k of A and trace k of B hold the same images in the same order
    assert [t["name"] for t in fig_a["data"]] == [t["name"] for t in fig_b["data"]] == ["blue", "green", "red"]
    ids = _ids_of(world, proj.arrays["positions"])
    labels = [r["label"] for r in proj.rows[:len(ids)]]
    seen = []
    for ta, tb in zip(fig_a["data"], fig_b["data"]):
        got = decode(ta["customdata"])
        assert (got == decode(tb["customdata"])).all()
        rows = np.array([int(np.flatnonzero(ids == i)[0]) for i in got])
        np.testing.assert_allclose(decode(ta["x"]), proj.arrays["coords_0"][rows, 0], rtol=1e-6)
        np.testing.assert_allclose(decode(tb["y"]), proj.arrays["coords_1"][rows, 1], rtol=1e-6)
        assert {labels[r] for r in rows} == {ta["name"]}
        seen += rows.tolist()
    assert sorted(seen) == list(range(24))  # every image exactly once
    assert text_of(legend).split() == ["blue", "green", "red"]


def _in_layout(layout, svc, **query):
    """A page layout as the app renders it (with the app's services while it runs)."""
    from featscope.frontend.wiring import page_layout

    return page_layout(layout, svc)(**query)


def _by_id(tree, ident):
    found = find(tree, lambda c: getattr(c, "id", None) == ident)
    assert len(found) == 1, ident
    return found[0]


def test_a_linked_pair_with_a_cached_projection_arrives_with_the_page(world):
    """?a=&b= with the projection cached: the pair is chosen and both maps drawn in the first render, and the
    show callback's first run, seeing them on the page, sends them again only when something changed."""
    page = _in_layout(projections.layout, world.svc, a=str(world.a), b=str(world.b))
    fresh = projections.show(world.svc, world.a, world.b, "tsne", "class", None, None, {})
    fig_a, fig_b = _by_id(page, "proj-a").figure, _by_id(page, "proj-b").figure
    assert fig_a == fresh[0] and fig_b == fresh[1]  # every point, as the callback would send them
    assert sum(len(decode(t["x"])) for t in fig_a["data"]) == 24
    meta = _by_id(page, "proj-meta").data
    assert meta == fresh[5] and _by_id(page, "proj-mode").data == "webgl"
    assert "r18a" in text_of(_by_id(page, "proj-a-title").children) and "WebGL" in text_of(_by_id(page, "proj-status"))
    # the pickers: chosen, with their options and the line describing them; no start-up callback needed
    pick_a, pick_b = _by_id(page, pickers.ab_id("proj", "a")), _by_id(page, pickers.ab_id("proj", "b"))
    assert (pick_a.value, pick_b.value) == (world.a, world.b)
    assert world.b in [o["value"] for o in pick_b.options] and world.a not in [o["value"] for o in pick_b.options]
    assert "r18b" in text_of(_by_id(page, {"type": "fs-ab-note", "page": "proj"}))
    assert not find(page, lambda c: getattr(c, "id", None) == {"type": "fs-ab-init", "page": "proj"})
    # the callback's first run: nothing resent but the mode (the map link waits on it)
    from dash import no_update

    again = projections.show(world.svc, world.a, world.b, "tsne", "class", None, None, {}, meta)
    assert all(x is no_update for x in again[:4] + again[5:8]) and again[4] == "webgl" and again[-1] is True
    # another colouring is another picture: sent
    other = projections.show(world.svc, world.a, world.b, "tsne", "agreement", None, None, {}, meta)
    assert other[0] is not no_update and other[5]["colour"] == "agreement" and other[5] != meta


def test_a_page_without_a_usable_pair_starts_empty_and_picks_one_in_the_browser(world, monkeypatch):
    for query in ({}, {"a": "999", "b": str(world.b)}, {"a": str(world.a), "b": str(world.a)}):
        page = _in_layout(projections.layout, world.svc, **query)
        assert _by_id(page, "proj-a").figure["data"] == [] and _by_id(page, "proj-meta").data is None
        assert _by_id(page, {"type": "fs-ab-init", "page": "proj"}).data is True
        assert _by_id(page, pickers.ab_id("proj", "a")).options == []
    # the start-up callback: the remembered pair, else the newest comparable one
    opts_a, opts_b, va, vb, note = pickers.init_pair(world.svc, True, None, {"a": None, "b": None},
                                                     {"a": world.b, "b": world.a})
    assert (va, vb) == (world.b, world.a) and world.b in [o["value"] for o in opts_a] and "r18a" in text_of(note)
    # a linked pair whose projection is not computed yet: pair chosen, maps left to the callback (and its job)
    from featscope.workspace.analyses import NotCached

    def not_cached(*_a, **_k):
        raise NotCached("not yet")

    monkeypatch.setattr("featscope.frontend.services.cached_analysis", not_cached)
    page = _in_layout(projections.layout, world.svc, a=str(world.a), b=str(world.b))
    assert _by_id(page, "proj-a").figure["data"] == [] and _by_id(page, pickers.ab_id("proj", "a")).value == world.a
    # a first render that fails (here: drawing the maps) or ids beyond the catalog's range: the plain page
    monkeypatch.undo()

    def broken(*_a, **_k):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(projections, "maps_view", broken)
    page = _in_layout(projections.layout, world.svc, a=str(world.a), b=str(world.b))
    assert _by_id(page, "proj-a").figure["data"] == [] and _by_id(page, pickers.ab_id("proj", "a")).value == world.a
    page = _in_layout(projections.layout, world.svc, a="9" * 25, b=str(world.b))
    assert _by_id(page, {"type": "fs-ab-init", "page": "proj"}).data is True
    # outside the app (no services while the layout runs) the page is the plain, empty one
    plain = projections.layout(a=str(world.a), b=str(world.b))
    assert _by_id(plain, "proj-a").figure["data"] == [] and _by_id(plain, pickers.ab_id("proj", "a")).options == []


def test_projection_coloured_by_agreement(world):
    out = projections.show(world.svc, world.a, world.b, "tsne", "agreement", None, None, {})
    ag = world.ws.agreement(world.a, world.b)
    per = dict(zip(_ids_of(world, ag.arrays["positions"]).tolist(), ag.arrays["per_image"].tolist()))
    names = []
    for trace in out[0]["data"]:
        values = {round(per[int(i)], 2) for i in decode(trace["customdata"])}
        assert values == {float(trace["name"].split()[-1])}  # one agreement level per trace
        names.append(trace["name"])
    assert names == sorted(names)


def test_projection_not_computed_is_a_job(world):
    out = projections.show(world.svc, world.a, world.b, "pca", "class", None, None, {})
    assert out[4] is None and out[-1] is False and "pca projection" in text_of(out[8])
    run_queued(world.svc)
    out = projections.show(world.svc, world.a, world.b, "pca", "class", None, None, out[9])
    assert out[4] == "webgl" and "PCA" in out[2]


def test_large_projections_are_rasters_and_selections_apply_to_every_point(world, monkeypatch):
    monkeypatch.setattr(raster, "RASTER_ABOVE", 10)
    monkeypatch.setattr(raster, "SAMPLE", 8)
    out = projections.show(world.svc, world.a, world.b, "tsne", "class", None, None, {})
    fig_a, fig_b, status, _, mode, meta = out[:6]
    assert mode == "raster" and "datashader" in status
    assert fig_a["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    assert len(decode(fig_a["data"][0]["x"])) == 8  # the overlay is the sample
    proj = world.ws.projection([world.a, world.b], **standard.projection_params(24))
    ca = proj.arrays["coords_0"]
    x0, x1 = np.quantile(ca[:, 0], [0.0, 0.5])
    y0, y1 = ca[:, 1].min() - 1, ca[:, 1].max() + 1
    request = {"from": "A", "selected": {"range": {"x": [x1, x0], "y": [y0, y1]}}}
    patch_a, patch_b, selection = projections.raster_select(world.svc, request, meta)
    inside = np.flatnonzero((ca[:, 0] >= x0) & (ca[:, 0] <= x1))
    assert selection["count"] == len(inside) and selection["rows"] == inside.tolist()
    assert fig_b["layout"]["images"][1]["source"] == raster.NOTHING  # the selection's place, empty at first
    op = patch_b.to_plotly_json()["operations"][0]
    assert op["location"] == ["layout", "images", 1, "source"] and op["params"]["value"].startswith("data:image/png")
    grid = projections.selection_grid(world.svc, selection, meta)
    assert f"{len(inside)} images" in text_of(grid)
    assert len(find(grid, lambda c: getattr(c, "src", "").startswith("/api/v1/images/"))) == len(inside)


def test_the_empty_selection_image_is_a_transparent_pixel():
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(raster.NOTHING.split(",", 1)[1])))
    assert img.size == (1, 1) and img.convert("RGBA").getpixel((0, 0))[3] == 0


def test_webgl_selection_grid_shows_the_images_the_browser_sent(world):
    ids = [int(i.id) for i in world.ws.images("shapes", limit=3)]
    meta = {"analysis": 1, "a": world.a, "b": world.b}
    grid = projections.selection_grid(world.svc, {"indices": 3, "image_ids": ids, "from": "B"}, meta)
    assert "3 images selected in B, highlighted in A" in text_of(grid)
    assert [c.src for c in find(grid, lambda c: getattr(c, "src", None))] == \
        [f"/api/v1/images/{i}/thumbnail?size=128" for i in ids]
    assert "Nothing selected" in text_of(projections.selection_grid(world.svc, None, meta))


def test_projection_download_has_both_maps_for_every_image(world):
    meta = projections.show(world.svc, world.a, world.b, "tsne", "class", None, None, {})[5]
    text = projections.projection_table(world.svc, meta, "csv")
    lines = text.strip().splitlines()
    assert lines[0] == "image_id,relpath,label,a_x,a_y,b_x,b_y" and len(lines) == 25


def _crossing_number(x: float, y: float, poly: np.ndarray) -> bool:
    inside = False
    for i in range(len(poly)):
        (xi, yi), (xj, yj) = poly[i], poly[i - 1]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
    return inside


def test_points_in_polygon_matches_a_point_by_point_reference():
    rng = np.random.default_rng(3)
    points = rng.uniform(-2, 2, size=(3000, 2))
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radius = rng.uniform(0.5, 1.8, 40)
    poly = np.column_stack([radius * np.cos(angles), radius * np.sin(angles)])  # star-shaped, not convex
    got = raster.points_in_polygon(points, poly)
    ref = np.array([_crossing_number(x, y, poly) for x, y in points])
    assert (got == ref).all() and 0 < got.sum() < len(points)
    lasso = {"lassoPoints": {"x": poly[:, 0].tolist(), "y": poly[:, 1].tolist()}}
    assert (raster.selection_mask(points, lasso) == ref).all()
    assert raster.selection_mask(points, None) is None


# ---------------------------------------------------------------- probes (Tables 5, 6)
def test_probes_table_and_chart_are_the_probe_results(world):
    opts, dataset, backbones = probes.choices(world.svc, None)
    assert dataset == "shapes" and [b["value"] for b in backbones] == ["r18a", "r18b"]
    table, fig, store, progress, tracked, poll_off = probes.show(world.svc, "shapes", None, None, None, {})
    ref = {r["backbone"]: r for r in world.ws.probe_table(["r18a", "r18b"], "shapes")}
    assert [(r["backbone"], r["accuracy"]) for r in store["rows"]] == [(b, ref[b]["accuracy"]) for b in ("r18a", "r18b")]
    assert f"{100 * ref['r18a']['accuracy']:.1f}%" in text_of(table)
    bars = [t for t in fig["data"] if t["type"] == "bar"]
    assert [t["name"] for t in bars] == ["r18a · linear", "r18b · linear"] and poll_off


def test_probes_without_labelled_embeddings_say_what_to_do(empty):
    out = probes.show(empty, None, None, None, None, {})
    assert "No labelled embeddings" in text_of(out[0])


# ---------------------------------------------------------------- similarity
def test_similarity_numbers_matrix_histogram_and_worst_images(world):
    stats, cka, hist, cka_data, hist_data, worst, note, progress, tracked, poll_off = similarity.show(
        world.svc, world.a, world.b, None, None, {})
    sim = world.ws.similarity(world.a, world.b).data
    assert f"{sim['cka']:.3f}" in text_of(stats) and f"{sim['mutual_knn']:.3f}" in text_of(stats)
    assert cka["data"][0]["z"] == world.ws.cka_matrix("r18a", "r18b", "shapes").data["cka"]
    assert "Only one tap" in note
    ag = world.ws.agreement(world.a, world.b)
    assert sorted(r["overlap"] for r in hist_data["rows"]) == sorted(ag.arrays["per_image"].tolist())
    tiles = find(worst, lambda c: getattr(c, "href", "").startswith("/image/"))
    assert len(tiles) == len(ag.data["worst"])


# ---------------------------------------------------------------- jobs
def test_jobs_page_lists_jobs_and_cancels_a_queued_one(world):
    job = world.svc.submit("analysis", {"analysis": "similarity", "inputs": [world.a, world.b], "params": {"k": 4}})
    table, detail, cancel_disabled, poll_off = jobs_page.show(world.svc, "all", job.id, None)
    assert f"#{job.id}" in text_of(table) and f"Job {job.id}" in text_of(detail)
    assert cancel_disabled is False and poll_off is False
    msg = jobs_page.cancel(world.svc, 1, job.id)
    assert "cancelled" in text_of(msg) and jobs.get_job(world.ws.ctx, job.id).state == "cancelled"
    table, detail, cancel_disabled, _ = jobs_page.show(world.svc, "cancelled", job.id, None)
    assert f"#{job.id}" in text_of(table) and cancel_disabled is True
    run_queued(world.svc)  # the revoked message is skipped


def test_jobs_page_on_nothing(empty):
    table, detail, cancel_disabled, poll_off = jobs_page.show(empty, "all", None, None)
    assert "No jobs" in text_of(table) and poll_off is True


def test_need_names_are_unique_per_compare(world):
    needs = standard.compare_needs(world.a, world.b, 24, "r18a", "r18b", "shapes", "avg", labelled=True)
    assert len({n.name for n in needs}) == len(needs)
    assert all(dataclasses.is_dataclass(n) for n in needs)


# ---------------------------------------------------------------- mask-out controls (Fig. 5)
def test_maskout_modes_map_to_precisions_the_api_accepts():
    """The dashboard's three modes: exact fp32, fast = mixed precision, approximate = fp32 with margin 2;
    each request passes the REST schema the job goes through."""
    from featscope.frontend.components.maps import maskout_params
    from featscope.server.api.schemas import MaskoutIn

    got = {mode: maskout_params("det", {"image_id": 3}, 16, "4", "zero", mode, "own", "camel", "voc")
           for mode in ("exact", "fast", "approx", "unknown")}
    assert got["fast"]["precision"] == "mixed" and "approx_margin" not in got["fast"]
    assert got["exact"]["precision"] == "fp32" and "approx_margin" not in got["exact"]
    assert (got["approx"]["precision"], got["approx"]["approx_margin"]) == ("fp32", 2)
    assert got["unknown"] == got["exact"] and got["fast"]["stride"] == 4 and "probe_dataset" not in got["fast"]
    for params in got.values():
        assert MaskoutIn(**params).job_params()["precision"] == params["precision"]
