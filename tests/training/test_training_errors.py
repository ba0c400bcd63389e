"""missed_by_occlusion and its matching rule on hand-made images whose IoUs are worked out in the comments, and the
operating score the missed objects are counted at."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featscope.training.errors import OCCLUSION_BINS, match_detections, missed_by_occlusion, operating_score

CAT, DOG = 1, 2
NAN = math.nan


def _gt(boxes, labels, occlusion=None) -> dict:
    out = {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.array(labels, dtype=np.int64)}
    if occlusion is not None:
        out["occlusion"] = np.array(occlusion, dtype=np.float64)
    return out


def _pred(boxes, labels, scores) -> dict:
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.array(labels, dtype=np.int64),
            "scores": np.array(scores, dtype=np.float32)}


def _image_one():
    """One object per occlusion level, and one of unknown occlusion."""
    gt = _gt([[0, 0, 10, 10],     # 0 cat, none: found by a (IoU 1)
              [20, 0, 30, 10],    # 1 cat, low: b is below the score threshold, d overlaps it 50/150 = 1/3
              [0, 20, 10, 30],    # 2 dog, medium: c sits on it exactly but says cat
              [40, 0, 50, 10],    # 3 cat, high: e overlaps it 100/120 = 0.83
              [40, 20, 50, 30]],  # 4 dog, unknown occlusion: nothing near it
             [CAT, CAT, DOG, CAT, DOG], [0.0, 0.1, 0.3, 0.6, NAN])
    pred = _pred([[0, 0, 10, 10],    # a
                  [20, 0, 30, 10],   # b
                  [0, 20, 10, 30],   # c
                  [25, 0, 35, 10],   # d
                  [40, 0, 50, 12]],  # e
                 [CAT, CAT, CAT, CAT, CAT], [0.9, 0.4, 0.9, 0.95, 0.5])
    return gt, pred


def _image_two():
    """One prediction overlapping two objects equally, and a duplicate that VOC does not pass on."""
    gt = _gt([[0, 0, 10, 10],     # 0 cat
              [5, 0, 15, 10],     # 1 cat: f overlaps 0 and 1 by 75/125 = 0.6 each; the tie goes to 0
              [30, 0, 40, 10],    # 2 cat
              [32, 0, 42, 10]],   # 3 cat: g takes 2 (IoU 1); h overlaps 2 by 95/105 = 0.905, 3 by 85/115 = 0.739
             [CAT, CAT, CAT, CAT], [0.005, 0.25, 0.01, 0.5])
    pred = _pred([[2.5, 0, 12.5, 10],   # f
                  [30, 0, 40, 10],      # g
                  [30.5, 0, 40.5, 10]],  # h: best match 2 is taken, so it matches nothing and 3 stays missed
                 [CAT, CAT, CAT], [0.8, 0.9, 0.7])
    return gt, pred


def test_missed_objects_per_bin_on_a_hand_made_case():
    g1, p1 = _image_one()
    g2, p2 = _image_two()
    empty_gt, no_pred = _gt([], []), _pred([], [], [])
    out = missed_by_occlusion([g1, g2, empty_gt, _gt([[0, 0, 4, 4]], [DOG], [1.0])],
                              [p1, p2, _pred([[0, 0, 5, 5]], [CAT], [0.99]), no_pred])
    assert out["missed"] == [[1, 2, 4], [1, 3], [], [0]]
    # none: image 1 #0 (found), image 2 #0 (0.005, found); low: image 1 #1 (missed), image 2 #2 (0.01, found);
    # medium: image 1 #2 (missed), image 2 #1 (0.25, missed); high: image 1 #3 (found), image 2 #3 (0.5, missed),
    # image 4 #0 (1.0, the last bin's top is included, missed). Image 1 #4 has no known occlusion.
    assert [(b["name"], b["objects"], b["missed"]) for b in out["bins"]] == [
        ("none", 2, 0), ("low", 2, 1), ("medium", 2, 2), ("high", 3, 2)]
    assert [b["rate"] for b in out["bins"]] == [0.0, 0.5, 1.0, pytest.approx(2 / 3)]
    assert [(b["low"], b["high"]) for b in out["bins"]] == [(0.0, 0.01), (0.01, 0.25), (0.25, 0.5), (0.5, 1.0)]
    assert (out["iou"], out["score"], out["n_objects"], out["n_missed"], out["n_unknown"]) == (0.5, 0.5, 10, 6, 1)


def test_thresholds_move_the_answer():
    g1, p1 = _image_one()
    # score 0.4 lets b in: object 1 is found by b (IoU 1), d (0.95, taken first) only reaches 1/3 of it.
    assert missed_by_occlusion([g1], [p1], score=0.4)["missed"] == [[2, 4]]
    # IoU 0.9 loses object 3 (e overlaps it 0.83); IoU 0.3 lets d take object 1 (1/3).
    assert missed_by_occlusion([g1], [p1], iou=0.9)["missed"] == [[1, 2, 3, 4]]
    assert missed_by_occlusion([g1], [p1], iou=0.3)["missed"] == [[2, 4]]
    # IoU exactly at the threshold matches (>=): e against object 3 is 100/120.
    assert missed_by_occlusion([g1], [p1], iou=100 / 120)["missed"] == [[1, 2, 4]]


def test_matching_is_greedy_by_score_with_stable_ties():
    gt = _gt([[0, 0, 10, 10]], [CAT])
    # Two equal scores: the first given takes the object, the second is a duplicate.
    assert match_detections(gt["boxes"], gt["labels"], [[0, 0, 10, 10], [0, 0, 10, 10]], [CAT, CAT],
                            [0.7, 0.7]).tolist() == [0]
    # A higher score goes first whatever its position.
    assert match_detections(gt["boxes"], gt["labels"], [[0, 0, 10, 10], [1, 0, 10, 10]], [CAT, CAT],
                            [0.6, 0.8]).tolist() == [1]
    g2, p2 = _image_two()
    assert match_detections(g2["boxes"], g2["labels"], p2["boxes"], p2["labels"], p2["scores"]).tolist() == \
        [0, -1, 1, -1]


def test_unknown_occlusion_by_default_and_bad_input():
    out = missed_by_occlusion([_gt([[0, 0, 4, 4]], [CAT])], [_pred([], [], [])])
    assert out["missed"] == [[0]] and out["n_unknown"] == 1 and all(b["objects"] == 0 for b in out["bins"])
    assert all(b["rate"] is None for b in out["bins"])
    assert [b[0] for b in OCCLUSION_BINS] == ["none", "low", "medium", "high"]
    with pytest.raises(ValueError, match="2 ground-truth images but 1 predictions"):
        missed_by_occlusion([_gt([], []), _gt([], [])], [_pred([], [], [])])
    with pytest.raises(ValueError, match=r"occlusion must lie in \[0, 1\]"):
        missed_by_occlusion([_gt([[0, 0, 4, 4]], [CAT], [1.5])], [_pred([], [], [])])
    with pytest.raises(ValueError, match="1 ground-truth objects but 2 occlusion values"):
        missed_by_occlusion([_gt([[0, 0, 4, 4]], [CAT], [0.1, 0.2])], [_pred([], [], [])])
    with pytest.raises(ValueError, match="must not overlap"):
        missed_by_occlusion([], [], bins=[("a", 0, 0.5), ("b", 0.4, 1)])
    with pytest.raises(ValueError, match="iou must lie in"):
        missed_by_occlusion([], [], iou=0)


def test_custom_bins():
    g1, p1 = _image_one()
    out = missed_by_occlusion([g1], [p1], bins=[("visible", 0, 0.2), ("occluded", 0.2, 1)])
    assert [(b["name"], b["objects"], b["missed"]) for b in out["bins"]] == [("visible", 2, 1), ("occluded", 2, 1)]


def test_operating_score_is_the_ceiling_when_enough_boxes_reach_it():
    assert operating_score([0.9, 0.5, 0.3], 2) == 0.5  # exactly N = 2 boxes at 0.5 or above
    assert operating_score([0.9, 0.8, 0.7, 0.1], 2) == 0.5  # more than N
    assert operating_score([0.9, 0.8], 5) == 0.5  # fewer than N boxes in all, every one above 0.5: never above it
    assert operating_score([0.9, 0.6, 0.65], 2, ceiling=0.7) == 0.65  # the 2nd best under a ceiling of 0.7
    assert operating_score([0.9, 0.7, 0.65], 2, ceiling=0.7) == 0.7


def test_operating_score_is_the_nth_best_of_a_weak_detector():
    assert operating_score([0.9, 0.4, 0.3, 0.2], 3) == pytest.approx(0.3)  # one box at 0.5: the 3rd best
    assert operating_score([0.1, 0.4, 0.3], 2) == pytest.approx(0.3)  # order of the input does not matter
    assert operating_score(np.array([0.4, 0.3]), 5) == pytest.approx(0.3)  # fewer than N: the lowest
    # ties with the N-th best all count: at 0.3 four boxes are kept for N = 3
    scores = [0.4, 0.3, 0.3, 0.3, 0.1]
    at = operating_score(scores, 3)
    assert at == pytest.approx(0.3) and sum(s >= at for s in scores) == 4
    assert operating_score([], 3) == 0.5  # no box at all: it misses everything at any threshold
    assert operating_score([0.2, 0.1], 0) == 0.5  # no object to find


def test_operating_score_against_its_definition():
    """The largest threshold (a box's score, or the ceiling) no higher than the ceiling that keeps at least
    min(N, boxes) boxes, by brute force over every candidate."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        scores = np.round(rng.uniform(0, 1, rng.integers(0, 12)) ** rng.uniform(0.3, 3), 2)  # rounding: ties
        n, ceiling = int(rng.integers(0, 15)), float(rng.choice([0.5, 0.3, 1.0]))
        need = min(n, scores.size)
        ok = [t for t in {*scores.tolist(), ceiling} if t <= ceiling and (scores >= t).sum() >= need]
        assert operating_score(scores, n, ceiling) == max(ok), (scores, n, ceiling)


def test_operating_score_bad_input():
    with pytest.raises(ValueError, match="finite"):
        operating_score([0.3, NAN], 2)
    with pytest.raises(ValueError, match="one flat list"):
        operating_score([[0.3, 0.2]], 2)
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="whole number >= 0"):
            operating_score([0.3], bad)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"ceiling must lie in \(0, 1\]"):
            operating_score([0.3], 1, ceiling=bad)
