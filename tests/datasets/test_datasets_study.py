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


# ---------------------------------------------------------------- occlusion and segmentation (generator v4)

# sha256 of "<relpath> <sha256 of the file>\n" over every PNG of the SMALL sets, in relpath order, computed with
# generator version 3 (before the annotations gained occlusion and segmentation), and three of the files:
# version 4 must draw the very same images.
V3_ALL_IMAGES = "4781ebd8353934b2dfbe4d10f1bf44b7ef8f804e4301a89299945ee1e59e478a"
V3_IMAGES = {
    "pretrain/scene_00000.png": "e8a668b8f8918788a376729db2c09aa7be89e17f6a75a09171013971a195e3dd",
    "target-test/scene_00003.png": "125398005f99aa4d445c8b44d92a6840852e580d5eb4935e60805e4c3ec454c0",
    "several/star/star_0001.png": "0901f319ee32a77e0faef242cec18663fa7ee04fa6cff859321fa51ed93f1786",
}


def test_images_are_those_of_generator_version_3(sets):
    import hashlib

    digest = hashlib.sha256()
    for p in sorted(sets.root.rglob("*.png")):
        digest.update(f"{p.relative_to(sets.root).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    assert digest.hexdigest() == V3_ALL_IMAGES
    assert {rel: hashlib.sha256((sets.root / rel).read_bytes()).hexdigest() for rel in V3_IMAGES} == V3_IMAGES


def test_occlusion_and_segmentation_match_a_recomputation_from_the_painted_shapes(tmp_path, monkeypatch):
    """Record every object's solid mask as it is painted; an object's visible pixels are its solid pixels that no
    later object of its scene covers, and its occlusion is the share of its solid pixels that are not visible."""
    import numpy as np
    from pycocotools import mask as coco_mask

    from featscope.datasets import synth
    from featscope.datasets.masks import CocoMasks

    painted: list[np.ndarray] = []
    paint = synth._paint

    def recording(canvas, rng, shape, centre, radius, angle, mask, *rest):
        painted.append(mask >= 0.5)
        return paint(canvas, rng, shape, centre, radius, angle, mask, *rest)

    monkeypatch.setattr(synth, "_paint", recording)
    sets = study_datasets(tmp_path / "s", n_pretrain=6, n_pretrain_val=1, n_target_train=1, n_target_test=8,
                          n_probe=1, size=64, seed=3)
    occlusions = []
    for part in ("pretrain", "pretrain-val", "target-train", "target-test"):  # the order they are generated in
        doc = json.loads(sets.coco[part].read_text())
        names = {c["id"]: c["name"] for c in doc["categories"]}
        classes = ["background", *sorted(names.values())]
        masks = CocoMasks(sets.coco[part], void_width=0)
        for img in doc["images"]:
            anns = [a for a in doc["annotations"] if a["image_id"] == img["id"]]
            solids = painted[:len(anns)]
            del painted[:len(anns)]
            expected_classes = np.zeros((64, 64), np.uint8)
            for k, (ann, solid) in enumerate(zip(anns, solids)):
                covered = np.zeros_like(solid)
                for later in solids[k + 1:]:
                    covered |= later
                visible = solid & ~covered
                decoded = coco_mask.decode(ann["segmentation"]).astype(bool)
                np.testing.assert_array_equal(decoded, visible)
                assert ann["area"] == visible.sum()
                ys, xs = np.nonzero(visible)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
                assert ann["occlusion"] == pytest.approx(1 - visible.sum() / solid.sum(), abs=1e-6)
                expected_classes[visible] = classes.index(names[ann["category_id"]])
                occlusions.append(ann["occlusion"])
            np.testing.assert_array_equal(masks.load(img["file_name"]), expected_classes)
        scan = read_dataset(sets.coco[part])
        assert all(b.occlusion is not None for r in scan.images for b in r.boxes) and not scan.warnings
    assert 0 <= min(occlusions) and max(occlusions) <= 0.5 and any(o > 0.05 for o in occlusions)


def test_drawing_spread_over_processes_writes_the_same_bytes(tmp_path, monkeypatch):
    """The pool (used for large parts) and the serial path write byte-identical files, progress included."""
    import hashlib

    from featscope.datasets import study

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    counts = dict(n_pretrain=12, n_pretrain_val=3, n_target_train=5, n_target_test=3, n_probe=2, size=48)
    serial = study.study_datasets(tmp_path / "serial", **counts)
    monkeypatch.setattr(study, "_PARALLEL_FROM", 3)
    monkeypatch.setattr(study, "_CHUNK", 4)
    monkeypatch.setattr(study, "_workers", lambda n: 2)  # a pool of two even on a one-core machine
    seen = []
    pooled = study.study_datasets(tmp_path / "pooled", **counts, progress=lambda d, t: seen.append((d, t)))
    assert digest(serial.root) == digest(pooled.root)
    total = 12 + 3 + 5 + 3 + 3 * 2 * len(study.PRETRAIN_CLASSES)
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_cancel_during_pooled_drawing_stops_and_a_rerun_finishes(tmp_path, monkeypatch):
    from featscope.datasets import study

    monkeypatch.setattr(study, "_PARALLEL_FROM", 3)
    monkeypatch.setattr(study, "_CHUNK", 4)
    counts = dict(n_pretrain=24, n_pretrain_val=2, n_target_train=2, n_target_test=2, n_probe=1, size=48)

    def cancel(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study.study_datasets(tmp_path / "s", **counts, progress=cancel)
    sets = study.study_datasets(tmp_path / "s", **counts)  # an interrupted output is written again
    assert len(list((sets.root / "pretrain").glob("*.png"))) == 24
