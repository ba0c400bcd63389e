"""read_dataset on directories (imagefolder, folder): argument errors, detection, broken files,
verify modes, progress and the fingerprint of real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from featscope.datasets import FORMATS, DatasetError, detect_format, list_formats, read_dataset


@pytest.fixture
def classes_dir(tmp_path: Path, make_image) -> Path:
    """cat/a.png, cat/sub/b.png (20x10), dog/c.jpg + broken files and things to ignore."""
    root = tmp_path / "ds"
    make_image(root / "cat" / "a.png")
    make_image(root / "cat" / "sub" / "b.png", size=(20, 10))
    make_image(root / "dog" / "c.jpg")
    make_image(root / "dog" / "empty.jpg", kind="empty")
    make_image(root / "dog" / "text.png", kind="text")
    make_image(root / "dog" / "cut.jpg", size=(64, 48), kind="truncated")
    make_image(root / ".hidden" / "x.png")
    make_image(root / "dog" / ".y.png")
    (root / "dog" / "notes.txt").write_text("not listed")
    return root


# ---------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nope")


def test_unknown_format_lists_formats(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="imagefolder, coco, voc, folder, csv"):
        read_dataset(tmp_path, format="yolo")


def test_bad_verify_and_progress(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="none, header, full"):
        read_dataset(tmp_path, verify="deep")
    with pytest.raises(DatasetError, match="callable"):
        read_dataset(tmp_path, progress=3)


def test_empty_directory_names_extensions(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no image files below .*\.jpg"):
        read_dataset(tmp_path)


def test_unknown_file_suffix_lists_formats(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(DatasetError, match="pass format= one of imagefolder, coco, voc, folder, csv"):
        read_dataset(tmp_path / "list.txt")


def test_options_for_other_formats_are_refused(classes_dir: Path) -> None:
    with pytest.raises(DatasetError, match="split applies to the voc format only.*imagefolder"):
        read_dataset(classes_dir, split="train")
    with pytest.raises(DatasetError, match="images_root applies to the coco format only"):
        read_dataset(classes_dir, images_root=classes_dir)
    with pytest.raises(DatasetError, match="reads a .json file"):
        read_dataset(classes_dir, format="coco")


def test_imagefolder_without_class_folders(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="format='folder'"):
        read_dataset(tmp_path, format="imagefolder")


def test_only_broken_images(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", kind="empty")
    make_image(tmp_path / "b.png", kind="text")
    with pytest.raises(DatasetError, match="none of the 2 images .* is readable.*a.png: empty file"):
        read_dataset(tmp_path)


# ---------------------------------------------------------------- detection


def test_formats_registry() -> None:
    assert FORMATS == ("imagefolder", "coco", "voc", "folder", "csv")
    assert list_formats() == list(FORMATS)


def test_detection_of_directories(tmp_path: Path, make_image, classes_dir: Path) -> None:
    assert detect_format(classes_dir) == "imagefolder"
    make_image(tmp_path / "one" / "images" / "a.png")  # a single sub-folder is a container, not a class
    assert detect_format(tmp_path / "one") == "folder"
    make_image(tmp_path / "mixed" / "a" / "x.png")
    make_image(tmp_path / "mixed" / "b" / "y.png")
    make_image(tmp_path / "mixed" / "loose.png")
    assert detect_format(tmp_path / "mixed") == "folder"
    assert read_dataset(tmp_path / "mixed").format == "folder"


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_labels_and_skips(classes_dir: Path, snapshot) -> None:
    before = snapshot(classes_dir)
    scan = read_dataset(classes_dir)
    assert scan.format == "imagefolder" and scan.root == classes_dir and scan.annotations is None
    assert [(r.relpath, r.label, r.width, r.height) for r in scan.images] == [
        ("cat/a.png", "cat", 16, 12), ("cat/sub/b.png", "cat", 20, 10), ("dog/c.jpg", "dog", 16, 12),
        ("dog/cut.jpg", "dog", 64, 48),  # header-only verification does not see the truncation
    ]
    assert [(r.relpath, r.reason) for r in scan.skipped] == [("dog/empty.jpg", "empty file"),
                                                              ("dog/text.png", "not an image")]
    assert all(r.size_bytes == (classes_dir / r.relpath).stat().st_size for r in scan.images + scan.skipped)
    assert scan.classes == ["cat", "dog"] and scan.warnings == []
    assert scan.summary() == "4 images, 2 classes; 2 skipped: 1 empty file, 1 not an image"
    assert snapshot(classes_dir) == before


def test_verify_full_catches_truncation(classes_dir: Path) -> None:
    scan = read_dataset(classes_dir, verify="full")
    assert [(r.relpath, r.reason) for r in scan.skipped] == [
        ("dog/cut.jpg", "truncated"), ("dog/empty.jpg", "empty file"), ("dog/text.png", "not an image")]


def test_verify_none_only_stats(classes_dir: Path) -> None:
    scan = read_dataset(classes_dir, verify="none")
    assert len(scan.images) == 6 and scan.skipped == []
    assert all(r.width is None and r.height is None for r in scan.images)
    # the fingerprint depends on the files, not on how carefully they were checked
    assert scan.fingerprint == read_dataset(classes_dir, verify="full").fingerprint


def test_loose_files_in_imagefolder_warn(classes_dir: Path, make_image) -> None:
    make_image(classes_dir / "loose.png")
    scan = read_dataset(classes_dir, format="imagefolder")
    assert "loose.png" not in [r.relpath for r in scan.images]
    assert len(scan.warnings) == 1 and "1 image file(s) directly in" in scan.warnings[0]


def test_folder_is_unlabelled(classes_dir: Path) -> None:
    scan = read_dataset(classes_dir, format="folder", verify="none")
    assert scan.classes == [] and {r.label for r in scan.images} == {None}
    assert [r.relpath for r in scan.images][:2] == ["cat/a.png", "cat/sub/b.png"]


def test_symlinked_directory_cycle_is_walked_once(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a" / "x.png")
    make_image(tmp_path / "b" / "y.png")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert [r.relpath for r in read_dataset(tmp_path, verify="none").images] == ["a/x.png", "b/y.png"]


# ---------------------------------------------------------------- progress, threads


def test_progress_and_threaded_checking(tmp_path: Path, make_image) -> None:
    for i in range(40):  # above the threshold where checking runs on a thread pool
        make_image(tmp_path / f"c{i % 2}" / f"{i:02d}.png", size=(4 + i, 4), kind="text" if i == 7 else "ok")
    calls: list[tuple[int, int]] = []
    scan = read_dataset(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 40) for i in range(41)]
    assert len(scan.images) == 39 and [r.relpath for r in scan.skipped] == ["c1/07.png"]
    assert all(r.width == 4 + int(Path(r.relpath).stem) for r in scan.images)  # records match their files


# ---------------------------------------------------------------- fingerprint on real files


def test_fingerprint_tracks_the_files(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "cat" / "a.png")
    make_image(tmp_path / "dog" / "b.png")
    bad = make_image(tmp_path / "dog" / "bad.png", kind="text")
    fp = read_dataset(tmp_path).fingerprint
    assert read_dataset(tmp_path).fingerprint == fp  # stable

    st = (tmp_path / "cat" / "a.png").stat()
    os.utime(tmp_path / "cat" / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = read_dataset(tmp_path).fingerprint
    assert touched != fp

    os.rename(tmp_path / "cat" / "a.png", tmp_path / "dog" / "a.png")  # relabelled (path changes too)
    (tmp_path / "cat").rmdir()
    make_image(tmp_path / "cat" / "c.png")
    moved = read_dataset(tmp_path).fingerprint
    assert moved not in (fp, touched)

    make_image(tmp_path / "cat" / "d.png")
    added = read_dataset(tmp_path).fingerprint
    bad.unlink()  # removing a skipped file counts too
    removed = read_dataset(tmp_path).fingerprint
    assert len({fp, touched, moved, added, removed}) == 5
