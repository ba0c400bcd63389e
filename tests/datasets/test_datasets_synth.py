"""Synthetic shapes: refusals first, then determinism, counts, box validity and read-back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featscope.datasets import SYNTH_CLASSES, DatasetError, read_dataset, synth_dataset

SMALL = dict(n_scenes=16, n_per_class=2, size=128, seed=3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synth_dataset(tmp_path_factory.mktemp("synth") / "out", **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("bad", [dict(n_scenes=-1), dict(size=16), dict(n_per_class=1.5), dict(seed=-2)])
def test_bad_arguments(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError):
        synth_dataset(tmp_path / "out", **{**SMALL, **bad})


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty and is not a synth_dataset output"):
        synth_dataset(tmp_path, n_scenes=1, n_per_class=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_refuses_other_arguments_and_foreign_files(tmp_path: Path) -> None:
    synth_dataset(tmp_path, n_scenes=2, n_per_class=1, seed=1)
    with pytest.raises(DatasetError, match="made with n_scenes=2, n_per_class=1, size=128, seed=1"):
        synth_dataset(tmp_path, n_scenes=2, n_per_class=1, seed=2)
    (tmp_path / "scenes" / "extra.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="did not write .*scenes/extra.png"):
        synth_dataset(tmp_path, n_scenes=2, n_per_class=1, seed=1)


# ---------------------------------------------------------------- determinism


def test_deterministic_and_idempotent(synth, tmp_path: Path) -> None:
    reference = _files(synth.root)
    again = synth_dataset(tmp_path / "again", **SMALL)
    assert _files(again.root) == reference  # byte-identical in a fresh directory
    synth_dataset(synth.root, **SMALL)      # and re-running into its own output is fine
    assert _files(synth.root) == reference
    other = synth_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert _files(other.root)["scenes.json"] != reference["scenes.json"]


def test_progress_counts_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    synth_dataset(tmp_path, n_scenes=3, n_per_class=1, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 13) for i in range(1, 14)]


# ---------------------------------------------------------------- content


def test_counts_and_layout(synth) -> None:
    assert (synth.n_scenes, synth.n_single) == (16, 20)
    assert len(list(synth.scenes_dir.glob("*.png"))) == 16
    assert sorted(p.name for p in synth.classification_dir.iterdir()) == sorted(SYNTH_CLASSES)
    assert all(len(list((synth.classification_dir / c).glob("*.png"))) == 2 for c in SYNTH_CLASSES)
    assert len(SYNTH_CLASSES) == 10 and len(set(SYNTH_CLASSES)) == 10


def test_coco_json_is_valid_and_boxes_fit(synth) -> None:
    coco = json.loads(synth.coco_json.read_text())
    assert [c["name"] for c in coco["categories"]] == list(SYNTH_CLASSES)
    assert len(coco["images"]) == 16
    per_image = {img["id"]: 0 for img in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] += 1
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
        assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
    assert all(1 <= n <= 4 for n in per_image.values())
    assert len(set(per_image.values())) >= 3  # the instance count really varies
    sides = [max(a["bbox"][2], a["bbox"][3]) for a in coco["annotations"]]
    assert min(sides) <= 15 and max(sides) >= 40  # small objects and large ones


def test_boxes_enclose_changed_pixels(synth) -> None:
    """Each box's content differs from a flat background: objects are actually drawn there."""
    coco = json.loads(synth.coco_json.read_text())
    for img in coco["images"][:4]:
        pixels = np.asarray(Image.open(synth.scenes_dir / img["file_name"]), dtype=np.float32)
        assert pixels.shape == (128, 128, 3)
        for ann in (a for a in coco["annotations"] if a["image_id"] == img["id"]):
            x, y, w, h = ann["bbox"]
            assert pixels[y:y + h, x:x + w].std() > 5.0


def test_reads_back_cleanly(synth) -> None:
    scenes = read_dataset(synth.coco_json)
    assert scenes.format == "coco" and scenes.classes == sorted(SYNTH_CLASSES)
    assert scenes.root == synth.scenes_dir  # found without images_root: the folder named like the JSON
    explicit = read_dataset(synth.coco_json, images_root=synth.scenes_dir)
    assert explicit.fingerprint == scenes.fingerprint and explicit.warnings == []
    assert len(scenes.images) == 16 and scenes.skipped == [] and scenes.warnings == []
    assert all(1 <= len(r.boxes) <= 4 and r.label in SYNTH_CLASSES for r in scenes.images)
    single = read_dataset(synth.classification_dir, verify="full")
    assert single.format == "imagefolder" and single.classes == sorted(SYNTH_CLASSES)
    assert len(single.images) == 20 and single.skipped == [] and single.warnings == []
    assert {(r.width, r.height) for r in single.images} == {(128, 128)}
