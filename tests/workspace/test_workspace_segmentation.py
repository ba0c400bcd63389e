"""Occlusion in the catalog's box rows, and a registered data set's masks found from its catalog row."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from featscope.datasets import Box
from featscope.workspace import datasets as wds


@pytest.fixture
def coco(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (12, 12), (10, 20, 30)).save(tmp_path / name)
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "area": 36, "iscrowd": 0,
             "occlusion": 0.25, "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0,
             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}]
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 12, "height": 12},
                      {"id": 2, "file_name": "b.png", "width": 12, "height": 12}],
           "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "inst.json").write_text(json.dumps(doc))
    return tmp_path / "inst.json"


def test_catalog_rows_keep_occlusion_only_when_known(ws, coco):
    info = ws.add_dataset(coco, name="occ")
    rows = {im.relpath: im for im in wds.readable_images(ws.ctx, info.id)}
    assert rows["a.png"].boxes == [["cat", 2.0, 2.0, 8.0, 8.0, 0.25]]
    assert rows["b.png"].boxes == [["cat", 0.0, 0.0, 4.0, 4.0]]  # unknown: the 5-element row of before
    assert wds.image_boxes(rows["a.png"]) == [Box("cat", 2, 2, 8, 8, 0.25)]
    assert wds.image_boxes(rows["b.png"]) == [Box("cat", 0, 0, 4, 4)]
    assert ws.add_dataset(coco, name="occ").created is False  # same content: the same row


def test_segmentation_of_a_registered_coco_set(ws, coco, tmp_path):
    ws.add_dataset(coco, name="seg")
    masks = ws.segmentation("seg", void_width=0)
    assert masks.classes == ["background", "cat"] and masks.has("a.png")
    expected = np.zeros((12, 12), np.uint8)
    expected[2:8, 2:8] = 1
    np.testing.assert_array_equal(masks.load("a.png"), expected)
    banded = wds.segmentation(ws.ctx, "seg").load("a.png")  # 12 px: a 1 px band on the square's outer pixels
    assert (banded == 255).sum() == 20 and (banded == 1).sum() == 16
    coco.unlink()
    with pytest.raises(ValueError, match="which no longer exists; register it again"):
        ws.segmentation("seg")


def test_data_sets_without_masks_say_what_is_needed(ws, image_folder):
    ws.add_dataset(image_folder, name="plain")
    with pytest.raises(ValueError, match="'plain' \\(imagefolder\\) has no segmentation masks; segmentation needs "
                                         "Pascal VOC SegmentationClass PNGs or COCO polygons/RLE"):
        ws.segmentation("plain")


def test_segmentation_of_a_registered_voc_set(ws, tmp_path):
    from featscope.datasets.masks import _voc_colour

    root = _voc_one_cat(tmp_path / "VOC")
    mask = np.zeros((6, 8), np.uint8)
    mask[0:4, 0:4] = 8  # cat in VOC's order
    im = Image.fromarray(mask)
    im.putpalette([v for i in range(256) for v in _voc_colour(i)])
    im.save(root / "SegmentationClass" / "x.png")
    ws.add_dataset(root, name="voc")
    masks = ws.segmentation("voc")
    assert masks.classes[8] == "cat" and masks.has("JPEGImages/x.jpg")
    np.testing.assert_array_equal(masks.load("JPEGImages/x.jpg"), mask)


def test_mask_fingerprints_follow_the_masks_not_only_the_images(ws, coco, tmp_path):
    """A segmentation run's key includes its masks' fingerprint: changed polygons (same images and boxes) or a
    rewritten VOC mask give another one, so the run trains anew instead of a stale cache hit."""
    import os

    ws.add_dataset(coco, name="fp")
    before = wds.segmentation(ws.ctx, "fp").fingerprint(["a.png", "b.png"])
    assert before == wds.segmentation(ws.ctx, "fp").fingerprint(["b.png", "a.png"])  # order-free, repeatable
    assert before != wds.segmentation(ws.ctx, "fp").fingerprint(["a.png"])
    doc = json.loads(coco.read_text())
    doc["annotations"][0]["segmentation"] = [[2, 2, 8, 2, 5, 8]]  # a triangle in the same box
    coco.write_text(json.dumps(doc))
    assert wds.segmentation(ws.ctx, "fp").fingerprint(["a.png", "b.png"]) != before

    root = _voc_one_cat(tmp_path / "VOC")
    path = root / "SegmentationClass" / "x.png"
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(path)
    ws.add_dataset(root, name="voc-fp")
    first = wds.segmentation(ws.ctx, "voc-fp").fingerprint(["JPEGImages/x.jpg"])
    Image.fromarray(np.full((6, 8), 8, np.uint8)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert wds.segmentation(ws.ctx, "voc-fp").fingerprint(["JPEGImages/x.jpg"]) != first


def _voc_one_cat(root):
    """A VOC folder of one 8x6 image, x.jpg, with one cat box; its SegmentationClass folder left empty."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    Image.new("RGB", (8, 6)).save(root / "JPEGImages" / "x.jpg")
    (root / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>8</width><height>6</height></size><object>"
        "<name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>")
    return root
