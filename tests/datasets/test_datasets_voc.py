"""Pascal VOC reader: layout errors first, then the 1-based box conversion, labels and bad XML."""

from __future__ import annotations

from pathlib import Path

import pytest

from featscope.datasets import Box, DatasetError, detect_format, read_dataset


def _xml(filename: str, objects: list[tuple[str, tuple[float, float, float, float]]], size=(64, 48)) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


@pytest.fixture
def voc(tmp_path: Path, make_image) -> Path:
    root = tmp_path / "VOC2007"
    ann = root / "Annotations"
    ann.mkdir(parents=True)
    for stem in ("000001", "000002", "000003"):
        make_image(root / "JPEGImages" / f"{stem}.jpg", size=(64, 48))
    # 1-based inclusive: xmin=1..xmax=10 covers 10 columns -> x0=0, x1=10
    (ann / "000001.xml").write_text(_xml("000001.jpg", [("dog", (1, 1, 10, 20)), ("cat", (11, 11, 40, 40))]))
    (ann / "000002.xml").write_text(_xml("000002.jpg", [("cat", (50, 30, 80, 48)), ("bird", (70, 60, 90, 70))]))
    (ann / "000003.xml").write_text("<annotation><filename>000003.jpg</annotation>")
    (ann / "000004.xml").write_text(_xml("000004.jpg", [("cat", (1, 1, 5, 5))]))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000001\n000002\n\n")
    (root / "ImageSets" / "Main" / "cat_train.txt").write_text("000001  1\n000002 -1\n")
    return root


# ---------------------------------------------------------------- errors


def test_missing_jpegimages(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DatasetError, match="no JPEGImages/ directory"):
        read_dataset(tmp_path, format="voc")


def test_no_annotations(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="holds no .xml files"):
        read_dataset(tmp_path)


def test_unknown_split_lists_available_ones(voc: Path) -> None:
    with pytest.raises(DatasetError, match="available splits: train "):
        read_dataset(voc, split="val")


# ---------------------------------------------------------------- reading


def test_boxes_labels_and_skips(voc: Path, snapshot) -> None:
    before = snapshot(voc)
    assert detect_format(voc) == "voc"
    scan = read_dataset(voc)
    assert scan.format == "voc" and scan.root == voc and scan.annotations == voc / "Annotations"
    first, second = scan.images
    assert first.relpath == "JPEGImages/000001.jpg"
    assert first.boxes == (Box("dog", 0, 0, 10, 20), Box("cat", 10, 10, 40, 40))
    assert first.label == "cat"  # 30x30 beats 10x20
    assert second.boxes == (Box("cat", 49, 29, 64, 48),)  # clipped; the bird lies wholly outside
    assert second.label == "cat"
    assert [(r.relpath, r.reason) for r in scan.skipped] == [
        ("JPEGImages/000003.jpg", "bad annotation"), ("JPEGImages/000004.jpg", "file not found")]
    assert "Annotations/000003.xml: mismatched tag" in scan.skipped[0].error
    assert scan.classes == ["bird", "cat", "dog"]
    assert scan.warnings == [
        "Annotations/000002.xml: object 0 (cat): bndbox xmin=50 ymin=30 xmax=80 ymax=48 (1-based, inclusive) "
        "extends outside the 64x48 image; clipped",
        "Annotations/000002.xml: object 1 (bird): bndbox xmin=70 ymin=60 xmax=90 ymax=70 (1-based, inclusive) "
        "lies outside the 64x48 image; dropped",
    ]
    assert scan.summary() == "2 images, 3 classes; 2 skipped: 1 bad annotation, 1 file not found; 2 annotation warnings"
    assert snapshot(voc) == before


def test_split_selects_ids(voc: Path) -> None:
    scan = read_dataset(voc, split="train")
    assert [r.relpath for r in scan.images] == ["JPEGImages/000001.jpg", "JPEGImages/000002.jpg"]
    assert scan.skipped == []


def test_split_with_unannotated_id(voc: Path) -> None:
    (voc / "ImageSets" / "Main" / "extra.txt").write_text("000001\n000009\n")
    scan = read_dataset(voc, split="extra")
    assert [(r.relpath, r.reason) for r in scan.skipped] == [("Annotations/000009.xml", "file not found")]


def test_filename_falls_back_to_the_id(voc: Path, make_image) -> None:
    make_image(voc / "JPEGImages" / "000005.png", size=(64, 48))
    (voc / "Annotations" / "000005.xml").write_text(_xml("wrong_name.jpg", [("dog", (2, 2, 4, 4))]))
    scan = read_dataset(voc)
    assert "JPEGImages/000005.png" in [r.relpath for r in scan.images]


def test_object_without_box_is_dropped_with_warning(voc: Path) -> None:
    (voc / "Annotations" / "000001.xml").write_text(
        "<annotation><filename>000001.jpg</filename><object><name>cat</name></object></annotation>")
    scan = read_dataset(voc, split="train")
    assert scan.images[0].boxes == () and scan.images[0].label is None
    assert "Annotations/000001.xml: object 0 (cat): <bndbox> needs numeric" in scan.warnings[0]
