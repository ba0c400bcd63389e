"""The two tasks the loop trains: classification and detection, from one trunk initialisation.

Public names: :class:`ClassificationTask`, :class:`DetectionTask`, :func:`make_task`.

Each task implements :class:`featscope.training.loop.Task` (model, data, loss) and evaluates itself
(top-1 with a Wilson interval; AP per IoU threshold). Pre-training and fine-tuning use the same
classes: fine-tuning only starts the trunk from a trained backbone (the heads are new) and evaluates
on a test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from featscope.extractors.types import Preprocess
from featscope.training import evaluate as ev
from featscope.training.data import (ClassificationData, DetectionData, Loader, Sample, collate_classification,
                                     collate_detection)
from featscope.training.models import build_classifier, build_detector, load_trunk
from featscope.training.presets import TrainConfig


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

    def evaluate(self, model: nn.Module, samples: Sequence[Sample], device: torch.device) -> dict[str, Any]:
        """AP at IoU 0.1..0.9 (pycocotools) on ``samples``; ``map_50`` is AP at IoU 0.5."""
        data = DetectionData(samples, self.classes, train=False, loader=self.loader)
        gts, preds = ev.predict_boxes(model, data, device)
        res = ev.detection_ap(gts, preds, len(self.classes))
        res["per_class"] = {self.classes[k - 1]: v for k, v in res["per_class"].items()}
        res["map_50"] = res["ap"]["0.5"]
        return res


def make_task(task: str, cfg: TrainConfig, classes: list[str], samples: Sequence[Sample],
              init: dict[str, torch.Tensor], init_source: str, loader: Loader | None = None):
    """The task object for ``task`` (``cls``/``finetune-cls`` or ``det``/``finetune-det``)."""
    cls = ClassificationTask if task.endswith("cls") else DetectionTask
    return cls(cfg, list(classes), list(samples), init, init_source, loader)
