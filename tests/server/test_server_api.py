"""Every route through FastAPI's TestClient: the happy path, then the errors with their status and detail."""

from __future__ import annotations

import io

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


def test_synth_dataset(client):
    r = client.post(f"{API}/datasets/synth", json={"name": "tiny", "n_scenes": 3, "n_per_class": 2, "size": 32})
    assert r.status_code == 201, r.text
    assert sorted(d["name"] for d in r.json()) == ["tiny-objects", "tiny-scenes"]
    assert client.post(f"{API}/datasets/synth", json={"name": "../x"}).status_code == 422


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
    run_queued(client)
    done = client.get(f"{API}/jobs/{r.json()['id']}").json()
    assert done["state"] == "done", done
    assert client.get(f"{API}/maps/{done['id']}/overlay.png").status_code == 200


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
