"""Two runs' detections compared image by image: matches at a score threshold, the common images, Fig. 8's picks
(images where one detector finds an occluded object the other misses), on hand-made documents."""

from __future__ import annotations

import os

import pytest

from featscope.workspace.detection_errors import (FIXED, LOWEST, OCCLUDED, DetectionPair, compare, matches,
                                                  recounted_run, run_missed_by_occlusion, threshold_rule,
                                                  threshold_words)


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


def test_compare_each_run_at_its_own_score():
    """A weak A (every box at 0.3) against a confident B: at 0.5 for both A finds nothing, so every occluded
    object B finds counts for B; at A's own operating score A is judged on what it does find."""
    weak = {0: pred("star", [0, 0, 10, 10], 0.3), 1: pred("star", [50, 50, 60, 60], 0.3)}
    strong = {0: pred("star", [0, 0, 10, 10], 0.9), 1: pred("star", [50, 50, 60, 60], 0.9)}
    doc_a = {"images": [image("1.png", TRUTH, [weak[0], weak[1]]), image("2.png", TRUTH, [weak[0]])]}
    doc_b = {"images": [image("1.png", TRUTH, [strong[0], strong[1]]), image("2.png", TRUTH, [strong[0], strong[1]])]}
    same = compare(doc_a, doc_b, score=0.5)
    assert same.only_b == ["1.png", "2.png"] and same.score == same.score_b == 0.5
    own = compare(doc_a, doc_b, score=0.3, score_b=0.5)
    assert own.only_b == ["2.png"] and own.only_a == [] and (own.score, own.score_b) == (0.3, 0.5)
    assert own.missed == {"1.png": ([2], [2]), "2.png": ([1, 2], [2])}
    # the pair's operating scores: 6 objects; A has 3 boxes (fewer than N: its lowest, 0.3), B 4 at 0.9 (< 6: 0.5)
    pair = DetectionPair((None, None), (doc_a, doc_b), ({}, {}))
    assert pair.operating_scores() == (0.3, 0.5)
    assert pair.compare() == own
    with pytest.raises(ValueError, match="score_b must lie in"):
        compare(doc_a, doc_b, score=0.5, score_b=-0.1)


def test_run_missed_by_occlusion_prefers_the_runs_boxes(tmp_path):
    from types import SimpleNamespace

    from featscope.training.detections import write_detections

    stored = {"iou": 0.5, "score": 0.5, "bins": [{"name": "medium", "low": 0.25, "high": 0.5, "objects": 1,
                                                  "missed": 1, "rate": 1.0}]}
    run = SimpleNamespace(id=7, dir=str(tmp_path), result={"eval": {"missed_by_occlusion": stored}})
    assert run_missed_by_occlusion(run) is stored  # no detections.json: the stored evaluation
    # its boxes: 3 objects, one box at 0.3 on the occluded star; at that operating score it is found
    write_detections(tmp_path, {"classes": ["cross", "star"], "score_floor": 0.05,
                                "images": [image("1.png", TRUTH, [pred("star", [50, 50, 60, 60], 0.3)])]})
    res = run_missed_by_occlusion(run)
    assert res["score"] == 0.3 and res["n_objects"] == 3 and res["n_missed"] == 2
    assert [(b["name"], b["objects"], b["missed"]) for b in res["bins"]] == [
        ("none", 1, 1), ("low", 0, 0), ("medium", 1, 0), ("high", 0, 0)]
    (tmp_path / "detections.json").write_text("{not json")  # a damaged file: the stored rates still stand
    assert run_missed_by_occlusion(run) is stored
    assert run_missed_by_occlusion(SimpleNamespace(id=8, dir="", result={})) is None


def test_compare_checks_its_threshold():
    with pytest.raises(ValueError, match="score must lie in"):
        compare({"images": []}, {"images": []}, score=1.5)
    assert compare({"images": []}, {}, score=0.5).relpaths == []


def _old_run(tmp_path, **fields):
    """A ``RunInfo`` of a detection fine-tuning run recorded before per-detector thresholds: its stored rates are
    the old rule's (score 0.5, no ``score_ceiling``: the occluded star missed), while its detections.json (3
    objects, one box at 0.3 on the occluded star) recounts at its lowest score, 0.3, where the star is found."""
    from featscope.training.detections import write_detections
    from featscope.training.runs import RunInfo

    stored = {"iou": 0.5, "score": 0.5, "n_objects": 3, "n_missed": 3,
              "bins": [{"name": "none", "low": 0.0, "high": 0.01, "objects": 1, "missed": 1, "rate": 1.0},
                       {"name": "low", "low": 0.01, "high": 0.25, "objects": 0, "missed": 0, "rate": None},
                       {"name": "medium", "low": 0.25, "high": 0.5, "objects": 1, "missed": 1, "rate": 1.0},
                       {"name": "high", "low": 0.5, "high": 1.0, "objects": 0, "missed": 0, "rate": None}]}
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_detections(tmp_path, {"classes": ["cross", "star"], "score_floor": 0.05,
                                "images": [image("1.png", TRUTH, [pred("star", [50, 50, 60, 60], 0.3)])]})
    base = dict(id=7, name="ft-old", task="finetune-det", preset="cpu-demo", state="done", iteration=4,
                total_iterations=4, progress=1.0, message="done", error=None, config={}, classes=["cross", "star"],
                result={"iterations": 4, "eval": {"ap": {"0.5": 0.25}, "missed_by_occlusion": stored}},
                init="backbone cls-x (run:1)", dataset_id=None, test_dataset_id=None, backbone_id=None, job_id=None,
                fingerprint=None, dir=str(tmp_path), created_at=None, finished_at=None)
    return RunInfo(**{**base, **fields}), stored


def test_recounted_run_overlays_the_recount_on_the_stored_result(tmp_path):
    run, stored = _old_run(tmp_path)
    new = recounted_run(run)
    res = new.result["eval"]["missed_by_occlusion"]
    assert res == run_missed_by_occlusion(run) and res != stored
    assert res["score"] == 0.3 and res["score_ceiling"] == 0.5 and [b["rate"] for b in res["bins"]] == [
        1.0, None, 0.0, None]
    assert new.result["eval"]["ap"] == {"0.5": 0.25} and new.result["iterations"] == 4  # the rest kept
    assert run.result["eval"]["missed_by_occlusion"] is stored  # the stored result is not modified
    assert threshold_rule(stored) == FIXED and threshold_rule(res) == LOWEST  # 1 box for 3 objects
    assert threshold_words(res) == "score 0.3 (its lowest)"
    assert threshold_words(stored) == "fixed score 0.5 (recorded before per-detector thresholds)"
    assert threshold_words({**res, "score": 0.123456, "n_boxes": 5}) == "score 0.123 (its N-th best)"
    assert threshold_words({**res, "score": 0.5}) == "score 0.5"
    # nothing to recount: the run itself
    (tmp_path / "detections.json").unlink()
    assert recounted_run(run) is run
    seg, _ = _old_run(tmp_path / "seg", task="finetune-seg")
    assert recounted_run(seg) is seg


def test_the_pairs_operating_scores_are_memoised_by_the_files(tmp_path, monkeypatch):
    """The /detections page asks on every callback: each document is scanned once per version of its file."""
    from types import SimpleNamespace

    from featscope.training import detections as D

    docs = []
    for name, score in (("a", 0.3), ("b", 0.9)):
        d = {"classes": ["cross", "star"], "score_floor": 0.05,
             "images": [image("1.png", TRUTH, [pred("star", [0, 0, 10, 10], score),
                                               pred("star", [50, 50, 60, 60], score)])]}
        (tmp_path / name).mkdir()
        D.write_detections(tmp_path / name, d)
        docs.append(D.read_detections(tmp_path / name))
    calls = []
    real = D.doc_operating_score
    monkeypatch.setattr(D, "doc_operating_score", lambda doc: calls.append(1) or real(doc))
    runs = (SimpleNamespace(id=1, dir=str(tmp_path / "a")), SimpleNamespace(id=2, dir=str(tmp_path / "b")))
    pair = DetectionPair(runs, tuple(docs), ({}, {}))
    assert pair.operating_scores() == (0.3, 0.5)  # 3 objects: A 2 boxes (its lowest), B 2 at 0.9 (< 3: 0.5)
    assert pair.operating_scores() == (0.3, 0.5) and pair.compare().score == 0.3 and len(calls) == 2
    # a rewritten file is counted again
    boxes = [pred("star", [0, 0, 10, 10], 0.2), pred("star", [50, 50, 60, 60], 0.25),
             pred("cross", [20, 20, 40, 40], 0.4)]  # 3 boxes for 3 objects: the 3rd best, 0.2
    path = D.write_detections(tmp_path / "a", {**docs[0], "images": [image("1.png", TRUTH, boxes)]})
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert pair.operating_scores() == (0.2, 0.5) and len(calls) == 3
