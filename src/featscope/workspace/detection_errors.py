"""Two detection fine-tuning runs' boxes on their common test images, and where one finds what the other misses.

Public names: :data:`OCCLUDED`, :class:`Comparison`, :class:`DetectionPair`, :func:`matches`, :func:`compare`,
:func:`detection_runs`, :func:`detection_pair`, :func:`run_missed_by_occlusion`, :func:`recounted_run`,
:func:`threshold_rule`, :func:`threshold_words`.

The study's Fig. 8 shows the boxes of the detectors fine-tuned from a classification- and from a
detection-pretrained backbone side by side on the same test images, chosen where the detection-pretrained one
finds an occluded object that the other misses. A run keeps its test-set boxes (``detections.json``, read by
:func:`featscope.workspace.training.run_detections`) with every prediction scoring at least 0.05, so any
higher score threshold is applied here without running a network: an object is *found* at a threshold when a
prediction of its class scoring at least that much matches it at IoU >= 0.5, matched as in
:func:`featscope.training.errors.match_detections` (greedy by score, as the run's missed-object rates are).
The dashboard's ``/detections`` page and the study page's Fig. 8 count both read these functions. The study
page compares each detector at its own operating score (:func:`featscope.training.detections.doc_operating_score`:
0.5; or, when fewer than N of its boxes score 0.5, N = the test set's objects, its N-th best score, or its lowest
when it has fewer than N boxes), the score its missed-object rates (Table 3) are counted at.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featscope.training.detections import CEILING, FIXED, LOWEST, NTH, threshold_rule
from featscope.training.errors import OCCLUSION_BINS, match_detections
from featscope.workspace.context import Context, NotFound

log = logging.getLogger(__name__)
__all__ = ["OCCLUDED", "Comparison", "DetectionPair", "matches", "compare", "detection_runs", "detection_pair",
           "run_missed_by_occlusion", "recounted_run", "threshold_rule", "threshold_words", "FIXED", "CEILING",
           "NTH", "LOWEST"]

# An object counts as occluded from the lower edge of the "low" occlusion bin up (1% of its area hidden).
OCCLUDED: float = next(low for name, low, _ in OCCLUSION_BINS if name == "low")
MATCH_IOU = 0.5


def matches(image: dict[str, Any], *, score: float, iou: float = MATCH_IOU) -> list[int]:
    """For one image of a detections document, the index into ``image["pred"]`` of the prediction each
    ground-truth object is matched to at this ``score`` threshold, -1 where the object is missed."""
    gt, pred = image.get("gt") or [], image.get("pred") or []
    if not gt:
        return []
    found = match_detections(np.array([g["box"] for g in gt], dtype=np.float64).reshape(-1, 4),
                             np.array([g["label"] for g in gt], dtype=object),
                             np.array([p["box"] for p in pred], dtype=np.float64).reshape(-1, 4),
                             np.array([p["label"] for p in pred], dtype=object),
                             np.array([p["score"] for p in pred], dtype=np.float64), iou=iou, score=score)
    return [int(k) for k in found]


def _truth(image: dict[str, Any]) -> tuple:
    return tuple((g["label"], tuple(round(float(v), 1) for v in g["box"])) for g in image.get("gt") or [])


@dataclass(frozen=True)
class Comparison:
    """Two runs' outcomes on the test images they share (same file, same ground truth).

    ``missed[relpath]``: (ground-truth indices run A misses, those run B misses); ``only_a``: images where A
    finds an occluded object that B misses (``only_b`` the converse), in A's order. ``score`` is A's score
    threshold, ``score_b`` B's."""

    score: float
    iou: float
    occluded: float
    relpaths: list[str]
    missed: dict[str, tuple[list[int], list[int]]]
    only_a: list[str]
    only_b: list[str]
    score_b: float | None = None

    def __post_init__(self) -> None:
        if self.score_b is None:
            object.__setattr__(self, "score_b", self.score)


def compare(doc_a: dict[str, Any], doc_b: dict[str, Any], *, score: float = 0.5, iou: float = MATCH_IOU,
            occluded: float = OCCLUDED, score_b: float | None = None) -> Comparison:
    """Which objects each run misses on the images both documents hold, and Fig. 8's picks: run A's boxes at
    ``score``, run B's at ``score_b`` (default: ``score``), so each detector can be judged at its own operating
    score.

    An image is common when both documents have its ``relpath`` with the same ground truth (labels and boxes);
    objects of unknown occlusion never count as occluded."""
    score_b = score if score_b is None else score_b
    for name, value in (("score", score), ("score_b", score_b)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    b_images = {im["relpath"]: im for im in doc_b.get("images") or []}
    relpaths, missed, only_a, only_b = [], {}, [], []
    for im in doc_a.get("images") or []:
        other = b_images.get(im["relpath"])
        if other is None or _truth(other) != _truth(im):
            continue
        ma, mb = matches(im, score=score, iou=iou), matches(other, score=score_b, iou=iou)
        relpaths.append(im["relpath"])
        missed[im["relpath"]] = ([k for k, p in enumerate(ma) if p < 0], [k for k, p in enumerate(mb) if p < 0])
        hidden = [k for k, g in enumerate(im["gt"]) if g.get("occlusion") is not None and g["occlusion"] >= occluded]
        if any(ma[k] >= 0 and mb[k] < 0 for k in hidden):
            only_a.append(im["relpath"])
        if any(mb[k] >= 0 and ma[k] < 0 for k in hidden):
            only_b.append(im["relpath"])
    return Comparison(float(score), float(iou), float(occluded), relpaths, missed, only_a, only_b, float(score_b))


@dataclass(frozen=True)
class DetectionPair:
    """Two finished detection fine-tuning runs, their detections documents, and the catalog image id of each
    test image (by ``relpath``; missing where the test data set's image is no longer in the catalog)."""

    runs: tuple[Any, Any]  # RunInfo
    docs: tuple[dict[str, Any], dict[str, Any]]
    image_ids: tuple[dict[str, int], dict[str, int]]

    def operating_scores(self) -> tuple[float, float]:
        """Each run's operating score (the threshold of its missed-object rates; see
        :func:`featscope.training.detections.doc_operating_score`), memoised by its ``detections.json``'s path,
        size and modification time (:func:`~featscope.training.detections.run_operating_score`): the
        ``/detections`` page asks on every callback, and each count is a pass over every box."""
        from featscope.training.detections import doc_operating_score, run_operating_score

        def one(run, doc: dict[str, Any]) -> float:
            score = run_operating_score(Path(run.dir)) if getattr(run, "dir", None) else None
            return doc_operating_score(doc) if score is None else score

        return one(self.runs[0], self.docs[0]), one(self.runs[1], self.docs[1])

    def compare(self, **kwargs: Any) -> Comparison:
        """:func:`compare` of the two runs, each at its own operating score (the study page's Fig. 8)."""
        a, b = self.operating_scores()
        return compare(*self.docs, score=a, score_b=b, **kwargs)


def detection_runs(ctx: Context) -> list:
    """Finished detection fine-tuning runs (``RunInfo``), newest first: the ones the pair can be chosen from."""
    from featscope.workspace.training import list_runs

    return [r for r in list_runs(ctx, "finetune-det") if r.state == "done"]


def _image_ids(ctx: Context, run) -> dict[str, int]:
    from sqlalchemy import select

    from featscope.catalog import Image

    dataset = run.test_dataset_id if run.test_dataset_id is not None else run.dataset_id
    if dataset is None:
        return {}
    with ctx.session() as s:
        return {rel: ident for ident, rel in s.execute(select(Image.id, Image.relpath)
                                                       .where(Image.dataset_id == dataset))}


def detection_pair(ctx: Context, run_a: int | str, run_b: int | str) -> DetectionPair:
    """Runs ``run_a`` and ``run_b`` with their test-set detections; :class:`NotFound` (saying why) when either
    is not a finished detection fine-tuning run that kept its boxes."""
    from featscope.workspace.training import get_run, run_detections

    runs = (get_run(ctx, run_a), get_run(ctx, run_b))
    for r in runs:
        if r.task != "finetune-det":
            raise NotFound(f"run {r.id} ({r.name}) is a {r.task} run; choose a detection fine-tuning run")
    docs = (run_detections(ctx, runs[0].id), run_detections(ctx, runs[1].id))
    return DetectionPair(runs, docs, (_image_ids(ctx, runs[0]), _image_ids(ctx, runs[1])))



def _recount(run) -> dict[str, Any] | None:
    """The run's Table 3 recounted from its ``detections.json`` (None without one, or when it is damaged)."""
    from featscope.training.detections import run_occlusion_analysis

    if getattr(run, "task", "finetune-det") != "finetune-det" or not getattr(run, "dir", None):
        return None
    try:
        return run_occlusion_analysis(Path(run.dir))
    except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged file: the stored rates still stand
        log.warning("run %s: cannot read its detections (%s); showing its stored missed-object rates", run.id, e)
        return None


def run_missed_by_occlusion(run) -> dict[str, Any] | None:
    """A detection fine-tuning run's missed-object rates per occlusion bin (Table 3; ``RunInfo`` ``run``):
    recomputed from its ``detections.json`` when it has one, so runs recorded before the operating-score rule
    follow it too, else the rates stored in its evaluation (``result["eval"]["missed_by_occlusion"]``; for a run
    recorded before the rule, counted at the fixed score 0.5 and without ``score_ceiling``: see
    :func:`threshold_rule`); None when it has neither. Shared: do not modify the result."""
    res = _recount(run)
    if res is not None:
        return res
    return ((run.result or {}).get("eval") or {}).get("missed_by_occlusion") or None


def recounted_run(run):
    """``run`` (``RunInfo``) with ``result["eval"]["missed_by_occlusion"]`` replaced by the recount from its
    ``detections.json`` (:func:`run_missed_by_occlusion`), so the REST API, ``runs show --json`` and the
    dashboard give the same Table 3 for runs recorded before the operating-score rule; ``run`` itself when there
    is nothing to recount. The stored result is not modified."""
    res = _recount(run)
    if res is None:
        return run
    result = dict(run.result or {})
    result["eval"] = {**(result.get("eval") or {}), "missed_by_occlusion": res}
    return dataclasses.replace(run, result=result)


def threshold_words(res: dict[str, Any]) -> str:
    """A missed-object analysis' score threshold in words, the same on every page and in the CLI: "score 0.5",
    "score 0.123 (its N-th best)", "score 0.0612 (its lowest)", or "fixed score 0.5 (recorded before
    per-detector thresholds)" for rates a run stored before the rule (:func:`threshold_rule`)."""
    score = f"{res.get('score', 0.5):.3g}"
    rule = threshold_rule(res)
    if rule == FIXED:
        return f"fixed score {score} (recorded before per-detector thresholds)"
    return f"score {score}" + {NTH: " (its N-th best)", LOWEST: " (its lowest)"}.get(rule, "")
