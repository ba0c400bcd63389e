"""``featscope dataset show``: where a data set was read from, and whether it has segmentation masks."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from featscope.cli import app


def _invoke(*args: str):
    import featscope.cli as cli

    cli._state.clear()
    return CliRunner().invoke(app, list(args))


def test_show_says_whether_a_data_set_has_masks(tmp_path, monkeypatch, image_folder):
    monkeypatch.setenv("FEATSCOPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FEATSCOPE_NUM_WORKERS", "0")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (12, 12)).save(tmp_path / name)
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "area": 36, "iscrowd": 0,
             "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]], "occlusion": 0.1},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0}]
    (tmp_path / "inst.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 12, "height": 12},
                   {"id": 2, "file_name": "b.png", "width": 12, "height": 12}],
        "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    r = _invoke("dataset", "add", str(tmp_path / "inst.json"), "--name", "seg")
    assert r.exit_code == 0 and "2 images, 1 class; 1 with segmentation masks" in r.output.replace("\n", " ")
    r = _invoke("dataset", "show", "seg")
    assert r.exit_code == 0, r.output
    assert "segmentation masks: 1 of 2 images, 2 classes with background, read from" in r.output.replace("\n", " ")
    shown = json.loads(_invoke("dataset", "show", "seg", "--json").output)
    assert shown["segmentation"]["images"] == 1 and shown["segmentation"]["classes"] == ["background", "cat"]
    assert shown["source_path"] == str((tmp_path / "inst.json").resolve())
    assert _invoke("dataset", "add", str(image_folder), "--name", "plain").exit_code == 0
    r = _invoke("dataset", "show", "plain")
    assert r.exit_code == 0 and "segmentation masks: none (data set 'plain' (imagefolder) has no segmentation" in \
        r.output.replace("\n", " "), r.output
    assert _invoke("dataset", "show", "nope").exit_code == 2
