"""The numbers the study's qualitative figures are judged by (Figs. 3, 4, 5, 7), as pure functions on arrays.

Public names: :func:`same_class_share`, :func:`knn_purity`, :func:`box_coverage`, :func:`largest_drop`,
:func:`class_ap`.
The study shows these findings as pictures; to say whether their direction holds on other data, each is
reduced here to one number with a plain definition (see :mod:`featscope.analysis.findings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def same_class_share(i: Sequence[int], j: Sequence[int], labels: Sequence[str | None]) -> float:
    """Share of the pairs (``i[r]``, ``j[r]``) (row indices into ``labels``) whose two images have the same label."""
    if len(i) != len(j):
        raise ValueError(f"i and j must have the same length, got {len(i)} and {len(j)}")
    if not len(i):
        raise ValueError("no pairs: need at least one")
    same = [labels[a] is not None and labels[a] == labels[b] for a, b in zip(i, j)]
    return float(np.mean(same))


def knn_purity(coords: np.ndarray, labels: Sequence[str | None], k: int = 10) -> float:
    """Mean share of each point's ``k`` nearest other points (Euclidean, in ``coords``) that carry its label.

    Exact (brute force): meant for 2-D maps of up to a few thousand points."""
    x = np.asarray(coords, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"coords must be (N, d) with N = len(labels) = {len(labels)}, got {x.shape}")
    if not 1 <= k < len(x):
        raise ValueError(f"k must be from 1 to N-1 = {len(x) - 1}, got {k}")
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    lab = np.asarray([str(v) if v is not None else "\0none" for v in labels])
    return float((lab[nn] == lab[:, None]).mean())


def box_coverage(heat: np.ndarray, boxes: Sequence[Sequence[float]], threshold: float = 0.5) -> float:
    """Share of the pixels inside the union of ``boxes`` ([x0, y0, x1, y1], pixel edges) where ``heat`` (H, W, in
    [0, 1]; NaN where the network saw nothing) is at least ``threshold`` times its maximum. NaN pixels are left out."""
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"heat must be (H, W), got {h.shape}")
    inside = np.zeros(h.shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        r0, r1 = max(0, int(np.floor(y0))), min(h.shape[0], int(np.ceil(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(h.shape[1], int(np.ceil(x1)))
        inside[r0:r1, c0:c1] = True
    seen = inside & np.isfinite(h)
    if not seen.any():
        raise ValueError("no box pixel has a finite map value (boxes outside the map or the network's crop)")
    top = np.nanmax(h)
    if not top > 0:
        return 0.0
    return float((h[seen] >= threshold * top).mean())


def largest_drop(min_probability: float, unmasked_probability: float) -> float:
    """``1 - min / unmasked``: how far the worst mask position pulls the class probability down (0: not at all;
    negative values, where every mask raised it, are reported as 0)."""
    if not unmasked_probability > 0:
        raise ValueError(f"the unmasked probability must be > 0, got {unmasked_probability}")
    return float(max(0.0, 1.0 - min_probability / unmasked_probability))


def class_ap(per_class: Mapping[str, Sequence[float]], classes: Sequence[str], thresholds: Sequence[str],
             threshold: str = "0.7") -> float | None:
    """Mean AP at IoU ``threshold`` over ``classes``, from a detection evaluation's ``per_class`` (class -> AP at
    each of ``thresholds``, in that order; -1 where the class has no ground truth, as pycocotools writes it).

    Classes absent from ``per_class`` or without ground truth are left out (as COCO's mean over classes does);
    None when none is left. The study's Table 2 compares this on the held-out classes."""
    keys = [f"{float(t):g}" for t in thresholds]
    want = f"{float(threshold):g}"
    if want not in keys:
        raise ValueError(f"threshold {threshold} is not one of the evaluated IoU thresholds {', '.join(keys)}")
    k = keys.index(want)
    values = []
    for c in classes:
        row = per_class.get(c)
        if row is None:
            continue
        if len(row) != len(keys):
            raise ValueError(f"class {c!r} has {len(row)} AP values for {len(keys)} thresholds")
        if row[k] is not None and row[k] >= 0:
            values.append(float(row[k]))
    return float(np.mean(values)) if values else None
