"""Evaluation of trained networks: classification top-1 with a Wilson interval, detection AP per IoU.

Public names: :data:`IOU_THRESHOLDS`, :func:`top1`, :func:`detection_ap`, :func:`predict_classes`,
:func:`predict_boxes`.

Detection AP is pycocotools' (``COCOeval``: greedy matching by score, 101-point interpolated
precision, all areas, up to 100 detections per image) at each IoU threshold 0.1, 0.2, ..., 0.9, read
per threshold from ``COCOeval.eval["precision"]``. ``summarize()`` is not used: it finds a threshold
with a float equality test against the thresholds it was given, which fails for most custom ones.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from featscope.analysis.probes import wilson_interval

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))


def top1(predicted: Sequence[int], truth: Sequence[int]) -> dict[str, Any]:
    """Top-1 accuracy with its Wilson 95% interval: ``{"top1", "ci_low", "ci_high", "n", "correct"}``."""
    p, t = np.asarray(predicted), np.asarray(truth)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"predicted and truth must be 1-D and the same length, got {p.shape} and {t.shape}")
    n = len(t)
    if n == 0:
        raise ValueError("no test images to evaluate; the test split is empty")
    correct = int((p == t).sum())
    low, high = wilson_interval(correct, n)
    return {"top1": correct / n, "ci_low": low, "ci_high": high, "n": n, "correct": correct}


def detection_ap(ground_truth: Sequence[dict[str, np.ndarray]], predictions: Sequence[dict[str, np.ndarray]],
                 num_classes: int, iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, Any]:
    """COCO-style AP at each IoU threshold over images with ``boxes`` (N, 4 xyxy) and ``labels`` (1..K).

    ``predictions`` also carry ``scores``. Returns ``{"ap": {"0.1": ..., ...}, "per_class": {label: [AP
    per threshold]}, "n_images", "n_boxes"}``; AP is the mean over classes that have ground truth (as
    COCO), -1 for a threshold where no class has any.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions")
    if not ground_truth:
        raise ValueError("no test images to evaluate; the test split is empty")
    thresholds = np.array(sorted(float(t) for t in iou_thresholds))
    if thresholds.size == 0 or thresholds.min() <= 0 or thresholds.max() >= 1:
        raise ValueError(f"IoU thresholds must lie in (0, 1), got {list(iou_thresholds)}")
    gt = {"images": [], "annotations": [], "categories": [{"id": k} for k in range(1, num_classes + 1)]}
    dets: list[dict[str, Any]] = []
    for i, (g, p) in enumerate(zip(ground_truth, predictions), start=1):
        gt["images"].append({"id": i})
        for box, label in zip(np.asarray(g["boxes"]).reshape(-1, 4), np.asarray(g["labels"]).reshape(-1)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": int(label),
                                      "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
        for box, label, score in zip(np.asarray(p["boxes"]).reshape(-1, 4), np.asarray(p["labels"]).reshape(-1),
                                     np.asarray(p["scores"]).reshape(-1)):
            dets.append({"image_id": i, "category_id": int(label), "score": float(score),
                         "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        if not dets:
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.iouThrs = thresholds
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]: thresholds, recall points, classes, areas, max dets
    per_tk = precision[:, :, :, 0, -1]  # all areas, 100 detections
    ap, per_class = {}, {}
    for ti, t in enumerate(thresholds):
        valid = per_tk[ti][per_tk[ti] > -1]
        ap[f"{round(float(t), 6):g}"] = float(valid.mean()) if valid.size else -1.0
    for ki, cat in enumerate(ev.params.catIds):
        col = per_tk[:, :, ki]
        per_class[int(cat)] = [float(col[ti][col[ti] > -1].mean()) if (col[ti] > -1).any() else -1.0
                               for ti in range(len(thresholds))]
    return {"ap": ap, "per_class": per_class, "n_images": len(ground_truth), "n_boxes": len(gt["annotations"])}


@torch.inference_mode()
def predict_classes(model: nn.Module, data: Any, device: torch.device, normalize, *, batch_size: int = 64,
                    num_workers: int = 0) -> tuple[list[int], list[int]]:
    """(predicted, true) class indices of a classification data set (uint8 images normalised by ``normalize``)."""
    from featscope.training.data import collate_classification

    was = model.training
    model.eval()
    predicted, truth = [], []
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collate_classification, num_workers=num_workers)
    for images, labels in loader:
        logits = model(normalize(images.to(device)))
        predicted += logits.argmax(1).cpu().tolist()
        truth += labels.tolist()
    model.train(was)
    return predicted, truth


@torch.inference_mode()
def predict_boxes(model: nn.Module, data: Any, device: torch.device, *, batch_size: int = 8,
                  num_workers: int = 0) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(ground truth, predictions) of a detection data set, as numpy dicts for :func:`detection_ap`."""
    from featscope.training.data import collate_detection

    was = model.training
    model.eval()
    gts, preds = [], []
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collate_detection, num_workers=num_workers)
    for images, targets in loader:
        out = model([im.to(device).float() / 255.0 for im in images])
        for t, o in zip(targets, out):
            gts.append({k: v.numpy() for k, v in t.items()})
            preds.append({k: o[k].float().cpu().numpy() for k in ("boxes", "labels", "scores")})
    model.train(was)
    return gts, preds
