"""The tasks the loop trains: classification and detection from one trunk initialisation, and segmentation.

Public names: :class:`ClassificationTask`, :class:`DetectionTask`, :class:`SegmentationTask`, :func:`make_task`.

Each task implements :class:`featscope.training.loop.Task` (model, data, loss) and evaluates itself
(top-1 with a Wilson interval; AP per IoU threshold; mIoU and trimap accuracy). Pre-training and
fine-tuning use the same classes: fine-tuning only starts the trunk from a trained backbone (the heads
are new) and evaluates on a test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featscope.extractors.types import Preprocess
from featscope.training import evaluate as ev
from featscope.training.data import (ClassificationData, DetectionData, Loader, MaskReader, Sample, SegmentationData,
                                     collate_classification, collate_detection, collate_segmentation)
from featscope.training.detections import detections_doc, doc_occlusion_analysis
from featscope.training.models import build_classifier, build_detector, build_segmenter, load_trunk, segmenter_stride
from featscope.training.presets import TrainConfig
from featscope.training.segmentation import (VOID, TrimapAccuracy, confusion_matrix, default_band_widths,
                                             segmentation_scores)


@dataclass
class ClassificationTask:
    """ResNet + linear classifier, cross-entropy, random-resized crop and flip."""

    cfg: TrainConfig
    classes: list[str]
    samples: Sequence[Sample]
    init: dict[str, torch.Tensor]
    init_source: str = "a seeded random trunk"
    loader: Loader | None = None
    _data: ClassificationData | None = field(default=None, repr=False)

    @property
    def preprocess(self) -> Preprocess:
        """The evaluation transform; it travels with the registered backbone."""
        size = self.cfg.image_size
        return Preprocess(resize=self.cfg.eval_resize or size, crop=size)

    def build_model(self) -> nn.Module:
        model = build_classifier(self.cfg.arch, len(self.classes), frozen_bn=self.cfg.norm == "frozen")
        load_trunk(model, self.init, self.init_source)
        return model

    def train_data(self) -> ClassificationData:
        if self._data is None:
            self._data = ClassificationData(self.samples, self.classes, size=self.cfg.image_size, train=True,
                                            preprocess=self.preprocess, seed=self.cfg.seed,
                                            scale=(self.cfg.crop_scale, 1.0), flip=self.cfg.flip, loader=self.loader)
        return self._data

    def collate(self, batch: list) -> Any:
        return collate_classification(batch)

    def loss(self, model: nn.Module, batch: Any, device: torch.device,
             memory_format: torch.memory_format) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        x = self.preprocess.normalize(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        return F.cross_entropy(model(x), labels.to(device, non_blocking=True)), {}

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[1])

    def evaluate(self, model: nn.Module, samples: Sequence[Sample], device: torch.device) -> dict[str, Any]:
        """Top-1 on ``samples`` with its Wilson 95% interval."""
        data = ClassificationData(samples, self.classes, size=self.cfg.image_size, train=False,
                                  preprocess=self.preprocess, loader=self.loader)
        predicted, truth = ev.predict_classes(model, data, device, self.preprocess.normalize)
        return ev.top1(predicted, truth)


@dataclass
class DetectionTask:
    """torchvision Faster R-CNN with the study's head; horizontal flip; AP per IoU threshold."""

    cfg: TrainConfig
    classes: list[str]
    samples: Sequence[Sample]
    init: dict[str, torch.Tensor]
    init_source: str = "a seeded random trunk"
    loader: Loader | None = None
    _data: DetectionData | None = field(default=None, repr=False)

    @property
    def preprocess(self) -> Preprocess:
        """How the registered backbone sees an image: the detector's shorter side, whole square images."""
        return Preprocess(resize=self.cfg.image_size, crop=self.cfg.image_size)

    def build_model(self) -> nn.Module:
        c = self.cfg
        model = build_detector(
            c.arch, len(self.classes), dilated=c.dilated, fpn=c.fpn, frozen_bn=c.norm == "frozen",
            trainable_layers=c.trainable_layers, roi_size=c.roi_size, proj_channels=c.proj_channels, fc_dim=c.fc_dim,
            min_size=c.image_size, max_size=c.max_size, anchor_sizes=tuple(c.anchor_sizes),
            aspect_ratios=tuple(c.aspect_ratios), rpn_batch_size_per_image=c.rpn_batch_size_per_image,
            rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=c.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=c.rpn_post_nms_top_n_test,
            box_batch_size_per_image=c.rois_per_image, box_detections_per_img=c.detections_per_image)
        load_trunk(model, self.init, self.init_source)
        return model

    def train_data(self) -> DetectionData:
        if self._data is None:
            self._data = DetectionData(self.samples, self.classes, train=True, seed=self.cfg.seed, flip=self.cfg.flip,
                                       loader=self.loader)
        return self._data

    def collate(self, batch: list) -> Any:
        return collate_detection(batch)

    def loss(self, model: nn.Module, batch: Any, device: torch.device,
             memory_format: torch.memory_format) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, targets = batch
        images = [im.to(device, non_blocking=True).float().div_(255.0) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        return sum(losses.values()), {k: v.detach() for k, v in losses.items()}

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    def predict(self, model: nn.Module, samples: Sequence[Sample], device: torch.device
                ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """(ground truth, predictions) per image of ``samples``; the ground truth carries each box's
        ``occlusion`` (NaN where unknown)."""
        data = DetectionData(samples, self.classes, train=False, loader=self.loader)
        gts, preds = ev.predict_boxes(model, data, device)
        for i, g in enumerate(gts):
            g["occlusion"] = data.occlusion(i)
        return gts, preds

    def detections(self, gts: list[dict[str, np.ndarray]], preds: list[dict[str, np.ndarray]],
                   images: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The detections document of these boxes (:func:`~featscope.training.detections.detections_doc`);
        ``images``: per image ``{"relpath", "width", "height"}`` (placeholders when not given)."""
        if images is None:
            images = [{"relpath": f"#{i}", "width": 0, "height": 0} for i in range(len(gts))]
        return detections_doc(self.classes, images, gts, preds)

    def score(self, gts: list[dict[str, np.ndarray]], preds: list[dict[str, np.ndarray]],
              doc: dict[str, Any] | None = None) -> dict[str, Any]:
        """AP at IoU 0.1..0.9 (pycocotools); ``map_50`` is AP at IoU 0.5; ``missed_by_occlusion`` (objects
        missed at IoU 0.5 and the detector's operating score, per occlusion bin) when the ground truth says how
        occluded objects are. The missed objects are counted from ``doc``, the detections document of these
        boxes (:meth:`detections`; built here when not given), by
        :func:`~featscope.training.detections.doc_occlusion_analysis`: the function a recount from the run's
        ``detections.json`` calls, on the same rounded scores and boxes, so stored and recounted rates agree."""
        res = ev.detection_ap(gts, preds, len(self.classes))
        res["per_class"] = {self.classes[k - 1]: v for k, v in res["per_class"].items()}
        res["map_50"] = res["ap"]["0.5"]
        # without any known occlusion there is nothing to count: skip building a document (periodic evaluations)
        known = any(np.isfinite(np.asarray(g.get("occlusion", []), dtype=np.float64)).any() for g in gts)
        missed = doc_occlusion_analysis(self.detections(gts, preds) if doc is None else doc) if known else None
        if missed is not None:
            res["missed_by_occlusion"] = missed
        return res

    def evaluate(self, model: nn.Module, samples: Sequence[Sample], device: torch.device) -> dict[str, Any]:
        """:meth:`score` of :meth:`predict` on ``samples``."""
        return self.score(*self.predict(model, samples, device))


@dataclass
class SegmentationTask:
    """torchvision's DeepLabV3 head on the ResNet trunk (see :func:`~featscope.training.models.build_segmenter`):
    per-pixel cross-entropy with void (255) ignored, image and mask flipped together; mIoU, pixel
    accuracy and trimap / anti-trimap accuracy (:mod:`featscope.training.segmentation`).

    ``masks(path)``: the (H, W) uint8 class-index mask of a sample's image, indices into ``classes``
    (0 = background), 255 = void.
    """

    cfg: TrainConfig
    classes: list[str]
    samples: Sequence[Sample]
    init: dict[str, torch.Tensor]
    init_source: str = "a seeded random trunk"
    loader: Loader | None = None
    masks: MaskReader | None = None
    _data: SegmentationData | None = field(default=None, repr=False)

    @property
    def preprocess(self) -> Preprocess:
        """The network's input: the image resized to ``image_size`` squared, ImageNet normalisation."""
        return Preprocess(resize=self.cfg.image_size, crop=self.cfg.image_size)

    @property
    def output_stride(self) -> int:
        return segmenter_stride(self.cfg.arch, self.cfg.output_stride)

    def build_model(self) -> nn.Module:
        c = self.cfg
        model = build_segmenter(c.arch, len(self.classes), output_stride=c.output_stride, frozen_bn=c.norm == "frozen",
                                trainable_layers=c.trainable_layers)
        load_trunk(model, self.init, self.init_source)
        return model

    def _reader(self) -> MaskReader:
        if self.masks is None:
            raise ValueError("a segmentation task needs its masks (a reader of each image's class-index mask)")
        return self.masks

    def train_data(self) -> SegmentationData:
        if self._data is None:
            self._data = SegmentationData(self.samples, self._reader(), size=self.cfg.image_size, train=True,
                                          seed=self.cfg.seed, flip=self.cfg.flip, loader=self.loader)
        return self._data

    def collate(self, batch: list) -> Any:
        return collate_segmentation(batch)

    def loss(self, model: nn.Module, batch: Any, device: torch.device,
             memory_format: torch.memory_format) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, masks = batch
        x = self.preprocess.normalize(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
        target = masks.to(device, non_blocking=True)
        logits = model(x)["out"]
        # the mean over non-void pixels, written as sum / count so an all-void batch gives 0, not 0/0
        total = F.cross_entropy(logits.float(), target, ignore_index=VOID, reduction="sum")
        return total / (target != VOID).sum().clamp(min=1), {}

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, samples: Sequence[Sample], device: torch.device) -> dict[str, Any]:
        """mIoU, pixel accuracy, per-class IoU and trimap / anti-trimap accuracy on ``samples``, scored at
        each image's own resolution (logits upsampled bilinearly to it); band widths from
        ``trimap_widths`` or :func:`~featscope.training.segmentation.default_band_widths`."""
        from torch.utils.data import DataLoader

        data = SegmentationData(samples, self._reader(), size=self.cfg.image_size, train=False, loader=self.loader)
        widths = self.cfg.trimap_widths or default_band_widths(self.cfg.image_size)
        k = len(self.classes)
        cm, bands = np.zeros((k, k), dtype=np.int64), TrimapAccuracy(widths)
        was = model.training
        model.eval()
        for images, masks in DataLoader(data, batch_size=8, collate_fn=collate_segmentation):
            logits = model(self.preprocess.normalize(images.to(device)))["out"].float()
            for i, mask in enumerate(masks):
                up = F.interpolate(logits[i:i + 1], size=tuple(mask.shape), mode="bilinear", align_corners=False)
                pred, truth = up.argmax(1)[0].cpu().numpy(), mask.numpy()
                cm += confusion_matrix(truth, pred, k)
                bands.update(truth, pred)
        model.train(was)
        return {**segmentation_scores(cm, self.classes), **bands.result(), "n": len(data),
                "output_stride": self.output_stride, "image_size": self.cfg.image_size}


def make_task(task: str, cfg: TrainConfig, classes: list[str], samples: Sequence[Sample],
              init: dict[str, torch.Tensor], init_source: str, loader: Loader | None = None,
              masks: MaskReader | None = None):
    """The task object for ``task`` (``cls``/``finetune-cls``, ``det``/``finetune-det`` or ``finetune-seg``,
    which needs ``masks``)."""
    if task.endswith("seg"):
        return SegmentationTask(cfg, list(classes), list(samples), init, init_source, loader, masks)
    cls = ClassificationTask if task.endswith("cls") else DetectionTask
    return cls(cfg, list(classes), list(samples), init, init_source, loader)
