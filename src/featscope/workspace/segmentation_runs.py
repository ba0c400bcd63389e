"""The data side of a segmentation fine-tuning run (``finetune-seg``): images with masks, classes, splits.

Public names: :class:`MaskReader`, :func:`plan_segmentation`.

Masks come from :func:`featscope.workspace.datasets.segmentation` (a ``MaskSet``: class names with
index 0 = background, one (H, W) uint8 class-index mask per image, 255 = void). Only images that have
a mask take part. A separate test data set may name its mask classes in another order (or use a
subset); its masks are mapped onto the training set's class indices by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featscope.catalog import Dataset
from featscope.training.data import Sample, check_samples
from featscope.training.models import segmenter_stride
from featscope.training.presets import TrainConfig
from featscope.training.segmentation import VOID
from featscope.workspace.context import Context
from featscope.workspace.datasets import readable_images


class MaskReader:
    """Image path -> its (H, W) uint8 mask in the run's class indices (255 = void); picklable for loader
    workers as long as the mask sets are."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[Any, str, np.ndarray | None]] = {}
        self._sources: list[str] = []

    def add(self, root: Path, relpaths: Sequence[str], masks: Any, lut: np.ndarray | None) -> None:
        for rel in relpaths:
            self._where[str(Path(root) / rel)] = (masks, rel, lut)
        self._sources.append(masks.fingerprint(relpaths))

    @property
    def fingerprint(self) -> str:
        """The masks' sources (files, annotations, painting), in the order added: part of the run's key."""
        return "+".join(self._sources)

    def __call__(self, path: Path) -> np.ndarray:
        try:
            masks, rel, lut = self._where[str(path)]
        except KeyError:
            raise ValueError(f"{path} has no segmentation mask in this run's data sets") from None
        mask = np.asarray(masks.load(rel), dtype=np.uint8)
        return mask if lut is None else lut[mask]


def _with_masks(ctx: Context, ds: Dataset) -> tuple[list[Sample], list[str], Any]:
    """(samples, their relpaths, the MaskSet) of the data set's readable images that have a mask."""
    from featscope.workspace.datasets import segmentation

    masks = segmentation(ctx, ds.id)  # refuses a data set without any masks, saying why
    rows = [im for im in readable_images(ctx, ds.id) if masks.has(im.relpath)]
    if not rows:
        raise ValueError(f"none of the images of data set {ds.name!r} has a segmentation mask; segmentation needs "
                         f"VOC SegmentationClass masks or COCO polygons / RLE")
    root = Path(ds.root)
    return [Sample(root / im.relpath, im.label) for im in rows], [im.relpath for im in rows], masks


def _lookup(test_classes: Sequence[str], classes: Sequence[str], test_name: str, name: str) -> np.ndarray | None:
    """A 256-entry table mapping the test masks' class indices onto the training classes (None: the same)."""
    if list(test_classes) == list(classes):
        return None
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise ValueError(f"the masks of test data set {test_name!r} have class(es) {', '.join(map(repr, unknown))} "
                         f"that {name!r} has not ({', '.join(classes)}); test on a data set with the same classes")
    lut = np.full(256, VOID, dtype=np.uint8)
    for i, c in enumerate(test_classes):
        lut[i] = list(classes).index(c)
    return lut


def plan_segmentation(ctx: Context, cfg: TrainConfig, ds: Dataset, test_ds: Dataset | None,
                      classes: Sequence[str] | None) -> tuple[list[Sample], list[Sample], list[str], MaskReader]:
    """(training samples, test samples, classes, mask reader) of a ``finetune-seg`` run, checked.

    The classes are the mask set's (background first); a class subset is refused (the masks give every
    pixel a class). The test set is ``test_ds`` or a deterministic split of ``ds`` (``test_fraction``).
    """
    from featscope.workspace.training import _split

    if classes:
        raise ValueError("a segmentation run learns every class of the data set's masks (background included); "
                         "leave classes out")
    segmenter_stride(cfg.arch, cfg.output_stride)  # an output stride the ResNet cannot give is refused here
    if cfg.batch_size < 2:
        raise ValueError(f"segmentation needs batch_size >= 2 (the DeepLab head's image-pooling BatchNorm needs "
                         f"two images per step), got {cfg.batch_size}")
    samples, relpaths, masks = _with_masks(ctx, ds)
    names = list(masks.classes)
    if len(names) < 2:
        raise ValueError(f"the masks of {ds.name!r} have {len(names)} class(es); segmentation needs background "
                         f"and at least one more")
    reader = MaskReader()
    reader.add(Path(ds.root), relpaths, masks, None)
    train, test = samples, []
    if test_ds is not None:
        test, test_rel, test_masks = _with_masks(ctx, test_ds)
        reader.add(Path(test_ds.root), test_rel, test_masks, _lookup(test_masks.classes, names, test_ds.name, ds.name))
    else:
        train, test = _split(samples, cfg.test_fraction, cfg.seed, ds.name)
    check_samples(train, names, "seg", f"the segmentation training images of {ds.name!r}")
    check_samples(test, names, "seg", f"the segmentation test images of {(test_ds or ds).name!r}")
    if len(train) < cfg.batch_size:
        raise ValueError(f"{len(train)} training images with masks, fewer than one batch of {cfg.batch_size}; "
                         f"lower batch_size or use more images")
    return train, test, names, reader
