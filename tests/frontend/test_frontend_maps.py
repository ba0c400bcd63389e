"""Image and upload pages (Figs. 4, 5): heatmap and mask-out jobs for A and B, their figures and difference,
and an image's nearest neighbours in A and B."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from featscope.frontend.components import maps
from featscope.frontend.pages import image as image_page, upload as upload_page
from featscope.worker import jobs

from .conftest import find, run_queued, text_of


@pytest.fixture(scope="module")
def image_id(world):
    return world.ws.images("shapes", limit=5)[4].id


def test_image_hero_shows_the_file_and_the_page_scopes_the_picker_to_its_dataset(world, image_id):
    from featscope.frontend.components import pickers
    from featscope.frontend.wiring import page_layout

    hero = image_page.hero(world.svc, image_id)
    info = world.ws.images("shapes", limit=5)[4]
    assert info.relpath in text_of(hero) and info.label in text_of(hero)
    assert "no image 999999" in text_of(image_page.hero(world.svc, 999999))

    def by_id(tree, ident):
        return [c for c in find(tree, lambda c: getattr(c, "id", None) == ident)]

    # the scope is the image's data set from the first render, and a linked pair of it is chosen there
    page = page_layout(image_page.layout, world.svc)(image_id=str(image_id), a=str(world.a), b=str(world.b))
    assert by_id(page, {"type": "fs-ab-scope", "page": "img"})[0].data == "shapes"
    assert by_id(page, pickers.ab_id("img", "a"))[0].value == world.a
    assert not by_id(page, {"type": "fs-ab-init", "page": "img"})
    # a pair outside the scope is not chosen: the start-up callback picks one inside it
    bar = page_layout(lambda: pickers.comparison_bar("img", world.a, world.b, scope="other-set"), world.svc)()
    assert by_id(bar, {"type": "fs-ab-init", "page": "img"}) and by_id(bar, pickers.ab_id("img", "a"))[0].options == []
    _, _, va, vb, _ = pickers.init_pair(world.svc, True, "other-set", {"a": world.a, "b": world.b}, None)
    assert (va, vb) == (None, None)
    # ids beyond the catalog's integer range, or an unknown image, give the plain page, not an error
    page = page_layout(image_page.layout, world.svc)(image_id="9" * 25, a="9" * 25, b=str(world.b))
    assert by_id(page, {"type": "fs-ab-init", "page": "img"})


def test_heatmaps_are_jobs_then_figures_with_their_difference(world, image_id):
    out = image_page.heatmaps(world.svc, world.a, world.b, "mean", "conv5", "probe", None, None, None, image_id, {})
    fig_a, fig_b, fig_d, st_a, st_b, st_d, title_a, title_b, progress, tracked, poll_off = out
    assert poll_off is False and len(tracked) == 2 and "heatmap A (r18a)" in text_of(progress)
    queued = [jobs.get_job(world.ws.ctx, j) for j in tracked.values()]
    assert sorted(j.params["backbone"] for j in queued) == ["r18a", "r18b"]
    assert all(j.params["image_id"] == image_id and j.kind == "heatmap" for j in queued)
    run_queued(world.svc)
    out = image_page.heatmaps(world.svc, world.a, world.b, "mean", "conv5", "probe", None, None, None, image_id, tracked)
    fig_a, fig_b, fig_d, st_a, st_b, st_d, title_a, title_b, progress, tracked, poll_off = out
    assert poll_off and progress == [] and "r18a" in title_a and "r18b" in title_b
    heat_a = world.ws.heatmap("r18a", image_id).heat
    heat_b = world.ws.heatmap("r18b", image_id).heat
    z_a, step = maps.coarse(heat_a)
    got = np.array(fig_a["data"][0]["z"], dtype=float)
    np.testing.assert_allclose(got, np.round(z_a, 4), atol=1e-4, equal_nan=True)
    z_d, _ = maps.coarse(heat_a - heat_b)
    np.testing.assert_allclose(np.array(fig_d["data"][0]["z"], dtype=float), np.round(z_d, 4), atol=1e-4,
                               equal_nan=True)
    assert fig_d["data"][0]["zmid"] == 0 and fig_a["layout"]["images"][0]["source"].startswith("data:image/jpeg")
    assert st_a["rows"] and set(st_a["rows"][0]) == {"x", "y", "activation"}


def test_gradcam_without_a_target_explains_the_top_class(world, image_id):
    out = image_page.heatmaps(world.svc, world.a, world.b, "gradcam", "conv5", "probe", None, None, None, image_id, {})
    tracked = out[9]
    params = [jobs.get_job(world.ws.ctx, j).params for j in tracked.values()]
    assert len(params) == 2 and all(p["method"] == "gradcam" and "target" not in p for p in params)
    assert all(p["probe_dataset"] == "shapes" for p in params)
    run_queued(world.svc)
    out = image_page.heatmaps(world.svc, world.a, world.b, "gradcam", "conv5", "probe", None, None, None, image_id,
                              tracked)
    assert out[0]["data"][0]["type"] == "heatmap" and any(c in out[6] for c in ("red", "green", "blue"))


def test_a_request_the_api_would_refuse_is_explained_not_queued(world, image_id):
    before = len(jobs.list_jobs(world.ws.ctx, limit=1000))
    out = image_page.heatmaps(world.svc, world.a, world.b, "mean", "conv9", "probe", None, None, None, image_id, {})
    assert "conv9" in text_of(out[8]) and out[9] == {}
    assert len(jobs.list_jobs(world.ws.ctx, limit=1000)) == before


def test_maskout_is_queued_only_by_the_button_and_shown_when_done(world, image_id):
    path = image_page._image(world.svc, image_id)[1]
    args = (world.svc, "img", {"image_id": image_id}, path, world.a, world.b, 16, 8, "zero", "exact", "probe", "red")
    before = len(jobs.list_jobs(world.ws.ctx, limit=1000))
    idle = maps.maskout_view(*args, {}, submit=False)
    assert len(jobs.list_jobs(world.ws.ctx, limit=1000)) == before and idle[-1] is True
    queued = maps.maskout_view(*args, {}, submit=True)
    tracked = queued[-2]
    assert len(tracked) == 2 and queued[-1] is False
    params = [jobs.get_job(world.ws.ctx, j).params for j in tracked.values()]
    assert all(p["probe_dataset"] == "shapes" and p["size"] == 16 and p["target"] == "red" for p in params)
    run_queued(world.svc)
    shown = maps.maskout_view(*args, {}, submit=False)  # a fresh page: the finished maps at once
    fig_a, fig_b, fig_d = shown[:3]
    assert fig_a["data"][0]["type"] == "heatmap" and "p =" in shown[6] and "red" in shown[6]
    assert re.search(r" · \d+\.\d s in fp32", shown[6]), shown[6]  # the exact mode's time and precision
    fast = (*args[:9], "fast", *args[10:])
    assert len(maps.maskout_view(*fast, {}, submit=True)[-2]) == 2
    run_queued(world.svc)
    shown = maps.maskout_view(*fast, {}, submit=False)
    assert re.search(r" · \d+\.\d s in mixed", shown[6]), shown[6]


def test_neighbours_in_a_and_b_are_the_index_answers(world, image_id):
    nn_a, nn_b = image_page.neighbours(world.svc, world.a, world.b, image_id)
    for set_id, view in ((world.a, nn_a), (world.b, nn_b)):
        _, hits = world.ws.neighbours(set_id, image_id, image_page.K_NEIGHBOURS)
        hrefs = [c.href for c in find(view, lambda c: getattr(c, "href", None))]
        assert hrefs == [f"/image/{h.image_id}" for h in hits]


def _stored_upload(world) -> dict:
    from featscope.server.uploads import save_upload

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, "PNG")
    buf.seek(0)
    st = save_upload(buf, world.settings.uploads_dir, max_bytes=10**6, max_pixels=10**6)
    return {"id": st.id, "format": st.format, "width": st.width, "height": st.height, "size_bytes": st.size_bytes,
            "filename": "mine.png"}


def test_upload_info_and_a_refused_file(world):
    up = _stored_upload(world)
    assert "50 × 40" in text_of(upload_page.info(world.svc, up)) and "PNG" in text_of(upload_page.info(world.svc, up))
    refused = upload_page.info(world.svc, {"error": "the file is not an image Pillow can read", "filename": "x.txt"})
    assert "x.txt was refused: the file is not an image" in text_of(refused)
    gone = upload_page.info(world.svc, {**up, "id": "0" * 32})
    assert "upload the image again" in text_of(gone)
    assert "No image yet" in text_of(upload_page.info(world.svc, None))


def test_upload_heatmaps_for_a_and_b(world):
    up = _stored_upload(world)
    out = upload_page.heatmaps(world.svc, world.a, world.b, "mean", "conv5", "probe", None, None, None, up, {})
    tracked = out[9]
    assert len(tracked) == 2
    assert {jobs.get_job(world.ws.ctx, j).params["upload_id"] for j in tracked.values()} == {up["id"]}
    run_queued(world.svc)
    out = upload_page.heatmaps(world.svc, world.a, world.b, "mean", "conv5", "probe", None, None, None, up, tracked)
    assert out[0]["data"][0]["type"] == "heatmap" and out[1]["data"][0]["type"] == "heatmap"
    assert out[2]["data"][0]["zmid"] == 0 and out[-1] is True


def test_nothing_uploaded_says_so(world):
    out = upload_page.heatmaps(world.svc, world.a, world.b, "mean", "conv5", "probe", None, None, None, None, {})
    assert out[0]["layout"]["annotations"][0]["text"] == "Upload an image above"
