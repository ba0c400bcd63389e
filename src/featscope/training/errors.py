"""Detection error analysis: which ground-truth objects a detector misses, binned by how occluded they are.

Public names: :data:`OCCLUSION_BINS`, :func:`match_detections`, :func:`missed_by_occlusion`,
:func:`operating_score`.

The study (its Table 3 and Fig. 8) compares detectors fine-tuned from a classification- and a
detection-pretrained backbone by the share of objects they miss at each occlusion level, following Hoiem
et al., "Diagnosing Error in Object Detectors" (ECCV 2012). Matching is written here rather than taken from
pycocotools because COCOeval does not expose which ground-truth objects were left unmatched per image in a
documented form, and the rule below is a few lines that a test checks case by case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["OCCLUSION_BINS", "match_detections", "missed_by_occlusion", "operating_score"]

# (name, low, high): an object falls in the bin with low <= occlusion < high; the last bin also takes
# occlusion == high. The levels follow the spirit of Hoiem et al.'s none / low / medium / high occlusion
# (annotated there by eye); the study reports the low and medium bins.
OCCLUSION_BINS: tuple[tuple[str, float, float], ...] = (
    ("none", 0.0, 0.01), ("low", 0.01, 0.25), ("medium", 0.25, 0.5), ("high", 0.5, 1.0))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of ``boxes``; corners are pixel edges (no VOC ``+1``)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def match_detections(gt_boxes: np.ndarray, gt_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                     scores: np.ndarray, *, iou: float = 0.5, score: float = 0.5) -> np.ndarray:
    """For one image, the index of the prediction each ground-truth object is matched to (-1: missed).

    Predictions with ``scores >= score`` are taken greedily by descending score (equal scores in their
    given order). Each is compared with every object of its own class and takes the one it overlaps most
    (equal IoUs: the lower object index); it matches that object when their IoU is ``>= iou`` and the
    object is not matched yet, and otherwise matches nothing: a duplicate is not passed on to the
    next-best object, as in the Pascal VOC devkit's evaluation. So each prediction matches at most one
    object and each object at most one prediction.
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    matched = np.full(len(gt_boxes), -1, dtype=np.int64)
    if len(gt_boxes) == 0:
        return matched
    for p in np.argsort(-scores, kind="stable"):
        if not scores[p] >= score:
            break  # sorted: every later one is below the threshold too
        same = np.flatnonzero(gt_labels == labels[p])
        if same.size == 0:
            continue
        overlaps = _iou(boxes[p], gt_boxes[same])
        best = int(np.argmax(overlaps))  # first maximum: the lower object index on ties
        if overlaps[best] >= iou and matched[same[best]] < 0:
            matched[same[best]] = p
    return matched


def operating_score(scores: Sequence[float] | np.ndarray, n_objects: int, ceiling: float = 0.5) -> float:
    """The score threshold at which a detector's misses are counted: ``ceiling`` when at least ``n_objects``
    of its detections score ``>= ceiling``; otherwise the score of its ``n_objects``-th best detection, or of
    its lowest when it has fewer than ``n_objects`` detections in all; never above ``ceiling``.

    ``scores``: every detection of the detector over the whole test set, all classes; ``n_objects``: the
    test set's number of ground-truth objects (N). Why: 0.5 is the usual operating point, but a weakly
    trained detector (a short CPU fine-tuning) scores everything below it and at 0.5 would miss every
    object whatever backbone it started from, so the comparison would say nothing. A detector with fewer
    than N boxes scoring ``ceiling`` is therefore judged at its N-th best score, where it keeps N boxes (as
    Hoiem et al.'s error analysis looks at each detector's top-N detections), or at its lowest score, where
    it keeps all of its boxes, when it has fewer than N. A detector that stays at ``ceiling`` may keep more
    than N boxes, so two detectors are on an equal footing only when both are lowered. The detections tied
    with the N-th best one all count (a threshold keeps every box scoring at least it), so a few more than N
    may be kept. A detector without any detection gets ``ceiling``: it misses everything at any threshold.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one flat list of detection scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("scores must be finite numbers; drop or fix the NaN / infinite detection scores")
    if isinstance(n_objects, bool) or not isinstance(n_objects, (int, np.integer)) or n_objects < 0:
        raise ValueError(f"n_objects must be a whole number >= 0 (the test set's ground-truth objects), "
                         f"got {n_objects!r}")
    if not (0 < ceiling <= 1):
        raise ValueError(f"ceiling must lie in (0, 1], got {ceiling}")
    n = int(n_objects)
    if n == 0 or arr.size == 0 or int((arr >= ceiling).sum()) >= n:
        return float(ceiling)
    ranked = np.sort(arr)[::-1]
    return float(min(ceiling, ranked[min(n, ranked.size) - 1]))


def missed_by_occlusion(ground_truth: Sequence[dict[str, Any]], predictions: Sequence[dict[str, Any]], *,
                        iou: float = 0.5, score: float = 0.5,
                        bins: Sequence[tuple[str, float, float]] = OCCLUSION_BINS) -> dict[str, Any]:
    """Share of ground-truth objects missed at each occlusion level (the study's Table 3).

    ``ground_truth``: per image ``{"boxes": (N, 4) xyxy, "labels": (N,), "occlusion": (N,)}``, the
    occlusion being the fraction of the object hidden by others (NaN, or a missing key: unknown);
    ``predictions``: per image ``{"boxes", "labels", "scores"}`` (what
    :func:`featscope.training.evaluate.detection_ap` takes). An object is *missed* when no prediction of
    its class with score ``>= score`` matches it at IoU ``>= iou``, matching as in
    :func:`match_detections` (greedy by descending score, each prediction matching at most one object).

    An object counts in the bin ``(name, low, high)`` with ``low <= occlusion < high`` (the last bin also
    takes ``occlusion == high``); objects of unknown occlusion are left out of the bins but still listed
    in ``missed``. Returns ``{"iou", "score", "bins": [{"name", "low", "high", "objects", "missed",
    "rate"}], "missed": [per image, the sorted indices of its missed objects], "n_objects", "n_missed",
    "n_unknown"}``; ``rate`` is ``missed / objects``, None for an empty bin.
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must lie in (0, 1], got {iou}")
    bins = _checked_bins(bins)
    occlusions: list[np.ndarray] = []
    missed: list[list[int]] = []
    for i, (g, p) in enumerate(zip(ground_truth, predictions)):
        n = len(np.asarray(g["labels"]).reshape(-1))
        occ = np.asarray(g.get("occlusion", np.full(n, np.nan)), dtype=np.float64).reshape(-1)
        if occ.shape != (n,):
            raise ValueError(f"image {i}: {n} ground-truth objects but {occ.size} occlusion values")
        known = occ[np.isfinite(occ)]
        if ((known < 0) | (known > 1)).any():
            raise ValueError(f"image {i}: occlusion must lie in [0, 1] (NaN for unknown), got {known.min():g}"
                             f"..{known.max():g}")
        matched = match_detections(g["boxes"], g["labels"], p["boxes"], p["labels"], p["scores"],
                                   iou=iou, score=score)
        occlusions.append(occ)
        missed.append([int(k) for k in np.flatnonzero(matched < 0)])
    occ_all = np.concatenate(occlusions) if occlusions else np.zeros(0)
    is_missed = np.concatenate([np.isin(np.arange(len(o)), m) for o, m in zip(occlusions, missed)]) \
        if occlusions else np.zeros(0, dtype=bool)
    rows = []
    for k, (name, low, high) in enumerate(bins):
        last = k == len(bins) - 1
        inside = (occ_all >= low) & ((occ_all <= high) if last else (occ_all < high))
        n_in, n_missed = int(inside.sum()), int((inside & is_missed).sum())
        rows.append({"name": name, "low": low, "high": high, "objects": n_in, "missed": n_missed,
                     "rate": n_missed / n_in if n_in else None})
    return {"iou": float(iou), "score": float(score), "bins": rows, "missed": missed,
            "n_objects": int(occ_all.size), "n_missed": int(is_missed.sum()),
            "n_unknown": int((~np.isfinite(occ_all)).sum())}


def _checked_bins(bins: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    out = [(str(name), float(low), float(high)) for name, low, high in bins]
    if not out:
        raise ValueError("bins must name at least one (name, low, high) occlusion range")
    for (name, low, high), nxt in zip(out, out[1:] + [None]):
        if not (0 <= low < high <= 1 and math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"occlusion bin {name!r} must have 0 <= low < high <= 1, got [{low}, {high})")
        if nxt is not None and nxt[1] < high:
            raise ValueError(f"occlusion bins must not overlap: {name!r} ends at {high}, {nxt[0]!r} starts at {nxt[1]}")
    return out
