"""A detection fine-tuning run's test-set boxes, kept for error analysis (``detections.json`` in the run dir).

Public names: :data:`DETECTIONS`, :data:`SCORE_FLOOR`, :func:`detections_doc`, :func:`write_detections`,
:func:`read_detections`, :func:`occlusion_analysis`, :func:`doc_arrays`, :func:`doc_operating_score`,
:func:`doc_occlusion_analysis`, :func:`run_occlusion_analysis`, :func:`run_operating_score`,
:func:`threshold_rule`, :func:`doc_threshold_rule`.

The file keeps, per test image, its ground truth (label, box, occlusion or null) and every prediction
scoring at least :data:`SCORE_FLOOR` (torchvision's own ``box_score_thresh``), so the missed-object
analysis and the dashboard's side-by-side boxes (the study's Fig. 8) can use any higher threshold later
without running the network again::

    {"classes": [...], "score_floor": 0.05,
     "images": [{"relpath", "width", "height", "gt": [{"label", "box": [x0, y0, x1, y1], "occlusion"}],
                 "pred": [{"label", "box", "score"}]}]}
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featscope.cache.store import atomic_write_bytes

DETECTIONS = "detections.json"
SCORE_FLOOR = 0.05
# The thresholds of the run's missed-object rates: IoU 0.5, and score 0.5 unless the detector has fewer than
# N boxes scoring that high (N = the test set's objects), then its N-th best score, or its lowest when it has
# fewer than N boxes in all (errors.operating_score).
MISSED_IOU, MISSED_SCORE = 0.5, 0.5
# How an analysis' score threshold was chosen (threshold_rule)
FIXED, CEILING, NTH, LOWEST = "fixed", "ceiling", "nth", "lowest"


def _box(b: Sequence[float]) -> list[float]:
    return [round(float(v), 2) for v in b]


def detections_doc(classes: Sequence[str], images: Sequence[dict[str, Any]], ground_truth: Sequence[dict[str, Any]],
                   predictions: Sequence[dict[str, Any]], *, score_floor: float = SCORE_FLOOR) -> dict[str, Any]:
    """The JSON document of a run's test-set detections.

    ``images``: per image ``{"relpath", "width", "height"}``; ``ground_truth`` / ``predictions``: per
    image numpy dicts as :func:`featscope.training.evaluate.predict_boxes` gives them (labels 1..K into
    ``classes``; ground truth may carry ``occlusion``, NaN = unknown).
    """
    if not len(images) == len(ground_truth) == len(predictions):
        raise ValueError(f"{len(images)} images, {len(ground_truth)} ground truths, {len(predictions)} predictions")
    out = []
    for im, g, p in zip(images, ground_truth, predictions):
        labels = np.asarray(g["labels"]).reshape(-1)
        occ = np.asarray(g.get("occlusion", np.full(len(labels), np.nan)), dtype=np.float64).reshape(-1)
        gt = [{"label": classes[int(k) - 1], "box": _box(b), "occlusion": None if math.isnan(o) else float(o)}
              for b, k, o in zip(np.asarray(g["boxes"]).reshape(-1, 4), labels, occ)]
        scores = np.asarray(p["scores"], dtype=np.float64).reshape(-1)
        order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= score_floor]
        boxes, plabels = np.asarray(p["boxes"]).reshape(-1, 4), np.asarray(p["labels"]).reshape(-1)
        pred = [{"label": classes[int(plabels[i]) - 1], "box": _box(boxes[i]), "score": round(float(scores[i]), 4)}
                for i in order]
        out.append({"relpath": str(im["relpath"]), "width": int(im["width"]), "height": int(im["height"]),
                    "gt": gt, "pred": pred})
    return {"classes": list(classes), "score_floor": float(score_floor), "images": out}


def write_detections(run_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` to ``run_dir/detections.json`` atomically."""
    path = Path(run_dir) / DETECTIONS
    atomic_write_bytes(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
    return path


def read_detections(run_dir: Path) -> dict[str, Any] | None:
    """The run's detections document (shared: do not modify it), or None when it has none.

    Memoised by the file's size and modification time: the dashboard reads both runs' documents on every
    slider step, and a VOC-sized test set's is tens of megabytes of JSON.
    """
    path = Path(run_dir) / DETECTIONS
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _read(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(path: str, _size: int, _mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text("utf-8"))


def occlusion_analysis(ground_truth: Sequence[dict[str, Any]], predictions: Sequence[dict[str, Any]], *,
                       score_floor: float = SCORE_FLOOR) -> dict[str, Any] | None:
    """Missed objects per occlusion bin without the per-image lists, or None when no ground-truth object has a
    known occlusion: :func:`featscope.training.errors.missed_by_occlusion` at IoU 0.5 and the detector's
    :func:`~featscope.training.errors.operating_score` (0.5; or, when it has fewer than N boxes scoring 0.5,
    N = the test set's objects, its N-th best score, or its lowest when it has fewer than N boxes in all),
    counted over the predictions scoring at least ``score_floor`` (the ones ``detections.json`` keeps). The
    result's ``score`` is the threshold used, ``score_ceiling`` the 0.5 it starts from, ``n_boxes`` the boxes it
    chose among (so a reader can tell an N-th best threshold from a lowest one).

    A run stores :func:`doc_occlusion_analysis` of its own detections document (rounded scores and boxes), the
    same function a recount from ``detections.json`` calls, so its stored and recounted rates agree."""
    from featscope.training.errors import missed_by_occlusion

    known = any(np.isfinite(np.asarray(g.get("occlusion", []), dtype=np.float64)).any() for g in ground_truth)
    if not known:
        return None
    gts = [{"boxes": g["boxes"], "labels": g["labels"], "occlusion": g["occlusion"]} for g in ground_truth]
    scores = np.concatenate([np.asarray(p["scores"], dtype=np.float64).reshape(-1) for p in predictions]
                            ) if predictions else np.zeros(0)
    n_objects = sum(len(np.asarray(g["labels"]).reshape(-1)) for g in ground_truth)
    score = _operating(scores, n_objects, score_floor)
    res = missed_by_occlusion(gts, predictions, iou=MISSED_IOU, score=score)
    return {**{k: v for k, v in res.items() if k != "missed"}, "score_ceiling": MISSED_SCORE,
            "n_boxes": int((scores >= score_floor).sum())}


def doc_arrays(doc: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(ground truth, predictions) per image of a detections document, as :func:`occlusion_analysis` takes them
    (labels are the class names; a null occlusion is NaN)."""
    gts, preds = [], []
    for im in doc.get("images") or []:
        gt, pred = im.get("gt") or [], im.get("pred") or []
        gts.append({"boxes": np.array([g["box"] for g in gt], dtype=np.float64).reshape(-1, 4),
                    "labels": np.array([g["label"] for g in gt], dtype=object),
                    "occlusion": np.array([np.nan if g.get("occlusion") is None else g["occlusion"] for g in gt],
                                          dtype=np.float64)})
        preds.append({"boxes": np.array([p["box"] for p in pred], dtype=np.float64).reshape(-1, 4),
                      "labels": np.array([p["label"] for p in pred], dtype=object),
                      "scores": np.array([p["score"] for p in pred], dtype=np.float64)})
    return gts, preds


def doc_operating_score(doc: dict[str, Any]) -> float:
    """The score threshold a detections document's detector is judged at (see :func:`occlusion_analysis`): 0.5;
    or, when fewer than N of its boxes score 0.5 (N = the document's ground-truth objects), its N-th best score
    (its lowest when it has fewer than N boxes)."""
    images = doc.get("images") or []
    scores = np.array([p["score"] for im in images for p in im.get("pred") or []], dtype=np.float64)
    return _operating(scores, sum(len(im.get("gt") or []) for im in images), _floor(doc))


def doc_threshold_rule(doc: dict[str, Any]) -> str:
    """:func:`threshold_rule` of a detections document's operating score (:data:`CEILING`, :data:`NTH` or
    :data:`LOWEST`)."""
    images = doc.get("images") or []
    floor = _floor(doc)
    n_boxes = sum(1 for im in images for p in im.get("pred") or [] if p["score"] >= floor)
    return threshold_rule({"score": doc_operating_score(doc), "score_ceiling": MISSED_SCORE, "n_boxes": n_boxes,
                           "n_objects": sum(len(im.get("gt") or []) for im in images)})


def _floor(doc: dict[str, Any]) -> float:
    """The document's own ``score_floor`` (:data:`SCORE_FLOOR` when it does not say)."""
    floor = doc.get("score_floor")
    return SCORE_FLOOR if floor is None else float(floor)


def _operating(scores: np.ndarray, n_objects: int, score_floor: float = SCORE_FLOOR) -> float:
    """The operating score over the boxes scoring at least ``score_floor`` (those a detections document keeps)."""
    from featscope.training.errors import operating_score

    return operating_score(scores[scores >= score_floor], n_objects, MISSED_SCORE)


def doc_occlusion_analysis(doc: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`occlusion_analysis` of a run's detections document: runs recorded before the operating-score rule
    get it without running the network again, and a run stores it of its own document (so the two agree)."""
    return occlusion_analysis(*doc_arrays(doc), score_floor=_floor(doc))


def run_occlusion_analysis(run_dir: Path) -> dict[str, Any] | None:
    """:func:`doc_occlusion_analysis` of the run's ``detections.json``, None when it has none (or no object of
    known occlusion); shared: do not modify it. Memoised by the file's size and modification time, as
    :func:`read_detections` is: the dashboard's run table asks on every poll."""
    path = Path(run_dir) / DETECTIONS
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _analysis(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _analysis(path: str, size: int, mtime_ns: int) -> dict[str, Any] | None:
    return doc_occlusion_analysis(_read(path, size, mtime_ns))


def run_operating_score(run_dir: Path) -> float | None:
    """:func:`doc_operating_score` of the run's ``detections.json``, None when it has none. Memoised by the file's
    size and modification time: the ``/detections`` page asks for both runs' scores on every callback, and each
    one is a pass over every box of the document."""
    path = Path(run_dir) / DETECTIONS
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _operating_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _operating_of(path: str, size: int, mtime_ns: int) -> float:
    return doc_operating_score(_read(path, size, mtime_ns))


def threshold_rule(res: dict[str, Any]) -> str:
    """How a missed-object analysis' score threshold was chosen: :data:`FIXED` (no ``score_ceiling``: stored by
    a run recorded before per-detector thresholds, at the fixed score 0.5), :data:`CEILING` (the detector has
    at least N boxes scoring 0.5, so it stays there and may keep more than N), :data:`NTH` (its N-th best score)
    or :data:`LOWEST` (its lowest score: it has fewer than N boxes in all); N = ``res["n_objects"]``."""
    if res.get("score_ceiling") is None:
        return FIXED
    if res["score"] >= res["score_ceiling"]:
        return CEILING
    n_boxes = res.get("n_boxes")
    return LOWEST if n_boxes is not None and n_boxes < res.get("n_objects", 0) else NTH
