"""The run's missed-object analysis at its operating score, at run time and from its ``detections.json``, on the
hand-made images of ``test_training_errors`` (their matches are worked out there)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from featscope.training import detections as D
from featscope.training.detections import (CEILING, FIXED, LOWEST, NTH, SCORE_FLOOR, detections_doc,
                                           doc_occlusion_analysis, doc_operating_score, doc_threshold_rule,
                                           occlusion_analysis, read_detections, run_occlusion_analysis,
                                           run_operating_score, threshold_rule, write_detections)
from featscope.training.errors import missed_by_occlusion

from .test_training_errors import CAT, DOG, _gt, _image_one, _image_two, _pred

CLASSES = ["cat", "dog"]  # labels 1 and 2


def _doc(gts, preds) -> dict:
    images = [{"relpath": f"{k}.png", "width": 60, "height": 40} for k in range(len(gts))]
    return detections_doc(CLASSES, images, gts, preds)


def _bins(res: dict) -> list[tuple[str, int, int]]:
    return [(b["name"], b["objects"], b["missed"]) for b in res["bins"]]


def _same(a: dict, b: dict) -> None:
    """Equal analyses; the file keeps scores to 4 decimals (the test's are float32)."""
    assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}


def test_a_weak_detector_is_counted_at_its_nth_best_score():
    g1, p1 = _image_one()
    g2, p2 = _image_two()
    # 9 objects, 8 boxes of which 7 score 0.5 or more: fewer than N = 9, so the lowest box, b at 0.4, sets the
    # threshold; at 0.4 b finds image one's low-occlusion cat that it misses at 0.5
    res = occlusion_analysis([g1, g2], [p1, p2])
    assert res["score"] == pytest.approx(0.4) and res["score_ceiling"] == 0.5 and res["iou"] == 0.5
    assert "missed" not in res and res["n_objects"] == 9
    assert _bins(res) == _bins(missed_by_occlusion([g1, g2], [p1, p2], score=0.4))
    assert res["n_missed"] == 4  # image one: 2 (dog as cat), 4 (nothing near); image two: 1 and 3
    at_half = missed_by_occlusion([g1, g2], [p1, p2], score=0.5)
    assert at_half["n_missed"] == 5 and [b["missed"] for b in res["bins"]] != [b["missed"] for b in at_half["bins"]]


def test_a_strong_detector_stays_at_half_and_boxes_under_the_floor_do_not_count():
    g = _gt([[0, 0, 10, 10], [20, 0, 30, 10]], [CAT, DOG], [0.0, 0.3])
    strong = _pred([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [CAT, DOG, CAT], [0.9, 0.6, 0.2])
    assert occlusion_analysis([g], [strong])["score"] == 0.5
    # one box at 0.3 and one under the 0.05 floor (which detections.json drops): the threshold is 0.3, not 0.02
    weak = _pred([[0, 0, 10, 10], [20, 0, 30, 10]], [CAT, DOG], [0.3, 0.02])
    res = occlusion_analysis([g], [weak])
    assert res["score"] == pytest.approx(0.3) and _bins(res)[:3] == [("none", 1, 0), ("low", 0, 0), ("medium", 1, 1)]
    assert res["n_boxes"] == 1  # the box under the floor is not one of the detector's boxes
    assert occlusion_analysis([_gt([[0, 0, 4, 4]], [CAT])], [weak]) is None  # no object of known occlusion


def test_the_analysis_from_a_detections_document_equals_the_run_time_one():
    g1, p1 = _image_one()
    g2, p2 = _image_two()
    doc = _doc([g1, g2], [p1, p2])
    assert doc_operating_score(doc) == pytest.approx(0.4)
    _same(doc_occlusion_analysis(doc), occlusion_analysis([g1, g2], [p1, p2]))
    assert doc_occlusion_analysis(_doc([_gt([[0, 0, 4, 4]], [CAT])], [_pred([], [], [])])) is None
    assert doc_operating_score({"images": []}) == 0.5


def test_run_occlusion_analysis_reads_the_runs_file_and_follows_it(tmp_path):
    g1, p1 = _image_one()
    g2, p2 = _image_two()
    assert run_occlusion_analysis(tmp_path) is None  # a run without detections.json
    path = write_detections(tmp_path, _doc([g1, g2], [p1, p2]))
    first = run_occlusion_analysis(tmp_path)
    _same(first, occlusion_analysis([g1, g2], [p1, p2]))
    assert run_occlusion_analysis(tmp_path) is first  # memoised
    # a rewritten file (a strong detector: every box at 0.9) is read again
    doc = json.loads(path.read_text())
    for im in doc["images"]:
        for p in im["pred"]:
            p["score"] = 0.9
    write_detections(tmp_path, doc)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a new mtime even on a coarse clock
    again = run_occlusion_analysis(tmp_path)
    assert again["score"] == 0.5 and read_detections(tmp_path) == doc
    boosted = [{**p, "scores": np.full(len(p["scores"]), 0.9)} for p in (p1, p2)]
    assert _bins(again) == _bins(missed_by_occlusion([g1, g2], boosted, score=0.5))


def _rounding_case():
    """Three objects of known occlusion and four float32 boxes: a finds object 0 at 0.9, b (0.30004) finds nothing,
    c (0.30001) finds object 1, d (0.29996) finds object 2. The raw 3rd best score is c's 0.30001, which drops d;
    the file keeps scores to 4 decimals, where b, c and d all score 0.3 and d is kept."""
    g = _gt([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [CAT, CAT, DOG], [0.0, 0.1, 0.3])
    p = _pred([[0, 0, 10, 10], [0, 30, 10, 40], [20, 0, 30, 10], [40, 0, 50, 10]], [CAT, CAT, CAT, DOG],
              [0.9, 0.30004, 0.30001, 0.29996])
    return [g], [p]


def test_stored_rates_equal_the_recount_where_rounding_matters(tmp_path):
    """The run stores the analysis of its own detections document (DetectionTask.score with the document that
    workspace.training._final_evaluation writes), so a recount from detections.json gives exactly the same."""
    from featscope.training.tasks import DetectionTask

    gts, preds = _rounding_case()
    raw = occlusion_analysis(gts, preds)  # on the network's float32 scores: d is dropped, object 2 missed
    assert raw["score"] == pytest.approx(0.30001, abs=1e-6) and raw["n_missed"] == 1
    task = DetectionTask(cfg=None, classes=CLASSES, samples=[], init={})
    doc = task.detections(gts, preds, [{"relpath": "0.png", "width": 60, "height": 40}])
    stored = task.score(gts, preds, doc)["missed_by_occlusion"]
    write_detections(tmp_path, doc)
    recounted = run_occlusion_analysis(tmp_path)
    assert stored == recounted  # exactly, threshold included
    assert stored["score"] == 0.3 and stored["n_missed"] == 0 and stored["n_boxes"] == 4
    assert _bins(stored)[:3] == [("none", 1, 0), ("low", 1, 0), ("medium", 1, 0)]
    # without a document given (periodic evaluations), score builds one the same way: the same answer
    assert task.score(gts, preds)["missed_by_occlusion"] == recounted


def test_the_documents_own_score_floor_sets_which_boxes_count():
    """A document written with floor 0.01 keeps a box at 0.03; with 2 objects that box is the 2nd best and sets the
    threshold. Read with the default 0.05 floor it would be left out and the threshold would be the 0.3 box."""
    g = _gt([[0, 0, 10, 10], [20, 0, 30, 10]], [CAT, CAT], [0.0, 0.3])
    p = _pred([[0, 0, 10, 10], [20, 0, 30, 10]], [CAT, CAT], [0.3, 0.03])
    doc = detections_doc(CLASSES, [{"relpath": "0.png", "width": 60, "height": 40}], [g], [p], score_floor=0.01)
    assert doc["score_floor"] == 0.01 and len(doc["images"][0]["pred"]) == 2
    assert doc_operating_score(doc) == 0.03
    res = doc_occlusion_analysis(doc)
    assert res["score"] == 0.03 and res["n_missed"] == 0 and res["n_boxes"] == 2
    # a document that does not say its floor is read at SCORE_FLOOR (0.05): the 0.03 box is left out
    assert doc_operating_score({k: v for k, v in doc.items() if k != "score_floor"}) == 0.3 > SCORE_FLOOR


def test_run_operating_score_is_memoised_by_the_file(tmp_path, monkeypatch):
    g1, p1 = _image_one()
    g2, p2 = _image_two()
    assert run_operating_score(tmp_path) is None  # a run without detections.json
    path = write_detections(tmp_path, _doc([g1, g2], [p1, p2]))
    calls = []
    real = D.doc_operating_score
    monkeypatch.setattr(D, "doc_operating_score", lambda doc: calls.append(1) or real(doc))
    assert run_operating_score(tmp_path) == pytest.approx(0.4)
    assert run_operating_score(tmp_path) == pytest.approx(0.4) and len(calls) == 1  # the second from the memo
    doc = json.loads(path.read_text())
    for im in doc["images"]:
        for p in im["pred"]:
            p["score"] = 0.9
    write_detections(tmp_path, doc)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert run_operating_score(tmp_path) == 0.5 and len(calls) == 2  # a new file is counted again


def test_threshold_rule_names_how_the_threshold_was_chosen():
    g1, p1 = _image_one()
    g2, p2 = _image_two()
    # 9 objects and 8 boxes: the threshold is the lowest box, not an N-th best
    weak = occlusion_analysis([g1, g2], [p1, p2])
    assert threshold_rule(weak) == LOWEST and doc_threshold_rule(_doc([g1, g2], [p1, p2])) == LOWEST
    # image one alone: 5 objects, 5 boxes of which 4 score 0.5: the 5th best is b at 0.4
    one = occlusion_analysis([g1], [p1])
    assert one["score"] == pytest.approx(0.4) and threshold_rule(one) == NTH
    assert doc_threshold_rule(_doc([g1], [p1])) == NTH
    # image two: 4 objects, 3 boxes, all above 0.5: its lowest, 0.7, is above the ceiling, so it stays at 0.5
    two = occlusion_analysis([g2], [p2])
    assert two["score"] == 0.5 and threshold_rule(two) == CEILING == doc_threshold_rule(_doc([g2], [p2]))
    # rates stored before per-detector thresholds carry no score_ceiling
    assert threshold_rule({"iou": 0.5, "score": 0.5, "bins": []}) == FIXED
