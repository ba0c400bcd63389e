"""Segmentation masks: VOC PNGs read back index for index, COCO polygons/RLE painted and banded, checked pixel by pixel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from featscope.datasets.masks import (VOC_CLASSES, VOID, CocoMasks, VocMasks, _voc_colour, default_void_width,
                                      render_instances)

CAT = VOC_CLASSES.index("cat")
DOG = VOC_CLASSES.index("dog")


def _palette_png(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette makes it P
    im.putpalette([v for i in range(256) for v in _voc_colour(i)])
    im.save(path)
    return path


@pytest.fixture
def voc(tmp_path: Path, make_image) -> Path:
    root = tmp_path / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    for stem in ("a", "b", "c"):
        make_image(root / "JPEGImages" / f"{stem}.jpg", size=(8, 6))
    return root


def test_voc_colours_are_the_devkit_palette():
    assert [_voc_colour(i) for i in (0, 1, 2, 3, 15)] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0),
                                                          (192, 128, 128)]
    assert _voc_colour(VOID) == (224, 224, 192)


def test_voc_palette_and_rgb_masks_read_back_as_class_indices(voc: Path):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 2:6] = CAT
    mask[1, 2:6] = mask[3, 2:6] = VOID  # a void outline, as VOC draws it
    mask[5, 0] = DOG
    _palette_png(voc / "SegmentationClass" / "a.png", mask)
    rgb = np.array([_voc_colour(int(v)) for v in mask.ravel()], np.uint8).reshape(6, 8, 3)
    Image.fromarray(rgb).save(voc / "SegmentationClass" / "b.png")
    masks = VocMasks(voc, object_classes=["cat", "dog"])
    assert masks.classes == list(VOC_CLASSES) and masks.classes[0] == "background"
    assert masks.has("JPEGImages/a.jpg") and masks.has("JPEGImages/b.jpg") and not masks.has("JPEGImages/c.jpg")
    for rel in ("JPEGImages/a.jpg", "JPEGImages/b.jpg"):
        got = masks.load(rel)
        assert got.dtype == np.uint8 and got.shape == (6, 8)
        np.testing.assert_array_equal(got, mask)
    with pytest.raises(ValueError, match="c.jpg has no segmentation mask"):
        masks.load("JPEGImages/c.jpg")


def test_voc_bad_masks_and_missing_ones(voc: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="has no SegmentationClass"):
        VocMasks(voc)
    _palette_png(voc / "SegmentationClass" / "a.png", np.full((6, 8), 30, np.uint8))
    with pytest.raises(ValueError, match=r"class indices \[30\] beyond the 21 classes"):
        VocMasks(voc).load("JPEGImages/a.jpg")
    Image.fromarray(np.full((6, 8, 3), 7, np.uint8)).save(voc / "SegmentationClass" / "b.png")
    with pytest.raises(ValueError, match=r"colour \(7, 7, 7\), which is no class's colour"):
        VocMasks(voc).load("JPEGImages/b.jpg")
    with pytest.raises(ValueError, match="not among its mask classes .*widget"):
        VocMasks(voc, object_classes=["cat", "widget"])


def test_voc_labelmap_names_the_palette(voc: Path):
    (voc / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nwidget:10,20,30::\n"
                                      "gadget:40,50,60::\n")
    mask = np.array([[0, 1, 2, VOID]], np.uint8)
    _palette_png(voc / "SegmentationClass" / "a.png", mask)
    Image.fromarray(np.array([[(0, 0, 0), (10, 20, 30), (40, 50, 60), (224, 224, 192)]], np.uint8)).save(
        voc / "SegmentationClass" / "b.png")
    masks = VocMasks(voc, object_classes=["gadget", "widget"])
    assert masks.classes == ["background", "widget", "gadget"]
    np.testing.assert_array_equal(masks.load("JPEGImages/a.jpg"), mask)
    np.testing.assert_array_equal(masks.load("JPEGImages/b.jpg"), mask)


# ---------------------------------------------------------------- COCO polygons / RLE and the void band

SQUARE = [2, 2, 8, 2, 8, 8, 2, 8]  # a polygon covering pixel rows and columns 2..7 (pixel-edge corners)


def _square_mask(size: int = 12) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[2:8, 2:8] = True
    return m


def _coco(tmp_path: Path, annotations: list[dict], images=None) -> Path:
    images = images or [{"id": 1, "file_name": "a.png", "width": 12, "height": 12}]
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    return path


def _ann(i: int, image: int, cat: int, seg) -> dict:
    return {"id": i, "image_id": image, "category_id": cat, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0,
            "segmentation": seg}


def _rle(mask: np.ndarray, as_list: bool = False) -> dict:
    if as_list:  # COCO's uncompressed form: run lengths in column-major order, starting with a 0-run
        flat = mask.T.ravel().astype(int)
        runs, current, n = [], 0, 0
        for v in flat:
            if v != current:
                runs.append(n)
                current, n = v, 0
            n += 1
        runs.append(n)
        return {"size": list(mask.shape), "counts": runs}
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def test_a_square_polygon_and_its_one_pixel_band(tmp_path: Path):
    masks = CocoMasks(_coco(tmp_path, [_ann(1, 1, 1, [SQUARE])]))
    assert masks.classes == ["background", "cat", "dog"] and masks.has("a.png")
    got = masks.load("a.png")  # 12 px: the default band is 1 px, the square's outermost pixels
    expected = np.zeros((12, 12), np.uint8)
    expected[2:8, 2:8] = VOID
    expected[3:7, 3:7] = 1
    np.testing.assert_array_equal(got, expected)


def test_a_three_pixel_band_straddles_the_outline(tmp_path: Path):
    got = CocoMasks(_coco(tmp_path, [_ann(1, 1, 1, [SQUARE])]), void_width=3).load("a.png")
    # The outermost ring (rows/columns 2 and 7) and every pixel at distance 1 of it: one pixel outside
    # (rows/columns 1 and 8, not the diagonal corners at distance sqrt 2) and one inside (the ring 3..6).
    expected = np.zeros((12, 12), np.uint8)
    expected[1:9, 2:8] = expected[2:8, 1:9] = VOID
    expected[4:6, 4:6] = 1
    np.testing.assert_array_equal(got, expected)
    assert CocoMasks(_coco(tmp_path, [_ann(1, 1, 1, [SQUARE])]), void_width=2).load("a.png").tolist() == \
        got.tolist()  # even widths widen to the next odd one
    plain = CocoMasks(_coco(tmp_path, [_ann(1, 1, 1, [SQUARE])]), void_width=0).load("a.png")
    np.testing.assert_array_equal(plain, _square_mask().astype(np.uint8))


def test_instances_paint_largest_first_and_bands_separate_them(tmp_path: Path):
    dog = np.zeros((12, 12), bool)
    dog[0:10, 0:10] = True  # larger, listed after the cat: painted first, so the cat stays on top
    path = _coco(tmp_path, [_ann(1, 1, 1, [SQUARE]), _ann(2, 1, 2, _rle(dog))])
    plain = CocoMasks(path, void_width=0).load("a.png")
    expected = np.zeros((12, 12), np.uint8)
    expected[0:10, 0:10] = 2
    expected[2:8, 2:8] = 1
    np.testing.assert_array_equal(plain, expected)
    banded = CocoMasks(path, void_width=1).load("a.png")
    expected[2:8, 2:8] = VOID      # the cat's outer ring: it lies on the dog
    expected[3:7, 3:7] = 1
    expected[9, 0:10] = VOID       # the dog's outer pixels against the background; none along the image border
    expected[0:10, 9] = VOID
    np.testing.assert_array_equal(banded, expected)


def test_rle_forms_and_which_images_have_masks(tmp_path: Path):
    images = [{"id": k, "file_name": f"{n}.png", "width": 12, "height": 12}
              for k, n in enumerate(["a", "b", "c", "d", "e"], start=1)]
    anns = [_ann(1, 1, 1, _rle(_square_mask(), as_list=True)),      # uncompressed RLE
            _ann(2, 2, 2, _rle(_square_mask())),                     # compressed, counts as a string
            _ann(3, 3, 1, [SQUARE]), {**_ann(4, 3, 2, None)},        # one object without a segmentation
            _ann(5, 5, 1, [[1, 1, 3, 3], SQUARE]),                   # a degenerate 2-point polygon is ignored
            _ann(6, 4, 1, {"size": [12, 12], "counts": [5, 3]})]     # run lengths that do not fill the image
    masks = CocoMasks(_coco(tmp_path, anns, images), void_width=0)
    assert [masks.has(f"{n}.png") for n in "abcde"] == [True, True, False, False, True]
    assert not masks.has("zzz.png") and len(masks.warnings) == 2
    square = _square_mask().astype(np.uint8)
    np.testing.assert_array_equal(masks.load("a.png"), square)
    np.testing.assert_array_equal(masks.load("b.png"), 2 * square)
    np.testing.assert_array_equal(masks.load("e.png"), square)
    with pytest.raises(ValueError, match="c.png has no segmentation mask"):
        masks.load("c.png")


def test_an_image_without_objects_is_all_background(tmp_path: Path, make_image):
    images = [{"id": 1, "file_name": "a.png", "width": 12, "height": 12}, {"id": 2, "file_name": "b.png"}]
    make_image(tmp_path / "b.png", size=(7, 5))  # no size in the JSON: the file says 7x5
    masks = CocoMasks(_coco(tmp_path, [_ann(1, 1, 1, [SQUARE])], images))
    assert masks.has("b.png")
    np.testing.assert_array_equal(masks.load("b.png"), np.zeros((5, 7), np.uint8))


def test_coco_without_segmentations_says_so(tmp_path: Path):
    with pytest.raises(ValueError, match="has no segmentation masks .*Pascal VOC SegmentationClass PNGs or COCO"):
        CocoMasks(_coco(tmp_path, [{k: v for k, v in _ann(1, 1, 1, None).items() if k != "segmentation"}]))


def test_render_instances_arguments():
    assert default_void_width(12, 12) == 1 and default_void_width(375, 500) == 5 and default_void_width(3, 3) == 1
    assert render_instances(3, 4, []).tolist() == [[0] * 4] * 3
    with pytest.raises(ValueError, match="void_width must be >= 0"):
        render_instances(3, 4, [], void_width=-1)
    with pytest.raises(ValueError, match="instance 0 has a 2x2 mask in a 4x3 image"):
        render_instances(3, 4, [(1, np.ones((2, 2), bool))])


def test_the_scan_summary_counts_images_with_masks(voc: Path, tmp_path: Path, make_image):
    from featscope.datasets import read_dataset

    xml = ("<annotation><filename>{}.jpg</filename><size><width>8</width><height>6</height></size><object>"
           "<name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
           "</annotation>")
    for stem in ("a", "b", "c"):
        (voc / "Annotations" / f"{stem}.xml").write_text(xml.format(stem))
    assert read_dataset(voc).summary() == "3 images, 1 class"
    _palette_png(voc / "SegmentationClass" / "b.png", np.zeros((6, 8), np.uint8))
    assert read_dataset(voc).summary() == "3 images, 1 class; 1 with segmentation masks"
    make_image(tmp_path / "a.png", size=(12, 12))
    make_image(tmp_path / "b.png", size=(12, 12))
    images = [{"id": 1, "file_name": "a.png", "width": 12, "height": 12},
              {"id": 2, "file_name": "b.png", "width": 12, "height": 12}]
    scan = read_dataset(_coco(tmp_path, [_ann(1, 1, 1, [SQUARE]), {**_ann(2, 2, 1, None)}], images))
    assert scan.n_masks == 1 and scan.summary() == "2 images, 2 classes; 1 with segmentation masks"
