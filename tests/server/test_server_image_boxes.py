"""Image metadata carries each box and its occlusion (null when the annotations do not say)."""

from __future__ import annotations

import json

from PIL import Image

API = "/api/v1"


def test_image_boxes_with_occlusion(tmp_path):
    from fastapi.testclient import TestClient

    from featscope.server import create_app
    from featscope.server.settings import ServerSettings
    from featscope.workspace import Workspace

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    Image.new("RGB", (20, 10)).save(allowed / "a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 4], "area": 20, "iscrowd": 0,
             "occlusion": 0.4},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 0, 4, 4], "area": 16, "iscrowd": 0}]
    (allowed / "inst.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}], "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    settings = ServerSettings(data_dir=tmp_path / "data", allowed_roots=[allowed], num_workers=0)
    Workspace(settings).add_dataset(allowed / "inst.json", name="occ")
    with TestClient(create_app(settings)) as client:
        page = client.get(f"{API}/images", params={"dataset": "occ"}).json()
        item = page["items"][0]
        assert item["n_boxes"] == 2 and item["boxes"] == [
            {"label": "cat", "box": [1.0, 2.0, 6.0, 6.0], "occlusion": 0.4},
            {"label": "dog", "box": [10.0, 0.0, 14.0, 4.0], "occlusion": None}]
        assert client.get(f"{API}/images/{item['id']}").json()["boxes"] == item["boxes"]
