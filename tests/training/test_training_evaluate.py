"""Evaluation: pycocotools AP per IoU threshold against a hand-computed toy case; top-1 with Wilson."""

from __future__ import annotations

import numpy as np
import pytest

from featscope.training.evaluate import IOU_THRESHOLDS, detection_ap, top1


def _empty():
    return {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)}


def test_errors_first():
    with pytest.raises(ValueError, match="test split is empty"):
        detection_ap([], [], 2)
    with pytest.raises(ValueError, match="ground-truth images but"):
        detection_ap([_empty()], [], 2)
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        detection_ap([_empty()], [_empty()], 1, iou_thresholds=[0.5, 1.0])
    with pytest.raises(ValueError, match="test split is empty"):
        top1([], [])
    with pytest.raises(ValueError, match="same length"):
        top1([1, 2], [1])


def test_ap_per_iou_matches_a_hand_computed_case():
    """Class 1: GT A=[0,0,10,10], B=[20,20,30,30]; detections A exactly (0.9), B with IoU 100/150=2/3 (0.8),
    and a false positive (0.7). Class 2: one GT, never detected.

    IoU <= 0.6: class 1 has precision 1 up to recall 1 -> AP 1.0. IoU >= 0.7: only A matches, so the
    interpolated precision is 1 for the 51 recall points 0.00..0.50 and 0 for the 50 above -> 51/101.
    Class 2 is 0 everywhere; the mean over the two classes is the AP.
    """
    gt = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]], float), "labels": np.array([1, 1, 2])}]
    pred = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 35], [50, 50, 60, 60]], float),
             "labels": np.array([1, 1, 1]), "scores": np.array([0.9, 0.8, 0.7])}]
    res = detection_ap(gt, pred, num_classes=2)
    assert list(res["ap"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    for t, ap in res["ap"].items():
        class1 = 1.0 if float(t) <= 0.6 else 51 / 101
        assert res["per_class"][1][IOU_THRESHOLDS.index(float(t))] == pytest.approx(class1, abs=1e-12)
        assert res["per_class"][2][IOU_THRESHOLDS.index(float(t))] == 0.0
        assert ap == pytest.approx(class1 / 2, abs=1e-12)
    assert res["n_images"] == 1 and res["n_boxes"] == 3


def test_no_detections_and_unmatched_thresholds():
    gt = [{"boxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([1])}]
    assert set(detection_ap(gt, [_empty()], 1)["ap"].values()) == {0.0}
    # thresholds summarize() could not look up (0.55 is not a float-equal grid point): still read per threshold
    res = detection_ap(gt, [{"boxes": np.array([[0, 0, 10, 12]], float), "labels": np.array([1]),
                             "scores": np.array([0.5])}], 1, iou_thresholds=[0.55, 0.85])
    assert res["ap"] == pytest.approx({"0.55": 1.0, "0.85": 0.0}, abs=1e-12)  # IoU 100/120 = 0.83


def test_top1_with_wilson_interval():
    res = top1([0, 1, 1, 2], [0, 1, 2, 2])
    assert res["top1"] == 0.75 and res["n"] == 4 and res["correct"] == 3
    assert res["ci_low"] < 0.75 < res["ci_high"]
    assert res["ci_low"] == pytest.approx(0.3006, abs=1e-3) and res["ci_high"] == pytest.approx(0.9544, abs=1e-3)
