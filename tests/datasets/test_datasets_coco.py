"""COCO reader: malformed files first, then boxes, labels and warnings against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featscope.datasets import Box, DatasetError, read_dataset


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _coco(images, annotations, categories=({"id": 1, "name": "cat"}, {"id": 2, "name": "dog"})) -> dict:
    return {"images": list(images), "annotations": list(annotations), "categories": list(categories)}


def _img(i: int, name: str, w: int = 64, h: int = 48) -> dict:
    return {"id": i, "file_name": name, "width": w, "height": h}


def _ann(i: int, image: int, cat: int, bbox) -> dict:
    return {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, "area": 0, "iscrowd": 0}


# ---------------------------------------------------------------- errors


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "inst.json", '{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DatasetError, match=r"not valid JSON \(line 2"):
        read_dataset(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"annotations": [], "categories": []}, "has no 'images' list"),
        ({"images": [], "annotations": []}, "has no 'categories' list"),
        ({"images": {}, "annotations": [], "categories": []}, "non-list 'images'"),
        ([1, 2], "holds a JSON list"),
        (_coco([{"id": 1}], []), r"images\[0\] needs an 'id' and a string 'file_name'"),
        (_coco([_img(1, "a.png"), _img(1, "b.png")], []), "image id 1 appears twice"),
        (_coco([], [], [{"id": 1}]), r"categories\[0\] needs an integer 'id' and a string 'name'"),
        (_coco([{"id": 1, "file_name": "a.png", "width": "64", "height": 48}], []), "positive integers"),
        ({"images": [], "annotations": {}, "categories": []}, "'annotations' must be a list"),
    ],
)
def test_structural_faults(tmp_path: Path, data, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        read_dataset(_write(tmp_path / "inst.json", data))


def test_no_images_listed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="lists no images"):
        read_dataset(_write(tmp_path / "inst.json", _coco([], [])))


def test_all_files_missing_suggests_images_root(tmp_path: Path) -> None:
    path = _write(tmp_path / "inst.json", _coco([_img(1, "a.png"), _img(2, "b.png")], []))
    with pytest.raises(DatasetError, match="pass images_root="):
        read_dataset(path)


def test_images_root_must_exist(tmp_path: Path) -> None:
    path = _write(tmp_path / "inst.json", _coco([_img(1, "a.png")], []))
    with pytest.raises(DatasetError, match="images_root .* is not a directory"):
        read_dataset(path, images_root=tmp_path / "nope")


# ---------------------------------------------------------------- boxes, labels, warnings


@pytest.fixture
def coco_file(tmp_path: Path, make_image) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        make_image(tmp_path / name, size=(64, 48))
    images = [_img(1, "a.png"), _img(2, "b.png"), _img(3, "missing.png"), _img(4, "c.png")]
    annotations = [
        _ann(1, 1, 1, [10, 10, 20, 10]),     # cat, area 200
        _ann(2, 1, 2, [0, 0, 5, 5]),         # dog, area 25 -> image 1 is a cat
        _ann(3, 2, 2, [50, 40, 30, 20]),     # partly outside 64x48 -> clipped to [50, 40, 64, 48]
        _ann(4, 2, 1, [100, 100, 10, 10]),   # wholly outside -> dropped
        _ann(5, 2, 1, [5, 5, 0, 10]),        # zero width -> dropped
        _ann(6, 1, 7, [1, 1, 2, 2]),         # unknown category -> dropped
        _ann(7, 99, 1, [1, 1, 2, 2]),        # unknown image -> ignored
        _ann(8, 3, 1, [1, 1, 2, 2]),         # on the missing image
        _ann(9, 1, 1, [0, 0, 64.3, 10]),     # sub-pixel overshoot -> clipped silently, area 640
    ]
    return _write(tmp_path / "inst.json", _coco(images, annotations))


def test_boxes_labels_and_skips(coco_file: Path, snapshot) -> None:
    before = snapshot(coco_file.parent)
    scan = read_dataset(coco_file)
    assert scan.format == "coco" and scan.root == coco_file.parent and scan.annotations == coco_file
    by_path = {r.relpath: r for r in scan.images}
    assert list(by_path) == ["a.png", "b.png", "c.png"]
    assert by_path["a.png"].boxes == (Box("cat", 10, 10, 30, 20), Box("dog", 0, 0, 5, 5), Box("cat", 0, 0, 64, 10))
    assert by_path["a.png"].label == "cat"
    assert by_path["b.png"].boxes == (Box("dog", 50, 40, 64, 48),)
    assert by_path["b.png"].label == "dog"
    assert by_path["c.png"].boxes == () and by_path["c.png"].label is None
    assert [(r.relpath, r.reason, r.label) for r in scan.skipped] == [("missing.png", "file not found", "cat")]
    assert scan.classes == ["cat", "dog"]
    assert scan.summary() == "3 images, 2 classes; 1 skipped: 1 file not found; 5 annotation warnings"
    assert snapshot(coco_file.parent) == before


def test_warning_texts(coco_file: Path) -> None:
    warnings = read_dataset(coco_file).warnings
    assert warnings[0] == ("inst.json: annotation 6 (image 1): unknown category id 7 (known ids: 1-2); "
                           "dropped; add the category or fix the id")
    assert warnings[1].startswith("inst.json: annotation 7 (image 99): image id 99 is not in 'images'")
    assert ("inst.json: annotation 3 (image 2): bbox [50, 40, 30, 20] (xywh) extends outside the 64x48 "
            "image; clipped") in warnings
    assert ("inst.json: annotation 4 (image 2): bbox [100, 100, 10, 10] (xywh) lies outside the 64x48 "
            "image; dropped") in warnings
    assert any(w.startswith("inst.json: annotation 5 (image 2): bbox [5, 5, 0, 10] (xywh) has no positive")
               for w in warnings)
    assert len(warnings) == 5


def test_known_ids_collapse_into_ranges(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    cats = [{"id": i, "name": f"c{i}"} for i in (1, 2, 3, 5, 7, 8)]
    data = _coco([_img(1, "a.png", 16, 12)], [_ann(1, 1, 4, [0, 0, 1, 1])], cats)
    scan = read_dataset(_write(tmp_path / "i.json", data))
    assert "unknown category id 4 (known ids: 1-3, 5, 7-8)" in scan.warnings[0]
    assert scan.classes == ["c1", "c2", "c3", "c5", "c7", "c8"]  # all categories, used or not


def test_verify_none_uses_declared_sizes(coco_file: Path) -> None:
    scan = read_dataset(coco_file, verify="none")
    assert {(r.width, r.height) for r in scan.images} == {(64, 48)}


def test_declared_size_mismatch_warns_and_clips_to_the_real_image(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", size=(32, 24))
    data = _coco([_img(1, "a.png", 64, 48)], [_ann(1, 1, 1, [20, 20, 30, 20])])
    scan = read_dataset(_write(tmp_path / "i.json", data))
    assert scan.images[0].boxes == (Box("cat", 20, 20, 32, 24),)
    assert scan.warnings[0] == ("a.png: the annotations give its size as 64x48 but the image is 32x24; "
                                "boxes are clipped to the image")
    assert len(scan.warnings) == 2  # and the clip itself


def test_images_subdirectory_and_explicit_root(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "images" / "train" / "a.png")
    data = _coco([_img(1, "train/a.png", 16, 12)], [])
    scan = read_dataset(_write(tmp_path / "ann" / "i.json", data), images_root=tmp_path / "images")
    assert scan.root == tmp_path / "images" and scan.images[0].relpath == "train/a.png"
    scan = read_dataset(_write(tmp_path / "i.json", data))  # no images_root: falls back to ./images
    assert scan.root == tmp_path / "images" and len(scan.images) == 1


def test_folder_named_like_the_json(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "val2017" / "a.png")
    scan = read_dataset(_write(tmp_path / "val2017.json", _coco([_img(1, "a.png", 16, 12)], [])))
    assert scan.root == tmp_path / "val2017" and scan.images[0].relpath == "a.png"


def test_paths_escaping_the_root_are_skipped(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "root" / "a.png")
    make_image(tmp_path / "outside.png")
    data = _coco([_img(1, "a.png", 16, 12), _img(2, "../outside.png", 16, 12), _img(3, "/etc/passwd", 16, 12)], [])
    scan = read_dataset(_write(tmp_path / "root" / "i.json", data))
    assert [r.relpath for r in scan.images] == ["a.png"]
    assert [r.reason for r in scan.skipped] == ["file not found", "file not found"]
    assert all("not a relative path" in r.error for r in scan.skipped)


def test_duplicate_file_names_merge(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", size=(64, 48))
    data = _coco([_img(1, "a.png"), _img(2, "./a.png")], [_ann(1, 1, 1, [0, 0, 2, 2]), _ann(2, 2, 2, [0, 0, 4, 4])])
    scan = read_dataset(_write(tmp_path / "i.json", data))
    assert len(scan.images) == 1 and scan.images[0].label == "dog" and len(scan.images[0].boxes) == 2
    assert "repeats file a.png" in scan.warnings[0]


def test_missing_annotations_key_reads_unlabelled(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    scan = read_dataset(_write(tmp_path / "i.json", {"images": [_img(1, "a.png", 16, 12)], "categories": []}))
    assert scan.images[0].label is None and "no 'annotations' list" in scan.warnings[0]


def test_fingerprint_follows_annotation_edits(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", size=(64, 48))
    path = _write(tmp_path / "i.json", _coco([_img(1, "a.png")], [_ann(1, 1, 1, [0, 0, 10, 10])]))
    fp = read_dataset(path).fingerprint
    assert read_dataset(path).fingerprint == fp
    _write(path, _coco([_img(1, "a.png")], [_ann(1, 1, 2, [0, 0, 10, 10])]))  # relabelled box
    assert read_dataset(path).fingerprint != fp


def test_occlusion_is_read_and_bad_values_warn(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", size=(64, 48))
    anns = [{**_ann(1, 1, 1, [0, 0, 10, 10]), "occlusion": 0.25},
            {**_ann(2, 1, 2, [20, 0, 10, 10]), "occlusion": 0},
            _ann(3, 1, 1, [40, 0, 10, 10]),                               # not given
            {**_ann(4, 1, 1, [0, 20, 10, 10]), "occlusion": 1.5},          # out of range
            {**_ann(5, 1, 1, [20, 20, 10, 10]), "occlusion": "half"},      # not a number
            {**_ann(6, 1, 1, [40, 20, 10, 10]), "occlusion": True},        # a bool is not a fraction
            {**_ann(7, 1, 1, [0, 30, 10, 10]), "occlusion": None}]         # explicitly unknown
    scan = read_dataset(_write(tmp_path / "i.json", _coco([_img(1, "a.png")], anns)))
    assert [b.occlusion for b in scan.images[0].boxes] == [0.25, 0.0, None, None, None, None, None]
    assert scan.warnings == [
        "i.json: annotation 4 (image 1): 'occlusion' must be a number from 0 to 1 (the fraction of the object "
        "hidden), got 1.5; the box is kept without it",
        "i.json: annotation 5 (image 1): 'occlusion' must be a number from 0 to 1 (the fraction of the object "
        "hidden), got 'half'; the box is kept without it",
        "i.json: annotation 6 (image 1): 'occlusion' must be a number from 0 to 1 (the fraction of the object "
        "hidden), got True; the box is kept without it"]
    plain = read_dataset(_write(tmp_path / "j.json", _coco([_img(1, "a.png")], [_ann(1, 1, 1, [0, 0, 10, 10])])))
    with_occ = read_dataset(_write(tmp_path / "j.json", _coco([_img(1, "a.png")], [anns[0]])))
    assert with_occ.fingerprint != plain.fingerprint  # an occlusion edit is a new version of the data
