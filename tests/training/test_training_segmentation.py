"""Segmentation scores against a mask scored by hand, and a tiny DeepLab run that learns an easy mask set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.training.segmentation import (TrimapAccuracy, confusion_matrix, default_band_widths,
                                             segmentation_scores, void_distance)

V = 255
CLASSES = ["background", "a", "b", "c"]  # "c" is in neither truth nor prediction
TRUTH = np.array([[0, 0, 0, 0, 0],
                  [0, 1, 1, V, 0],
                  [0, 1, 1, V, 2],
                  [0, 0, 0, 0, 2]], dtype=np.uint8)
PRED = np.array([[0, 0, 0, 1, 0],
                 [0, 1, 0, 2, 0],
                 [0, 1, 1, 0, 2],
                 [0, 0, 0, 0, 0]], dtype=np.uint8)


def test_confusion_matrix_iou_and_pixel_accuracy_by_hand():
    cm = confusion_matrix(TRUTH, PRED, 4)
    # rows: true class, columns: predicted; the two void pixels count nowhere
    assert cm.tolist() == [[11, 1, 0, 0], [1, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    s = segmentation_scores(cm, CLASSES)
    iou = {"background": 11 / 14, "a": 3 / 5, "b": 1 / 2, "c": None}  # TP / (row + column - TP)
    assert s["per_class_iou"].keys() == iou.keys()
    for c, v in iou.items():
        assert s["per_class_iou"][c] == (pytest.approx(v) if v is not None else None)
    assert s["miou"] == pytest.approx((11 / 14 + 3 / 5 + 1 / 2) / 3)  # "c" left out of the mean
    assert s["pixel_accuracy"] == pytest.approx(15 / 18) and s["pixels"] == 18


def test_a_class_only_predicted_counts_as_zero():
    truth, pred = np.zeros((2, 2), np.uint8), np.array([[0, 3], [0, 0]], np.uint8)
    s = segmentation_scores(confusion_matrix(truth, pred, 4), CLASSES)
    assert s["per_class_iou"] == {"background": 0.75, "a": None, "b": None, "c": 0.0}
    assert s["miou"] == pytest.approx(0.375)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(TRUTH, PRED[:3], 4)
    with pytest.raises(ValueError, match=r"true class indices must be 0..1 or 255"):
        confusion_matrix(TRUTH, np.zeros_like(PRED), 2)
    with pytest.raises(ValueError, match="no non-void pixels"):
        segmentation_scores(np.zeros((4, 4), np.int64), CLASSES)
    with pytest.raises(ValueError, match="band widths must be positive"):
        TrimapAccuracy([0, 2])


def test_trimap_and_anti_trimap_by_hand():
    # distance of each non-void pixel to the nearest void pixel (1,3) or (2,3), computed by hand
    s2, s5, s10 = 2 ** 0.5, 5 ** 0.5, 10 ** 0.5
    expected = np.array([[s10, s5, s2, 1, s2],
                         [3, 2, 1, 0, 1],
                         [3, 2, 1, 0, 1],
                         [s10, s5, s2, 1, s2]])
    np.testing.assert_allclose(void_distance(TRUTH), expected)
    bands = TrimapAccuracy([1, 2, 4])
    bands.update(TRUTH, PRED)
    res = bands.result()
    # width 1: (0,3) x, (1,2) x, (1,4), (2,2), (2,4), (3,3) -> 4/6; the other 12 pixels: 11 right
    # width 2: adds (0,2), (0,4), (3,2), (3,4) x, (1,1), (2,1) -> 9/12; outside: 6/6
    # width 4: every non-void pixel -> 15/18; nothing outside
    assert res["trimap"] == [{"width": 1, "accuracy": pytest.approx(4 / 6), "pixels": 6},
                             {"width": 2, "accuracy": pytest.approx(9 / 12), "pixels": 12},
                             {"width": 4, "accuracy": pytest.approx(15 / 18), "pixels": 18}]
    assert res["anti_trimap"] == [{"width": 1, "accuracy": pytest.approx(11 / 12), "pixels": 12},
                                  {"width": 2, "accuracy": 1.0, "pixels": 6},
                                  {"width": 4, "accuracy": None, "pixels": 0}]
    bands.update(np.zeros((2, 2), np.uint8), np.array([[0, 1], [0, 0]], np.uint8))  # no void: all "far"
    res = bands.result()
    assert res["trimap"][0]["pixels"] == 6 and res["anti_trimap"][0] == {"width": 1, "accuracy": 14 / 16,
                                                                          "pixels": 16}


def test_void_distance_equals_brute_force():
    rng = np.random.default_rng(3)
    truth = rng.choice([0, 1, V], size=(9, 11), p=[0.5, 0.4, 0.1]).astype(np.uint8)
    voids = np.argwhere(truth == V)
    brute = np.array([[0.0 if truth[r, c] == V else np.sqrt(((voids - (r, c)) ** 2).sum(1)).min()
                       for c in range(11)] for r in range(9)])
    np.testing.assert_allclose(void_distance(truth), brute)
    assert np.isinf(void_distance(np.zeros((3, 3), np.uint8))).all()


def test_default_band_widths_follow_the_image_size():
    assert default_band_widths(32) == (1, 2, 4)
    assert default_band_widths(64) == (1, 2, 4, 8)
    assert default_band_widths(128) == (1, 2, 4, 8, 16)
    assert default_band_widths(500) == (1, 2, 4, 8, 16, 32)


# ---------------------------------------------------------------------------------------- a run that learns

SIZE = 64


def _square(i: int) -> tuple[Image.Image, np.ndarray]:
    """Image ``i``: one bright square (28-44 px) on a dark noisy background; its mask with a 1-px void edge."""
    rng = np.random.default_rng(1000 + i)
    side = int(rng.integers(28, 45))
    y, x = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
    pixels = rng.integers(0, 60, size=(SIZE, SIZE, 3)).astype(np.uint8)
    pixels[y:y + side, x:x + side] = rng.integers(190, 256, size=(side, side, 3))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y:y + side, x:x + side] = V
    mask[y + 1:y + side - 1, x + 1:x + side - 1] = 1
    return Image.fromarray(pixels), mask


def _index(path: Path) -> int:
    return int(Path(path).stem)


def test_a_tiny_segmentation_run_learns(tmp_path):
    from featscope.training.data import Sample
    from featscope.training.loop import fit, read_metrics
    from featscope.training.models import initial_trunk
    from featscope.training.presets import resolve_config
    from featscope.training.tasks import make_task

    cfg = resolve_config("finetune-seg", "cpu-demo", dict(
        image_size=SIZE, batch_size=8, epochs=4, lr=0.003, warmup_iters=2, num_workers=0, threads=1, log_every=1,
        checkpoint_every=100))
    train = [Sample(Path(f"/mem/{i}.png")) for i in range(64)]
    test = [Sample(Path(f"/mem/{i}.png")) for i in range(500, 516)]
    task = make_task("finetune-seg", cfg, ["background", "square"], train, initial_trunk("resnet18", 0),
                     "a seeded random trunk", loader=lambda p: _square(_index(p))[0],
                     masks=lambda p: _square(_index(p))[1])
    image, mask = task.train_data()[(3, 0)]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8 and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) == {0, 1, V}
    result = fit(task, cfg.loop(), tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert len(losses) == result.iterations == 32
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses  # measured: 0.69 -> 0.50
    ev = task.evaluate(result.model, test, torch.device("cpu"))
    truths = np.stack([_square(_index(s.path))[1] for s in test])
    background = ((truths == 0).sum() / (truths != V).sum())  # all-background: IoU = its share, square's IoU 0
    trivial = background / 2
    # measured: mIoU 0.44 against 0.35, the square's IoU 0.22 (a random ResNet-18 trunk, 32 steps, stride-32
    # features of 64-px images: 2x2 cells, so the masks come out blobby)
    assert ev["miou"] > trivial + 0.05, (ev["miou"], trivial)
    assert ev["per_class_iou"]["square"] > 0.1 and ev["output_stride"] == 32 and ev["n"] == 16
    assert [r["width"] for r in ev["trimap"]] == [1, 2, 4, 8] == [r["width"] for r in ev["anti_trimap"]]
    for near, far in zip(ev["trimap"], ev["anti_trimap"]):  # the bands split the non-void pixels
        assert near["pixels"] + far["pixels"] == (truths != V).sum()
    json.dumps(ev)  # a run's result is stored as JSON


def test_segmenter_strides_and_trunk():
    from featscope.training.models import build_segmenter, initial_trunk, load_trunk, segmenter_stride, trunk_state

    assert segmenter_stride("resnet50", None) == 16 and segmenter_stride("resnet18", None) == 32
    with pytest.raises(ValueError, match="resnet18 cannot dilate"):
        segmenter_stride("resnet18", 16)
    x = torch.rand(1, 3, 64, 64)
    for arch, stride in (("resnet50", 8), ("resnet50", 16), ("resnet18", 32)):
        net = build_segmenter(arch, 3, output_stride=stride).eval()
        with torch.no_grad():
            assert net.backbone(x)["out"].shape[-1] == 64 // stride
            assert net(x)["out"].shape == (1, 3, 64, 64)  # upsampled to the input
    trunk = initial_trunk("resnet18", 7)
    net = build_segmenter("resnet18", 2, frozen_bn=True)
    load_trunk(net, trunk, "a test trunk")
    got = trunk_state(net)
    assert set(got) == {k for k in trunk if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(got[k], trunk[k]) for k in got)


def test_a_resumed_segmentation_run_equals_the_uninterrupted_one(tmp_path):
    """The seeded joint flip and the loop's checkpoint make a cut-and-resumed run end with the same weights."""
    from featscope.training.data import Sample
    from featscope.training.loop import CHECKPOINT, fit, load_checkpoint
    from featscope.training.models import initial_trunk
    from featscope.training.presets import resolve_config
    from featscope.training.tasks import make_task

    cfg = resolve_config("finetune-seg", "cpu-demo", dict(image_size=32, batch_size=4, epochs=2, lr=0.003,
                                                          warmup_iters=2, num_workers=0, threads=1,
                                                          checkpoint_every=3))
    samples = [Sample(Path(f"/mem/{i}.png")) for i in range(12)]

    def task():
        return make_task("finetune-seg", cfg, ["background", "square"], samples, initial_trunk("resnet18", 0), "seed 0",
                         loader=lambda p: _square(_index(p))[0], masks=lambda p: _square(_index(p))[1])

    class Stop(Exception):
        pass

    calls = [0]

    def stop_after_4():
        calls[0] += 1
        if calls[0] > 4:
            raise Stop()

    whole = fit(task(), cfg.loop(), tmp_path / "whole", identity="same").model.state_dict()
    with pytest.raises(Stop):
        fit(task(), cfg.loop(), tmp_path / "cut", identity="same", check=stop_after_4)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["iteration"] == 3
    resumed = fit(task(), cfg.loop(), tmp_path / "cut", identity="same")
    assert resumed.resumed_from == 3 and resumed.iterations == 6
    state = resumed.model.state_dict()
    assert state.keys() == whole.keys()
    assert max(float((state[k].double() - whole[k].double()).abs().max()) for k in whole if whole[k].numel()) <= 1e-6
