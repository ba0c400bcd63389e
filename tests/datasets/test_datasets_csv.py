"""CSV reader: malformed files first (each error names its line), then header/headerless reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from featscope.datasets import DatasetError, detect_format, read_dataset


@pytest.fixture
def images(tmp_path: Path, make_image) -> Path:
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "sub" / "b.jpg", size=(20, 10))
    make_image(tmp_path / "broken.png", kind="text")
    return tmp_path


def _csv(root: Path, text: str, name: str = "list.csv") -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,label\na.png,cat\nsub/b.jpg,\"dog\n", r"line 3: malformed CSV"),
        ("path,label\na.png,cat\n\"sub/b.jpg\"x,dog\n", r"line 3: malformed CSV"),
        ("path,label\na.png,cat,extra\n", r"line 2: expected 2 column\(s\), found 3"),
        ("path,label\n,cat\n", r"line 2: the path cell is empty"),
        ("filename,label\na.png,cat\n", r"line 1: .* looks like a header but has no 'path' column"),
        ("a.png,cat,x\n", r"line 1: a CSV without a header must have the columns path\[,label\], found 3"),
        ("\n\n", "lists no images"),
        ("path,label\n../x.png,cat\n", r"line 2: \.\./x\.png is not below .*move the CSV"),
    ],
)
def test_malformed_csv(images: Path, text: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        read_dataset(_csv(images, text))


def test_absolute_path_outside_the_csv_directory(images: Path, tmp_path_factory, make_image) -> None:
    elsewhere = make_image(tmp_path_factory.mktemp("elsewhere") / "x.png")
    with pytest.raises(DatasetError, match="line 2: .* images must lie below the CSV's directory"):
        read_dataset(_csv(images, f"path\n{elsewhere}\n"))


def test_not_utf8(images: Path) -> None:
    path = images / "latin.csv"
    path.write_bytes("path,label\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(path)


def test_csv_must_be_a_file(images: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(images / "nope.csv", format="csv")


# ---------------------------------------------------------------- reading


def test_header_with_labels_and_extra_columns(images: Path, snapshot) -> None:
    path = _csv(images, "\ufeffsplit,Path,label\ntrain,a.png,cat\ntrain,sub/b.jpg,dog\nval,missing.png,cat\n"
                        "val,broken.png,dog\n\n")
    before = snapshot(images)
    assert detect_format(path) == "csv"
    scan = read_dataset(path)
    assert scan.format == "csv" and scan.root == images and scan.annotations == path
    assert [(r.relpath, r.label, r.width) for r in scan.images] == [("a.png", "cat", 16), ("sub/b.jpg", "dog", 20)]
    assert [(r.relpath, r.reason) for r in scan.skipped] == [("broken.png", "not an image"),
                                                              ("missing.png", "file not found")]
    assert scan.classes == ["cat", "dog"]
    assert scan.summary() == "2 images, 2 classes; 2 skipped: 1 file not found, 1 not an image"
    assert snapshot(images) == before


def test_headerless_two_and_one_columns(images: Path) -> None:
    scan = read_dataset(_csv(images, "a.png,cat\nsub/b.jpg,\n"))
    assert [(r.relpath, r.label) for r in scan.images] == [("a.png", "cat"), ("sub/b.jpg", None)]
    scan = read_dataset(_csv(images, "sub\\b.jpg\n"))  # backslash separators are accepted
    assert [(r.relpath, r.label) for r in scan.images] == [("sub/b.jpg", None)] and scan.classes == []


def test_absolute_path_below_the_csv_directory(images: Path) -> None:
    scan = read_dataset(_csv(images, f"path,label\n{images / 'sub' / 'b.jpg'},dog\n"))
    assert [(r.relpath, r.label) for r in scan.images] == [("sub/b.jpg", "dog")]


def test_quoted_commas_and_repeated_paths(images: Path, make_image) -> None:
    make_image(images / "x, y.png")
    scan = read_dataset(_csv(images, 'path,label\n"x, y.png",cat\na.png,dog\n./a.png,cat\n'))
    assert [(r.relpath, r.label) for r in scan.images] == [("a.png", "dog"), ("x, y.png", "cat")]
    assert scan.warnings == ["list.csv, line 4: a.png already listed on line 3; this row is ignored"]


def test_relabelling_changes_the_fingerprint(images: Path) -> None:
    path = _csv(images, "path,label\na.png,cat\n")
    fp = read_dataset(path).fingerprint
    assert read_dataset(path).fingerprint == fp
    _csv(images, "path,label\na.png,dog\n")
    assert read_dataset(path).fingerprint != fp
