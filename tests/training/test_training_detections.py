"""The run's missed-object analysis at its operating score, at run time and from its ``detections.json``, on the
hand-made images of ``test_training_errors`` (their matches are worked out there)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from featscope.training.detections import (SCORE_FLOOR, detections_doc, doc_occlusion_analysis, doc_operating_score,
                                           occlusion_analysis, read_detections, run_occlusion_analysis,
                                           write_detections)
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
    assert SCORE_FLOOR == 0.05
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
