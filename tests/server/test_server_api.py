"""Every route through FastAPI's TestClient: the happy path, then the errors with their status and detail."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from .conftest import run_queued  # noqa: F401 - tests/server is imported as a package under importlib mode

API = "/api/v1"


def test_openapi_and_docs(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert f"{API}/embedding-sets/{{set_id}}/neighbours" in spec["paths"]


# ---------------------------------------------------------------- data sets
def test_datasets_list_get_and_paging(client, world):
    r = client.get(f"{API}/datasets")
    assert r.status_code == 200
    body = r.json()
    assert body["total"] >= 1 and body["limit"] == 50 and body["offset"] == 0
    assert "shapes" in [d["name"] for d in body["items"]]
    assert client.get(f"{API}/datasets/shapes").json()["n_images"] == 18
    assert client.get(f"{API}/datasets/{world.dataset.id}").json()["name"] == "shapes"
    assert client.get(f"{API}/datasets", params={"limit": 1, "offset": 100}).json()["items"] == []


def test_an_invalid_response_is_a_500_not_a_bad_request(client, monkeypatch):
    from featscope.server.api.routes import datasets
    from featscope.server.api.schemas import DatasetOut

    monkeypatch.setattr(datasets, "dataset_out", lambda info: DatasetOut(id="not a number"))
    r = client.get(f"{API}/datasets")
    assert r.status_code == 500 and "bug" in r.json()["detail"]


def test_dataset_errors(client):
    r = client.get(f"{API}/datasets/nope")
    assert r.status_code == 404 and "featscope dataset add" in r.json()["detail"]
    assert client.get(f"{API}/datasets", params={"limit": 0}).status_code == 422
    r = client.get(f"{API}/datasets", params={"limit": 100000})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    assert client.get(f"{API}/datasets/99999999999999999999").status_code == 422


def test_dataset_add_from_allowed_root(client, world, make_images):
    make_images(world.root / "allowed" / "more", {"x": 3, "y": 3}, size=32)
    r = client.post(f"{API}/datasets", json={"path": str(world.root / "allowed" / "more"), "name": "more"})
    assert r.status_code == 201, r.text
    assert r.json()["n_images"] == 6 and r.json()["classes"] == ["x", "y"]


def test_dataset_add_refuses_paths_outside_allowed_roots(client, world, make_images):
    outside = make_images(world.root / "outside", {"x": 2}, size=32)
    r = client.post(f"{API}/datasets", json={"path": str(outside)})
    assert r.status_code == 403 and "FEATSCOPE_ALLOWED_ROOTS" in r.json()["detail"]
    dotdot = world.root / "allowed" / ".." / "outside"
    r = client.post(f"{API}/datasets", json={"path": str(dotdot)})
    assert r.status_code == 400 and ".." in r.json()["detail"]
    link = world.root / "allowed" / "escape"
    link.symlink_to(outside, target_is_directory=True)
    r = client.post(f"{API}/datasets", json={"path": str(link)})
    assert r.status_code == 403
    r = client.post(f"{API}/datasets", json={"path": str(world.root / "allowed" / "missing")})
    assert r.status_code == 404
    r = client.post(f"{API}/datasets", json={"path": str(world.root / "allowed"), "bogus": 1})
    assert r.status_code == 422


def test_dataset_scan_is_a_job_with_progress_and_the_same_paths_rules(client, world, make_images):
    folder = make_images(world.root / "allowed" / "big", {"p": 4, "q": 3}, size=32)
    r = client.post(f"{API}/datasets/scan", json={"path": str(folder), "name": "big"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "dataset-add" and job["state"] == "queued"
    assert client.post(f"{API}/datasets/scan", json={"path": str(folder), "name": "big"}).json()["id"] == job["id"]
    assert client.get(f"{API}/datasets/big").status_code == 404  # nothing registered before a worker runs it
    assert run_queued(client) >= 1
    done = client.get(f"{API}/jobs/{job['id']}").json()
    assert done["state"] == "done" and done["progress"] == 1.0, done
    assert done["result"]["n_images"] == 7 and done["result"]["created"] is True
    assert "registered: big@1, 7 images" in done["log_tail"]
    got = client.get(f"{API}/datasets/{done['result']['dataset']}").json()
    assert got["name"] == "big" and got["classes"] == ["p", "q"]
    outside = make_images(world.root / "outside-scan", {"x": 2}, size=32)
    assert client.post(f"{API}/datasets/scan", json={"path": str(outside)}).status_code == 403
    r = client.post(f"{API}/datasets/scan", json={"path": str(world.root / "allowed" / "nope")})
    assert r.status_code == 404


def test_synth_dataset_is_a_job_with_progress(client, world):
    body = {"name": "tiny", "n_scenes": 3, "n_per_class": 2, "size": 32}
    r = client.post(f"{API}/datasets/synth", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "dataset-synth" and job["state"] == "queued"
    assert client.post(f"{API}/datasets/synth", json=body).json()["id"] == job["id"]
    assert client.get(f"{API}/datasets/tiny-scenes").status_code == 404  # nothing generated in the request
    assert not (world.settings.data_dir / "synth" / "tiny").exists()
    run_queued(client)
    done = client.get(f"{API}/jobs/{job['id']}").json()
    assert done["state"] == "done" and done["progress"] == 1.0, done
    assert sorted(done["result"]["names"]) == ["tiny-objects", "tiny-scenes"]
    assert "images generated" in done["log_tail"] or "registered: tiny-scenes@1" in done["log_tail"]
    for ds_id, n in zip(done["result"]["datasets"], done["result"]["n_images"]):
        assert client.get(f"{API}/datasets/{ds_id}").json()["n_images"] == n > 0
    assert client.post(f"{API}/datasets/synth", json={"name": "../x"}).status_code == 422
    for name in ("..", "."):  # data_dir/synth/.. is the data dir itself
        r = client.post(f"{API}/datasets/synth", json={"name": name})
        assert r.status_code == 400 and "starting with a letter" in r.json()["detail"], r.text
    assert client.post(f"{API}/datasets/synth", json={"n_scenes": 5000}).status_code == 422


# ---------------------------------------------------------------- images
def test_images_pages_metadata_thumbnail_and_file(client, world):
    r = client.get(f"{API}/images", params={"dataset": "shapes", "limit": 5, "offset": 2})
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == 18 and len(page["items"]) == 5
    image_id = page["items"][0]["id"]
    meta = client.get(f"{API}/images/{image_id}").json()
    assert meta["width"] == 36 and meta["label"] in ("a", "b", "c")
    t = client.get(f"{API}/images/{image_id}/thumbnail", params={"size": 16})
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(t.content)).size) == 16
    assert list((world.settings.data_dir / "thumbnails").glob(f"{image_id}-*-16.jpg"))
    p = client.get(f"{API}/images/{image_id}/thumbnail", params={"format": "png", "size": 5000})
    assert p.status_code == 422  # above the schema's bound
    p = client.get(f"{API}/images/{image_id}/thumbnail", params={"format": "png", "size": 2048})
    assert Image.open(io.BytesIO(p.content)).format == "PNG"
    f = client.get(f"{API}/images/{image_id}/file")
    assert f.status_code == 200 and f.headers["content-type"] == "image/png"
    assert f.content == (world.root / "allowed" / "imgs" / meta["relpath"]).read_bytes()


def test_image_errors(client):
    assert client.get(f"{API}/images/999999").status_code == 404
    assert client.get(f"{API}/images/999999/thumbnail").status_code == 404
    assert client.get(f"{API}/images/0").status_code == 422
    assert client.get(f"{API}/images").status_code == 422  # dataset is required
    assert client.get(f"{API}/images", params={"dataset": "nope"}).status_code == 404


# ---------------------------------------------------------------- backbones
def test_backbones(client):
    page = client.get(f"{API}/backbones").json()
    assert [b["name"] for b in page["items"]][:2] == ["r18a", "r18b"]
    assert client.get(f"{API}/backbones/r18a").json()["arch"] == "resnet18"
    taps = client.get(f"{API}/backbones/r18a/taps").json()
    assert "layer4" in taps["taps"] and taps["aliases"]["conv5"] == "layer4"
    r = client.post(f"{API}/backbones", json={"spec": "torchvision:resnet18", "random_init": True, "seed": 5,
                                              "name": "r18c"})
    assert r.status_code == 201 and r.json()["created"] is True


def test_backbone_errors(client, world):
    assert client.get(f"{API}/backbones/nope").status_code == 404
    assert client.get(f"{API}/backbones/nope/taps").status_code == 404
    assert client.post(f"{API}/backbones", json={"spec": "resnet50"}).status_code == 422
    r = client.post(f"{API}/backbones", json={"spec": "torchvision:nonexistent_net", "random_init": True})
    assert r.status_code in (400, 404) and r.json()["detail"]
    r = client.post(f"{API}/backbones", json={"spec": "checkpoint:/etc/passwd"})
    assert r.status_code == 403


# ---------------------------------------------------------------- embeddings and neighbours
def test_embedding_sets_and_neighbours(client, world):
    page = client.get(f"{API}/embedding-sets", params={"backbone": "r18a"}).json()
    assert page["total"] == 1 and page["items"][0]["tap"] == "layer4"
    es = page["items"][0]["id"]
    one = client.get(f"{API}/embedding-sets/{es}").json()
    assert one["n"] == 18 and one["index_kind"] == "flat" and one["index_recall"] is None  # exact: nothing to tune
    r = client.get(f"{API}/embedding-sets/999")
    assert r.status_code == 404 and "GET /api/v1/embedding-sets" in r.json()["detail"]
    image_id = client.get(f"{API}/images", params={"dataset": "shapes", "limit": 1}).json()["items"][0]["id"]
    r = client.get(f"{API}/embedding-sets/{es}/neighbours", params={"image": image_id, "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["image_id"] == image_id and len(body["neighbours"]) == 4
    assert all(n["image_id"] != image_id for n in body["neighbours"])
    assert client.get(f"{API}/embedding-sets/{es}/neighbours", params={"image": 999999}).status_code == 404
    assert client.get(f"{API}/embedding-sets/999/neighbours", params={"image": image_id}).status_code == 404
    assert client.get(f"{API}/embedding-sets/{es}/neighbours", params={"image": image_id, "k": 0}).status_code == 422
    assert client.get(f"{API}/embedding-sets/999").status_code == 404


def test_extract_is_a_job_deduplicated_then_run(client):
    body = {"backbone": "r18a", "dataset": "shapes", "taps": ["conv4"], "poolings": ["max"]}
    r = client.post(f"{API}/embedding-sets/extract", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "extract" and job["state"] == "queued"
    assert client.post(f"{API}/embedding-sets/extract", json=body).json()["id"] == job["id"]
    assert run_queued(client) >= 1
    done = client.get(f"{API}/jobs/{job['id']}").json()
    assert done["state"] == "done", done
    assert done["progress"] == 1.0 and done["log_tail"]
    (new_set,) = done["result"]["embedding_sets"]
    assert client.get(f"{API}/embedding-sets/{new_set}").json()["pooling"] == "max"
    r = client.post(f"{API}/embedding-sets/extract", json={"backbone": "r18a", "dataset": "shapes", "poolings": ["bad"]})
    assert r.status_code == 422
    r = client.post(f"{API}/embedding-sets/extract", json={"backbone": "r18a", "dataset": "shapes", "taps": ["fc9"]})
    assert r.status_code == 400 and "layer4" in r.json()["detail"] and "/taps" in r.json()["detail"]


# ---------------------------------------------------------------- analyses
def test_analysis_job_then_cached_result(client, world):
    a, b = world.sets[0].id, world.sets[1].id
    r = client.post(f"{API}/analyses/similarity", json={"a": a, "b": b, "k": 3})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "analysis"
    run_queued(client)
    job = client.get(f"{API}/jobs/{r.json()['id']}").json()
    assert job["state"] == "done", job
    r2 = client.post(f"{API}/analyses/similarity", json={"a": a, "b": b, "k": 3})
    assert r2.status_code == 200, r2.text
    res = r2.json()
    assert res["kind"] == "similarity" and res["id"] == job["result"]["analysis_id"]
    got = client.get(f"{API}/analyses/{res['id']}", params={"arrays": True}).json()
    assert got["data"] == res["data"] and "positions" in got["arrays"]
    page = client.get(f"{API}/analyses", params={"kind": "similarity"}).json()
    assert res["id"] in [x["id"] for x in page["items"]]


@pytest.mark.parametrize("kind,body", [
    ("comembership", {"a": 1, "b": 2, "ks": [2, 3], "seeds": [0]}),
    ("closest", {"embedding_sets": [1], "n_pairs": 3}),
    ("contrast", {"a": 1, "b": 2, "n_pairs": 3}),
    ("agreement", {"a": 1, "b": 2, "k": 3}),
    ("projection", {"embedding_sets": [1, 2], "method": "pca"}),
    ("probe", {"embedding_set": 1, "c_grid": [1.0]}),
    ("cka-matrix", {"backbone_a": "r18a", "backbone_b": "r18b", "dataset": "shapes"}),
])
def test_each_analysis_kind_queues_a_job(client, world, kind, body):
    assert [s.id for s in world.sets] == [1, 2]
    r = client.post(f"{API}/analyses/{kind}", json=body)
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        assert r.json()["params"]["analysis"] == kind
        assert client.post(f"{API}/jobs/{r.json()['id']}/cancel").json()["state"] == "cancelled"


def test_analysis_errors(client):
    assert client.post(f"{API}/analyses/similarity", json={"a": 1}).status_code == 422
    assert client.post(f"{API}/analyses/similarity", json={"a": 1, "b": 2, "extra": 1}).status_code == 422
    assert client.post(f"{API}/analyses/similarity", json={"a": 1, "b": 999}).status_code == 404
    r = client.post(f"{API}/analyses/similarity", json={"a": 1, "b": 1})
    assert r.status_code == 400 and "two different" in r.json()["detail"]
    assert client.post(f"{API}/analyses/nope", json={}).status_code == 405  # GET /analyses/{id} owns the path
    assert client.get(f"{API}/analyses/99999").status_code == 404
    assert client.get(f"{API}/analyses", params={"kind": "nope"}).status_code == 422


# ---------------------------------------------------------------- jobs
def test_jobs_list_filter_and_cancel(client, world):
    r = client.post(f"{API}/embedding-sets/extract", json={"backbone": "r18b", "dataset": "shapes", "taps": ["conv3"]})
    job = r.json()
    page = client.get(f"{API}/jobs", params={"state": "queued"}).json()
    assert job["id"] in [j["id"] for j in page["items"]] and page["total"] >= 1
    c = client.post(f"{API}/jobs/{job['id']}/cancel")
    assert c.status_code == 200 and c.json()["state"] == "cancelled"
    assert client.post(f"{API}/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    run_queued(client)  # the revoked message does nothing
    assert client.get(f"{API}/jobs/{job['id']}").json()["state"] == "cancelled"
    assert client.get(f"{API}/jobs/999999").status_code == 404
    assert client.post(f"{API}/jobs/999999/cancel").status_code == 404
    assert client.get(f"{API}/jobs", params={"state": "bogus"}).status_code == 422


# ---------------------------------------------------------------- maps
def test_heatmap_of_catalog_image_and_upload(client, world):
    image_id = client.get(f"{API}/images", params={"dataset": "shapes", "limit": 1}).json()["items"][0]["id"]
    r = client.post(f"{API}/maps/heatmap", json={"backbone": "r18a", "image_id": image_id, "tap": "conv4"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert client.get(f"{API}/maps/{job['id']}/overlay.png").status_code == 409
    run_queued(client)
    assert client.get(f"{API}/jobs/{job['id']}").json()["state"] == "done"
    png = client.get(f"{API}/maps/{job['id']}/overlay.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (36, 36)

    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(buf, format="PNG")
    up = client.post(f"{API}/uploads", files={"file": ("x.png", buf.getvalue(), "image/png")}).json()
    r = client.post(f"{API}/maps/maskout", json={"backbone": "r18a", "upload_id": up["id"], "target": "0",
                                                 "size": 16, "stride": 8})
    assert r.status_code == 202, r.text
    mixed = client.post(f"{API}/maps/maskout", json={"backbone": "r18a", "upload_id": up["id"], "target": "0",
                                                     "size": 16, "stride": 8, "precision": "mixed"})
    assert mixed.status_code == 202, mixed.text
    run_queued(client)
    done = client.get(f"{API}/jobs/{r.json()['id']}").json()
    assert done["state"] == "done", done
    assert client.get(f"{API}/maps/{done['id']}/overlay.png").status_code == 200
    done = client.get(f"{API}/jobs/{mixed.json()['id']}").json()
    assert done["state"] == "done" and "; mixed: fp32 to node" in done["result"]["data"]["engine"], done
    bad = client.post(f"{API}/maps/maskout", json={"backbone": "r18a", "upload_id": up["id"], "target": "0",
                                                   "size": 16, "precision": "int8"})
    assert bad.status_code == 422 and "mixed" in bad.text


def test_map_errors(client):
    both = {"backbone": "r18a", "image_id": 1, "upload_id": "0" * 32}
    assert client.post(f"{API}/maps/heatmap", json=both).status_code == 422
    assert client.post(f"{API}/maps/heatmap", json={"backbone": "r18a"}).status_code == 422
    r = client.post(f"{API}/maps/heatmap", json={"backbone": "r18a", "upload_id": "0" * 32})
    assert r.status_code == 404 and "POST /api/v1/uploads" in r.json()["detail"]
    assert client.post(f"{API}/maps/heatmap", json={"backbone": "r18a", "upload_id": "../../etc"}).status_code == 422
    assert client.post(f"{API}/maps/maskout", json={"backbone": "r18a", "image_id": 1}).status_code == 422
    assert client.get(f"{API}/maps/999999/overlay.png").status_code == 404
    extract_job = client.get(f"{API}/jobs", params={"state": "done"}).json()["items"]
    not_map = [j for j in extract_job if j["kind"] != "heatmap" and j["kind"] != "maskout"]
    if not_map:
        assert client.get(f"{API}/maps/{not_map[0]['id']}/overlay.png").status_code == 400


# ---------------------------------------------------------------- one size convention
def test_an_exif_rotated_jpeg_has_its_displayed_size_everywhere(client, world):
    """Stored 320x240 with orientation 6 (rotate 90): the upload route, the folder scanner and a map of it all
    say 240x320, the size a viewer shows."""
    stored = Image.fromarray(np.tile(np.arange(320, dtype=np.uint8)[None, :, None], (240, 1, 3)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif.tobytes())
    folder = world.root / "allowed" / "rotated" / "x"
    folder.mkdir(parents=True)
    (folder / "turned.jpg").write_bytes(buf.getvalue())

    up = client.post(f"{API}/uploads", files={"file": ("turned.jpg", buf.getvalue(), "image/jpeg")}).json()
    assert (up["width"], up["height"]) == (240, 320)
    ds = client.post(f"{API}/datasets", json={"path": str(folder.parent), "name": "rotated"}).json()
    image = client.get(f"{API}/images", params={"dataset": ds["id"]}).json()["items"][0]
    assert (image["width"], image["height"]) == (240, 320)
    job = client.post(f"{API}/maps/heatmap", json={"backbone": "r18a", "upload_id": up["id"]}).json()
    run_queued(client)
    done = client.get(f"{API}/jobs/{job['id']}").json()
    assert done["state"] == "done", done
    assert done["result"]["data"]["geometry"]["original_size"] == [240, 320]
    assert Image.open(io.BytesIO(client.get(f"{API}/maps/{job['id']}/overlay.png").content)).size == (240, 320)


def test_taps_are_answered_from_the_registration_record(client, world, monkeypatch):
    """GET /taps never loads the network; its shapes are the loaded network's. A row registered by an older
    featscope (no record) gets a job that records them, then the same answer."""
    from sqlalchemy import update

    from featscope.catalog import Backbone as Row
    from featscope.extractors import backbones as loader
    from featscope.extractors.backbones import list_taps
    from featscope.workspace import backbones as registry

    want = list_taps(world.ws.load_backbone("r18b"))
    client.app.state.workspace.ctx.networks.clear()  # a loaded copy would hide a load
    for module in (loader, registry):  # the name open_backbone calls, and the loader's own
        monkeypatch.setattr(module, "load_backbone", lambda *a, **k: pytest.fail("the request loaded the network"))
    r = client.get(f"{API}/backbones/r18b/taps")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input_size"] == 32 and body["aliases"]["conv5"] == "layer4"
    assert [(t["name"], t["channels"], t["height"], t["width"], t["dims"]) for t in body["layers"]] == \
        [(t.name, t.channels, t.height, t.width, t.dims) for t in want]
    monkeypatch.undo()
    with world.ws.ctx.session() as s:
        s.execute(update(Row).where(Row.name == "r18b").values(network=None))
    world.ws.ctx.networks.clear()
    client.app.state.workspace.ctx.networks.clear()
    r = client.get(f"{API}/backbones/r18b/taps")
    assert r.status_code == 202 and r.json()["kind"] == "backbone-taps"
    run_queued(client)
    again = client.get(f"{API}/backbones/r18b/taps")
    assert again.status_code == 200 and again.json() == body


# ---------------------------------------------------------------- map requests checked at submit
def _phrased_for_rest(detail: str) -> bool:
    """A REST error may name a CLI flag or command only beside its REST spelling."""
    flags_ok = all("REST" in detail[m.end():m.end() + 60] for m in re.finditer(r"(?<![\w-])--[a-z][a-z-]*", detail))
    commands_ok = "`featscope " not in detail or "/api/v1/" in detail
    return flags_ok and commands_ok


def _upload(client, size=(50, 40)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(buf, format="PNG")
    return client.post(f"{API}/uploads", files={"file": ("x.png", buf.getvalue(), "image/png")}).json()["id"]


@pytest.fixture(scope="module")
def body_only(client, world):
    """A registered ResNet-18 body without a classifier (a detection backbone's situation)."""
    import torch
    import torchvision

    path = world.root / "allowed" / "body.pth"
    torch.save({k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}, path)
    r = client.post(f"{API}/backbones", json={"spec": f"checkpoint:{path}", "name": "body"})
    assert r.status_code == 201, r.text
    return "body"


def test_map_requests_are_checked_before_a_job_is_queued(client, world, body_only):
    up = _upload(client)
    image_id = client.get(f"{API}/images", params={"dataset": "shapes", "limit": 1}).json()["items"][0]["id"]
    before = client.get(f"{API}/jobs").json()["total"]
    cases = [
        ("heatmap", {"backbone": "r18a", "upload_id": up, "tap": "fc9"}, 400, "has no tap 'fc9'"),
        ("heatmap", {"backbone": "r18a", "upload_id": up, "top_channels": 4000}, 400, "exceeds the 512 channels"),
        ("heatmap", {"backbone": "r18a", "upload_id": up, "method": "gradcam", "target": "1000"}, 400, "unknown class"),
        ("maskout", {"backbone": "r18a", "upload_id": up, "target": "3", "size": 40}, 400, "larger than the network"),
        ("maskout", {"backbone": "r18a", "upload_id": up, "target": "3", "size": 8, "fill": "mean"}, 400, "mean_pixel"),
        ("maskout", {"backbone": "r18a", "upload_id": up, "target": "camel", "size": 8}, 400, "unknown class"),
        ("maskout", {"backbone": "r18a", "upload_id": up, "target": "0", "size": 8, "probe_dataset": "nope"}, 404,
         "no data set 'nope'"),
        ("maskout", {"backbone": body_only, "upload_id": up, "target": "a", "size": 8}, 400, "probe_dataset"),
        ("maskout", {"backbone": body_only, "upload_id": up, "target": "a", "size": 8, "probe_dataset": "shapes"}, 404,
         "POST /api/v1/embedding-sets/extract"),
        ("heatmap", {"backbone": body_only, "image_id": image_id, "method": "gradcam"}, 404, "layer4/avg embeddings"),
        ("heatmap", {"backbone": "nope", "upload_id": up}, 404, "no backbone 'nope'"),
    ]
    for kind, body, status, words in cases:
        r = client.post(f"{API}/maps/{kind}", json=body)
        assert r.status_code == status and words in r.json()["detail"], (body, r.text)
        assert _phrased_for_rest(r.json()["detail"]), r.json()["detail"]
    assert client.get(f"{API}/jobs").json()["total"] == before  # nothing was queued


def test_gradcam_without_a_target_explains_the_top_class(client, world):
    up = _upload(client)
    r = client.post(f"{API}/maps/heatmap", json={"backbone": "r18a", "upload_id": up, "method": "gradcam"})
    assert r.status_code == 202, r.text
    run_queued(client)
    done = client.get(f"{API}/jobs/{r.json()['id']}").json()
    assert done["state"] == "done", done
    data = done["result"]["data"]
    assert data["target_chosen"] == "top-scoring" and data["class_name"] == str(data["target"])


def test_maskout_overlay_scales(client, world):
    up = _upload(client)
    r = client.post(f"{API}/maps/maskout", json={"backbone": "r18a", "upload_id": up, "target": "4", "size": 8,
                                                 "stride": 8})
    run_queued(client)
    done = client.get(f"{API}/jobs/{r.json()['id']}").json()
    assert done["state"] == "done", done
    legend = done["result"]["legend"]
    assert legend["scale"] == "relative" and legend["low"] == done["result"]["data"]["min_probability"]
    default = client.get(f"{API}/maps/{done['id']}/overlay.png").content
    absolute = client.get(f"{API}/maps/{done['id']}/overlay.png", params={"scale": "absolute"}).content
    drop = client.get(f"{API}/maps/{done['id']}/overlay.png", params={"scale": "drop"}).content
    assert len({default, absolute, drop}) == 3
    img = Image.open(io.BytesIO(default))
    assert img.size[0] >= 200 and img.size[1] > 40  # the image with a colour bar below it
    assert client.get(f"{API}/maps/{done['id']}/overlay.png", params={"scale": "log"}).status_code == 422
    heat = client.post(f"{API}/maps/heatmap", json={"backbone": "r18a", "upload_id": up}).json()
    run_queued(client)
    assert client.get(f"{API}/maps/{heat['id']}/overlay.png", params={"scale": "drop"}).status_code == 400
    for f in world.settings.uploads_dir.glob(f"{up}*"):  # the image gone: the stored overlay is still served
        f.unlink()
    again = client.get(f"{API}/maps/{done['id']}/overlay.png")
    assert again.status_code == 200 and again.content == default
    redraw = client.get(f"{API}/maps/{done['id']}/overlay.png", params={"scale": "drop"})
    assert redraw.status_code == 404 and "upload" in redraw.json()["detail"], redraw.text


def test_analysis_requests_are_checked_before_a_job_is_queued(client, world, make_images):
    """Parameters the computation would refuse (k >= N, perplexity >= N/3, a sample smaller than K, a probe on
    unlabelled images) are a 400 at once, never a job that fails in the worker."""
    a, b = world.sets[0].id, world.sets[1].id  # 18 images each
    plain = make_images(world.root / "allowed" / "plain" / "only", {"x": 4}, size=32).parent
    ds = client.post(f"{API}/datasets", json={"path": str(plain / "only"), "format": "folder", "name": "plain"}).json()
    [unlabelled] = world.ws.extract("r18a", ds["id"])
    before = client.get(f"{API}/jobs").json()["total"]
    cases = [
        ("similarity", {"a": a, "b": b, "k": 18}, "k must be an integer from 1 to 17"),
        ("agreement", {"a": a, "b": b, "k": 40}, "k must be"),
        ("closest", {"embedding_sets": [a], "k": 18}, "k must be"),
        ("contrast", {"a": a, "b": b, "definition": "clusters", "k_large": 100}, "k_large must be"),
        ("comembership", {"a": a, "b": b, "ks": [2, 10], "sample": 3}, "sample must be"),
        ("projection", {"embedding_sets": [a], "perplexity": 10}, "perplexity must be in (0, N/3)"),
        ("projection", {"embedding_sets": [a], "method": "umap", "n_neighbors": 30}, "n_neighbors must be"),
        ("probe", {"embedding_set": unlabelled.id}, "no class label"),
    ]
    for kind, body, words in cases:
        r = client.post(f"{API}/analyses/{kind}", json=body)
        assert r.status_code == 400 and words in r.json()["detail"], (kind, r.text)
        assert _phrased_for_rest(r.json()["detail"])
    assert client.get(f"{API}/jobs").json()["total"] == before
