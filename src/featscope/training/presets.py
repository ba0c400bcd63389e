"""Training configurations: one :class:`TrainConfig` of every knob, and named presets per task.

Public names: :data:`TASKS`, :data:`PRESETS`, :class:`TrainConfig`, :func:`list_presets`,
:func:`resolve_config`, :func:`config_fields`.

A preset is a set of values for a task; every value is also a parameter (``overrides``), so a preset
is a starting point, never a cage. ``cpu-demo`` trains both backbones in minutes on a 2-core CPU
(ResNet-18, small images, few RoIs, a small head); ``paper`` is the study's setup for GPUs
(ResNet-101, dilated Conv5, RoIAlign 14x14 -> ConvProj 256 -> FC1 1024 -> FC2 1024, 800-pixel images,
512 RoIs per image; detection fine-tuning for 7 epochs with the learning rate stepped down after 5;
segmentation fine-tuning with torchvision's DeepLabV3 head at output stride 16 on 513-pixel images).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from featscope.training.loop import LoopConfig

TASKS = ("cls", "det", "finetune-cls", "finetune-det", "finetune-seg")
_LOOP_FIELDS = {f.name for f in fields(LoopConfig)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training or fine-tuning run depends on (defaults: the study's detector)."""

    # network
    arch: str = "resnet101"
    norm: str = "frozen"  # "bn": BatchNorm trained with the network; "frozen": FrozenBatchNorm (torchvision's detectors)
    trainable_layers: int = 5  # of conv1, layer1..layer4, counted from layer4
    zero_init_residual: bool = True  # a random start's residual blocks begin as the identity (trainable BN only)
    # images and augmentation
    image_size: int = 800  # classification: training crop and evaluation size; detection: shorter side (min_size)
    max_size: int = 1333  # detection: longest side
    eval_resize: int = 0  # classification evaluation: shorter side before the centre crop (0: image_size)
    crop_scale: float = 0.08  # random-resized crop: smallest area fraction
    flip: bool = True
    # detector
    dilated: bool | None = None  # None: dilated Conv5 where the ResNet allows it (50/101)
    fpn: bool = False
    roi_size: int = 14
    proj_channels: int = 256
    fc_dim: int = 1024
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_size_per_image: int = 256
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rois_per_image: int = 512
    detections_per_image: int = 100
    # splits and evaluation
    test_fraction: float = 0.3  # fine-tuning without a test data set: stratified split of the data set
    eval_every: int = 0  # epochs between evaluations logged to the metrics (0: at the end only)
    # pre-training data (the study's Table 2): classes left out of pre-training altogether, see
    # featscope.workspace.training.plan (images with a label or any box of one are removed, and the class too)
    holdout_classes: tuple[str, ...] = ()
    # segmentation fine-tuning (finetune-seg)
    output_stride: int | None = None  # None: 16 (dilated Conv5) for ResNet-50/101, 32 for ResNet-18/34; 8 also
    trimap_widths: tuple[int, ...] = ()  # band widths in pixels for trimap accuracy (empty: 1, 2, 4.. image_size/8)
    # optimisation and bookkeeping (see LoopConfig)
    epochs: int = 12
    batch_size: int = 16
    lr: float = 0.02
    optimizer: str = "sgd"  # "sgd" (momentum) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    schedule: str = "step"
    lr_steps: tuple[int, ...] = (8, 11)
    lr_gamma: float = 0.1
    grad_clip: float | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    device: str = "auto"
    num_workers: int = 2
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 20
    sync_bn: bool = True
    threads: int | None = None  # CPU threads for the network (None: all); 1 is fastest on a busy shared machine

    def __post_init__(self) -> None:
        from featscope.training.models import check_arch

        check_arch(self.arch)
        if self.norm not in ("bn", "frozen"):
            raise ValueError(f"norm must be 'bn' or 'frozen', got {self.norm!r}")
        if self.image_size < 32 or self.max_size < self.image_size:
            raise ValueError(f"need image_size >= 32 and max_size >= image_size, got {self.image_size}, {self.max_size}")
        if not 0 < self.crop_scale <= 1 or not 0 < self.test_fraction < 1:
            raise ValueError("crop_scale must be in (0, 1] and test_fraction in (0, 1)")
        for name in ("roi_size", "proj_channels", "fc_dim", "rois_per_image", "rpn_batch_size_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32 (or None: the architecture's), got {self.output_stride}")
        if any(w < 1 for w in self.trimap_widths):
            raise ValueError(f"trimap_widths are band widths in pixels >= 1, got {list(self.trimap_widths)}")
        if any(not isinstance(c, str) or not c.strip() for c in self.holdout_classes):
            raise ValueError(f"holdout_classes must be class names, got {list(self.holdout_classes)}")
        object.__setattr__(self, "holdout_classes", tuple(sorted({c.strip() for c in self.holdout_classes})))
        self.loop()  # checks the loop's own fields

    def loop(self) -> LoopConfig:
        """The part the training loop reads."""
        return LoopConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in _LOOP_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# cpu-demo: 128-pixel scenes (tuned on 4,800 pre-training scenes). The classifier trains at 64 pixels (as the
# study's classifiers train at lower resolution than its detectors), 32 images a step, with AdamW and flips only;
# the detector at 128 pixels with 16 RoIs per image, a 7x7 RoIAlign and a 512-wide head, with AdamW; start it
# from the trained classifier (--init), as the study's detectors start from its classifier.
# Why: on the study's shapes (random colours, so shape is the only signal) a ResNet-18 from scratch with SGD sat
# at chance (loss ln 6) for thousands of iterations on a 2-core CPU (SGD lr 0.003-0.05, with or without
# zero-init residuals: held-out top-1 0.10-0.29 after up to 2,000 iterations); AdamW lr 1e-3 with the default
# initialisation leaves the plateau after a few hundred iterations. Measured (benchmarks/study_cpu_demo.py,
# 4,800 scenes, load average ~2): classifier 900 iterations in 282 s, held-out top-1 0.91 (0.70 with
# random-resized crops of scale 0.8-1); detector from that classifier, one epoch (600 iterations) in 290 s,
# held-out mAP@0.5 0.655 (from a weaker classifier: AdamW lr 2e-4 0.53, SGD lr 0.01 0.23).
_CPU_DET = dict(arch="resnet18", norm="bn", zero_init_residual=False, image_size=128, max_size=128, roi_size=7, proj_channels=256, fc_dim=512,
                anchor_sizes=(16, 32, 64, 128), rpn_batch_size_per_image=64, rpn_pre_nms_top_n_train=300,
                rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
                rois_per_image=16, detections_per_image=20, num_workers=1, checkpoint_every=100, log_every=5)
_CPU_CLS = dict(arch="resnet18", norm="bn", image_size=64, crop_scale=1.0, num_workers=1, checkpoint_every=100,
                log_every=5, optimizer="adamw", weight_decay=0.01, zero_init_residual=False)

# finetune-seg (torchvision's DeepLabV3 head on the backbone's trunk): the study's 128-pixel scenes at their own
# size, ResNet-18 (stride-32 features: its BasicBlocks cannot dilate), AdamW with a cosine schedule. Measured on
# 300 target scenes with the CPU shared (load ~3.3, nice 10): 37 iterations (one epoch) in 72 s, 4.1 img/s, so
# the 6 epochs take about 7 minutes per backbone there.
_CPU_SEG = dict(arch="resnet18", norm="bn", image_size=128, epochs=6, batch_size=8, optimizer="adamw", lr=0.0005,
                weight_decay=1e-4, warmup_iters=20, schedule="cosine", lr_steps=(), num_workers=1,
                checkpoint_every=100, log_every=5)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu-demo": {
        "cls": dict(_CPU_CLS, epochs=6, batch_size=32, lr=0.001, warmup_iters=50, schedule="cosine", lr_steps=()),
        "det": dict(_CPU_DET, epochs=1, batch_size=8, optimizer="adamw", lr=0.0002, warmup_iters=100,
                    schedule="cosine", lr_steps=()),
        "finetune-det": dict(_CPU_DET, epochs=7, batch_size=8, lr=0.01, warmup_iters=50, schedule="step",
                             lr_steps=(5,)),
        "finetune-cls": dict(_CPU_CLS, epochs=5, batch_size=16, lr=0.0003, warmup_iters=20, schedule="step",
                             lr_steps=(4,)),
        "finetune-seg": dict(_CPU_SEG),
    },
    "paper": {
        "cls": dict(arch="resnet101", norm="bn", image_size=224, eval_resize=256, crop_scale=0.08, epochs=90,
                    batch_size=256, lr=0.1, warmup_iters=0, lr_steps=(30, 60), checkpoint_every=1000),
        "det": dict(arch="resnet101", norm="frozen", trainable_layers=3, epochs=12, lr_steps=(8, 11)),
        "finetune-det": dict(arch="resnet101", norm="frozen", trainable_layers=3, image_size=600, max_size=1000,
                             epochs=7, lr_steps=(5,), warmup_iters=100),
        "finetune-cls": dict(arch="resnet101", norm="bn", image_size=224, eval_resize=256, crop_scale=0.08,
                             epochs=30, batch_size=64, lr=0.01, warmup_iters=0, lr_steps=(20,)),
        "finetune-seg": dict(arch="resnet101", norm="bn", image_size=513, output_stride=16, epochs=30, batch_size=16,
                             lr=0.01, weight_decay=1e-4, warmup_iters=0, schedule="cosine", lr_steps=()),
    },
}


def list_presets() -> list[str]:
    return list(PRESETS)


def config_fields() -> dict[str, Any]:
    """Field name -> default of :class:`TrainConfig` (what ``overrides`` may name)."""
    return {f.name: f.default for f in fields(TrainConfig)}


def resolve_config(task: str, preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration of ``task`` under ``preset`` with ``overrides`` applied (strings are parsed,
    so CLI ``--set lr=0.01`` works); unknown tasks, presets or fields are errors that list the choices."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset][task])
    known = config_fields()
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ValueError(f"unknown training parameter {key!r}; the parameters are {', '.join(known)}")
        values[key] = _coerce(key, value)
    return TrainConfig(**values)


def _coerce(key: str, value: Any) -> Any:
    """``value`` as the type of field ``key`` (parsing strings: ``"0.1"``, ``"true"``, ``"8,11"``, ``"none"``)."""
    hint = typing.get_type_hints(TrainConfig)[key]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    optional = union and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if union else hint
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    if value is None:
        raise ValueError(f"{key} needs a value")
    try:
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
            return tuple(item(p) for p in parts)
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return base(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} is not a valid {getattr(base, '__name__', base)}") from None
