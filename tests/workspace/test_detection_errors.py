"""Two runs' detections compared image by image: matches at a score threshold, the common images, Fig. 8's picks
(images where one detector finds an occluded object the other misses), on hand-made documents."""

from __future__ import annotations

import pytest

from featscope.workspace.detection_errors import OCCLUDED, compare, matches


def gt(label, box, occlusion=None):
    return {"label": label, "box": box, "occlusion": occlusion}


def pred(label, box, score):
    return {"label": label, "box": box, "score": score}


def image(relpath, truth, preds):
    return {"relpath": relpath, "width": 100, "height": 100, "gt": truth, "pred": preds}


TRUTH = [gt("star", [0, 0, 10, 10], 0.0), gt("star", [50, 50, 60, 60], 0.3), gt("cross", [20, 20, 40, 40], None)]


def test_matches_apply_the_score_threshold_class_and_iou():
    im = image("a.png", TRUTH, [pred("star", [0, 0, 10, 10], 0.9),       # object 0
                                pred("star", [50, 50, 60, 61], 0.4),     # object 1, IoU 10/11, but a low score
                                pred("star", [20, 20, 40, 40], 0.95),    # object 2's box, wrong class
                                pred("cross", [20, 20, 30, 40], 0.8)])   # object 2, IoU 0.5 exactly
    assert matches(im, score=0.5) == [0, -1, 3]
    assert matches(im, score=0.3) == [0, 1, 3]
    assert matches(im, score=0.85) == [0, -1, -1]
    assert matches(im, score=0.5, iou=0.6) == [0, -1, -1]
    assert matches(image("b.png", [], [pred("star", [0, 0, 1, 1], 0.9)]), score=0.5) == []
    assert matches(image("c.png", TRUTH, []), score=0.5) == [-1, -1, -1]


def test_a_duplicate_does_not_take_a_second_object():
    im = image("a.png", [gt("star", [0, 0, 10, 10]), gt("star", [0, 0, 10, 9])],
               [pred("star", [0, 0, 10, 10], 0.9), pred("star", [0, 0, 10, 10], 0.8)])
    # both predictions overlap object 0 most; the second is a duplicate and matches nothing (Pascal VOC's rule)
    assert matches(im, score=0.5) == [0, -1]


def test_compare_finds_the_common_images_and_the_fig8_picks():
    hit = {0: pred("star", [0, 0, 10, 10], 0.9), 1: pred("star", [50, 50, 60, 60], 0.9),
           2: pred("cross", [20, 20, 40, 40], 0.9)}
    doc_a = {"images": [image("1.png", TRUTH, [hit[0], hit[1]]),           # A finds the occluded star, B does not
                        image("2.png", TRUTH, [hit[0]]),                   # only B finds it
                        image("3.png", TRUTH, [hit[0], hit[2]]),           # both miss it; A finds the unknown one
                        image("4.png", TRUTH, [hit[1]]),                   # not in B's document
                        image("5.png", TRUTH[:2], [hit[1]])]}              # B's ground truth differs: not common
    doc_b = {"images": [image("5.png", TRUTH, [hit[1]]), image("3.png", TRUTH, [hit[0]]),
                        image("2.png", TRUTH, [hit[0], hit[1]]), image("1.png", TRUTH, [hit[0], hit[2]])]}
    c = compare(doc_a, doc_b, score=0.5)
    assert c.relpaths == ["1.png", "2.png", "3.png"]  # A's order
    assert c.missed == {"1.png": ([2], [1]), "2.png": ([1, 2], [2]), "3.png": ([1], [1, 2])}
    assert c.only_a == ["1.png"] and c.only_b == ["2.png"]  # object 2's occlusion is unknown: never occluded
    assert c.occluded == OCCLUDED == 0.01
    # at a threshold above every score both miss everything: nothing only one finds
    high = compare(doc_a, doc_b, score=0.95)
    assert high.only_a == high.only_b == [] and high.missed["1.png"] == ([0, 1, 2], [0, 1, 2])
    # an object counts as occluded from OCCLUDED up: 0.3 is not, with the bar at 0.5
    assert compare(doc_a, doc_b, score=0.5, occluded=0.5).only_a == []


def test_compare_checks_its_threshold():
    with pytest.raises(ValueError, match="score must lie in"):
        compare({"images": []}, {"images": []}, score=1.5)
    assert compare({"images": []}, {}, score=0.5).relpaths == []
