"""The study's synthetic sets: refusals, determinism, one class per pre-training scene, other shapes in the
target set, the probe sets, and that a complete output is left untouched when asked again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featscope.datasets import DatasetError, read_dataset
from featscope.datasets.study import PRETRAIN_CLASSES, TARGET_CLASSES, study_datasets

SMALL = dict(n_pretrain=12, n_pretrain_val=3, n_target_train=5, n_target_test=4, n_probe=2, size=64, seed=1)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return study_datasets(tmp_path_factory.mktemp("study") / "out", **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="pretrain must be an integer >= 1, got 0"):
        study_datasets(tmp_path / "a", **{**SMALL, "n_pretrain": 0})
    with pytest.raises(ValueError, match="size must be an integer >= 32"):
        study_datasets(tmp_path / "a", **{**SMALL, "size": 16})
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a study_datasets output"):
        study_datasets(tmp_path / "foreign", **SMALL)


def test_deterministic_and_left_alone_when_complete(sets, tmp_path):
    again = study_datasets(tmp_path / "again", **SMALL)
    assert _files(again.root) == _files(sets.root)
    stamp = {p: p.stat().st_mtime_ns for p in sets.root.rglob("*.png")}
    study_datasets(sets.root, **SMALL)  # complete: no file is rewritten (data set fingerprints stay put)
    assert {p: p.stat().st_mtime_ns for p in sets.root.rglob("*.png")} == stamp
    with pytest.raises(DatasetError, match="made with other arguments"):
        study_datasets(sets.root, **{**SMALL, "seed": 2})


def test_pretraining_scenes_hold_one_class_with_one_to_four_instances(sets):
    scan = read_dataset(sets.coco["pretrain"])
    assert len(scan.images) == 12 and scan.classes == sorted(PRETRAIN_CLASSES)
    assert sorted(r.label for r in scan.images) == sorted(PRETRAIN_CLASSES * 2)  # balanced
    for r in scan.images:
        assert 1 <= len(r.boxes) <= 4 and {b.label for b in r.boxes} == {r.label}
        assert all(0 <= b.x0 < b.x1 <= 64 and 0 <= b.y0 < b.y1 <= 64 for b in r.boxes)
    sizes = [b.x1 - b.x0 for r in scan.images for b in r.boxes]
    assert max(sizes) > 2 * min(sizes)  # varied sizes


def test_target_set_is_another_distribution(sets):
    for part in ("target-train", "target-test"):
        scan = read_dataset(sets.coco[part])
        assert {b.label for r in scan.images for b in r.boxes} <= set(TARGET_CLASSES)
    assert not set(TARGET_CLASSES) & set(PRETRAIN_CLASSES)
    doc = json.loads(sets.coco["target-test"].read_text())
    assert len(doc["images"]) == 4


def test_probe_sets(sets):
    for part in ("single", "several", "small"):
        scan = read_dataset(sets.folders[part])
        assert scan.format == "imagefolder" and scan.classes == sorted(PRETRAIN_CLASSES) and len(scan.images) == 12
    assert sets.counts["single"] == 12


def _background_roughness(root, record) -> float:
    """Mean absolute difference of horizontally adjacent pixels outside every box (the background's texture)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(root / record.relpath).convert("RGB"), dtype=np.float64)
    outside = np.ones(pixels.shape[:2], bool)
    for b in record.boxes:
        outside[int(b.y0):int(np.ceil(b.y1)), int(b.x0):int(np.ceil(b.x1))] = False
    steps = np.abs(np.diff(pixels, axis=1)).mean(axis=2)
    return float(steps[outside[:, 1:] & outside[:, :-1]].mean())


def test_pretraining_backgrounds_are_smooth_and_the_targets_cluttered(sets):
    # pre-training scenes: a colour field with faint noise (a ResNet learns their shapes from scratch in minutes);
    # the target set: textured clutter, another distribution
    pretrain, target = read_dataset(sets.coco["pretrain"]), read_dataset(sets.coco["target-train"])
    smooth = [_background_roughness(pretrain.root, r) for r in pretrain.images]
    cluttered = [_background_roughness(target.root, r) for r in target.images]
    assert max(smooth) < 8 and sum(cluttered) / len(cluttered) > 1.5 * sum(smooth) / len(smooth), (smooth, cluttered)
