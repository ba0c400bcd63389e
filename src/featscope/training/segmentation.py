"""Semantic segmentation scores: confusion matrix, per-class IoU, mIoU, pixel accuracy, trimap / anti-trimap.

Public names: :data:`VOID`, :func:`confusion_matrix`, :func:`segmentation_scores`, :func:`void_distance`,
:func:`default_band_widths`, :class:`TrimapAccuracy`.

Definitions (the study's Table 4 and Fig. 2, VOC conventions):

- Pixels whose true class is :data:`VOID` (255: VOC's band around object boundaries and unlabelled
  regions) are left out of every score.
- The confusion matrix ``C[t, p]`` counts non-void pixels of true class ``t`` predicted as ``p``.
- IoU of class ``k`` = ``C[k, k] / (sum_p C[k, p] + sum_t C[t, k] - C[k, k])``. A class absent from both
  the truth and the predictions of the whole test set has no IoU (None) and is left out of the mean
  (mIoU), as the VOC evaluation does: averaging in a 0 or a 1 for a class nobody saw says nothing.
- Pixel accuracy = trace(C) / C.sum().
- Trimap of width x: the non-void pixels within x pixels (Euclidean) of a void pixel, i.e. around object
  boundaries; anti-trimap of width x: the non-void pixels farther than x from every void pixel. The
  distance is ``scipy.ndimage.distance_transform_edt`` of the non-void region (a pixel next to a void
  pixel is at distance 1). An image without void pixels has every pixel in the anti-trimap. Accuracy
  in a band = correct pixels / pixels of the band, summed over the test set.

The metrics are written here (not taken from a library) because they are the study's definitions;
torchmetrics' ``JaccardIndex`` averages differently for absent classes and has no trimap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

VOID = 255


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int, *, void: int = VOID) -> np.ndarray:
    """(K, K) int64 counts ``C[true, predicted]`` over the non-void pixels of one mask (or a stack of masks).

    True classes outside 0..K-1 other than ``void`` are an error; so are predictions outside 0..K-1.
    """
    t, p = np.asarray(truth), np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction shapes differ: {t.shape} vs {p.shape}")
    keep = t != void
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"true class indices must be 0..{num_classes - 1} or {void} (void), found {sorted(set(t.tolist()))[:8]}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class indices must be 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(cm: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """``{"miou", "pixel_accuracy", "per_class_iou": {class: IoU or None}, "pixels"}`` of a confusion matrix
    (see the module docstring for the definitions; None where a class is in neither truth nor prediction)."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(classes)} classes")
    total = int(cm.sum())
    if total == 0:
        raise ValueError("no non-void pixels to score; the test masks are empty or all void")
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    present = ~np.isnan(iou)
    return {"miou": float(iou[present].mean()), "pixel_accuracy": float(tp.sum() / total),
            "per_class_iou": {c: (float(v) if ok else None) for c, v, ok in zip(classes, iou, present)},
            "pixels": total}


def void_distance(truth: np.ndarray, *, void: int = VOID) -> np.ndarray:
    """Per pixel: the Euclidean distance to the nearest void pixel (0 on void pixels; inf without any)."""
    from scipy.ndimage import distance_transform_edt

    valid = np.asarray(truth) != void
    if valid.all():
        return np.full(valid.shape, np.inf)
    return distance_transform_edt(valid)


def default_band_widths(image_size: int) -> tuple[int, ...]:
    """Band widths 1, 2, 4, ... up to an eighth of ``image_size`` (at least 1, 2, 4): at VOC's ~500-pixel
    images that is 1..32 pixels (the study's Fig. 2 spans 0..40), at 128 pixels 1..16."""
    top = max(4, image_size // 8)
    return tuple(2 ** k for k in range(top.bit_length()) if 2 ** k <= top)


class TrimapAccuracy:
    """Accumulates trimap and anti-trimap accuracy over images, for fixed band widths in pixels."""

    def __init__(self, widths: Sequence[int], *, void: int = VOID) -> None:
        self.widths = tuple(int(w) for w in widths)
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"band widths must be positive pixel counts, got {list(widths)}")
        self.void = void
        n = len(self.widths)
        self.near = np.zeros((n, 2), dtype=np.int64)  # per width: (correct, pixels) within the band
        self.far = np.zeros((n, 2), dtype=np.int64)  # per width: (correct, pixels) outside it

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        """Add one image's true mask and predicted class map (same shape)."""
        truth, pred = np.asarray(truth), np.asarray(pred)
        if truth.shape != pred.shape:
            raise ValueError(f"truth and prediction shapes differ: {truth.shape} vs {pred.shape}")
        dist = void_distance(truth, void=self.void)
        valid = truth != self.void
        correct = valid & (truth == pred)
        for i, w in enumerate(self.widths):
            band = valid & (dist <= w)
            outside = valid & ~band
            self.near[i] += (int(correct[band].sum()), int(band.sum()))
            self.far[i] += (int(correct[outside].sum()), int(outside.sum()))

    def result(self) -> dict[str, list[dict[str, Any]]]:
        """``{"trimap": [...], "anti_trimap": [...]}``: per width ``{"width", "accuracy" (None if no pixels),
        "pixels"}``."""
        def rows(counts: np.ndarray) -> list[dict[str, Any]]:
            return [{"width": w, "accuracy": (float(c / n) if n else None), "pixels": int(n)}
                    for w, (c, n) in zip(self.widths, counts)]

        return {"trimap": rows(self.near), "anti_trimap": rows(self.far)}
